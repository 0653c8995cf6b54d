"""``results.json`` of a downstream run (schema ``mrsuperb.results/1``) and the evaluation log it is built from.

s3prl's experts report their metrics only through ``logger.add_scalar(f"{prefix}/{split}-{key}", value)`` inside
``log_records``. The probe runner taps those calls (``ScalarTap``) and appends one line per evaluation to
``<expdir>/evaluations.jsonl`` as it happens, so a run killed mid-way keeps what it had evaluated. ``results.json``
is (re)built from that log at the end of ``train`` and merged with each ``evaluate``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from downstream_probes.atomic_io import write_text_atomic

SCHEMA = "mrsuperb.results/1"
RESULTS_FILE = "results.json"
EVALUATIONS_FILE = "evaluations.jsonl"


@dataclass(frozen=True)
class TaskSpec:
    """How a SUPERB task maps onto s3prl: its expert, test split and which of its scalars are our metrics."""

    task: str
    downstream: str  # s3prl's -d
    test_split: str
    dev_split: str
    metric_keys: dict[str, str]  # s3prl scalar key -> our metric key
    primary: str  # our metric key selecting the best step
    lower_is_better: bool


TASKS: dict[str, TaskSpec] = {
    spec.task: spec
    for spec in (
        TaskSpec("asr", "asr", "test-clean", "dev-clean", {"wer": "wer", "uer": "cer"}, "wer", True),
        TaskSpec(
            "sf",
            "ctc",
            "test",
            "dev",
            {"slot_type_f1": "slot_type_f1", "slot_value_cer": "slot_value_cer", "wer": "wer", "cer": "cer"},
            "slot_type_f1",
            False,
        ),
        TaskSpec("ic", "fluent_commands", "test", "dev", {"acc": "acc"}, "acc", False),
        TaskSpec("ks", "speech_commands", "test", "dev", {"acc": "acc"}, "acc", False),
        TaskSpec(
            "se", "enhancement_stft", "test", "dev", {"pesq": "pesq", "stoi": "stoi", "si_sdr": "si_sdr"}, "pesq", False
        ),
        TaskSpec("sd", "diarization", "test", "dev", {"acc": "frame_acc", "der": "frame_der"}, "frame_acc", False),
    )
}
LOWER_IS_BETTER = frozenset({"wer", "cer", "slot_value_cer", "der", "frame_der"})
_BY_DOWNSTREAM = {spec.downstream: spec for spec in TASKS.values()}


def task_for(downstream: str) -> TaskSpec | None:
    """Our task for an s3prl ``-d`` value or one of our task names (``asr``, ``sf``, ...); None if neither."""
    return TASKS.get(downstream) or _BY_DOWNSTREAM.get(downstream)


def metrics_from_scalars(spec: TaskSpec | None, split: str, scalars: dict[str, float]) -> dict[str, float]:
    """Our metrics out of the scalars one ``log_records(split)`` call logged (tags ``prefix/split-key``)."""
    by_key: dict[str, float] = {}
    for tag, value in scalars.items():
        _, _, rest = tag.rpartition("/")
        if rest.startswith(split + "-"):
            by_key[rest[len(split) + 1 :]] = float(value)
    if spec is None:
        return by_key
    return {ours: by_key[theirs] for theirs, ours in spec.metric_keys.items() if theirs in by_key}


class ScalarTap:
    """Wraps a tensorboard writer: forwards every call and keeps what ``add_scalar`` received."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self.scalars: dict[str, float] = {}

    def add_scalar(self, tag: str, scalar_value, global_step=None, *args, **kwargs):
        with contextlib.suppress(TypeError, ValueError):
            self.scalars[tag] = float(scalar_value)
        return self._writer.add_scalar(tag, scalar_value, global_step, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._writer, name)


# ------------------------------------------------------------------------------------------------------------
# the evaluation log


def append_evaluation(expdir: str | Path, record: dict[str, Any]) -> None:
    """Append one evaluation (split, step, metrics) as a JSON line, flushed to disk."""
    path = Path(expdir) / EVALUATIONS_FILE
    with path.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(record, sort_keys=True) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def read_evaluations(expdir: str | Path) -> list[dict[str, Any]]:
    """Every complete line of the evaluation log (a line cut short by a kill is ignored)."""
    path = Path(expdir) / EVALUATIONS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_evaluations(expdir: str | Path, after_step: int | None) -> None:
    """Drop evaluations a (re)started training run will redo: all of them for a fresh run (``after_step=None``),
    those after the resumed step otherwise."""
    path = Path(expdir) / EVALUATIONS_FILE
    if not path.exists():
        return
    kept = [] if after_step is None else [r for r in read_evaluations(expdir) if int(r.get("step", 0)) <= after_step]
    write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def best_training_step(
    spec: TaskSpec | None, evaluations: list[dict[str, Any]], dev_split: str
) -> tuple[int | None, dict[str, dict[str, float]]]:
    """The step whose ``dev_split`` evaluation is best on the task's primary metric (first one on ties), and the
    metrics of every split evaluated at that step."""
    training = [r for r in evaluations if r.get("phase") == "train"]
    candidates = [r for r in training if r["split"] == dev_split and spec and spec.primary in r["metrics"]]
    if not candidates:
        return None, {}
    sign = 1.0 if spec.lower_is_better else -1.0
    best = min(candidates, key=lambda r: (sign * r["metrics"][spec.primary], r["step"]))
    at_best = {r["split"]: r["metrics"] for r in training if r["step"] == best["step"]}
    return int(best["step"]), at_best


# ------------------------------------------------------------------------------------------------------------
# results.json


def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for package in (
        "mrsuperb",
        "s3prl",
        "torch",
        "torchaudio",
        "numpy",
        "scipy",
        "soundfile",
        "pyannote.metrics",
        "pesq",
        "pystoi",
        "asteroid",
        "editdistance",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_results(expdir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically."""
    path = Path(expdir) / RESULTS_FILE
    write_text_atomic(path, json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_results(expdir: str | Path) -> dict[str, Any] | None:
    path = Path(expdir) / RESULTS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def new_results(
    *,
    task: str,
    upstream: str,
    layer_selection: dict[str, Any],
    metrics: dict[str, dict[str, float]],
    test_split: str,
    best_step: int | None,
    config: dict[str, Any],
    seed: int,
    expdir: str | Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``mrsuperb.results/1`` document."""
    results = {
        "schema": SCHEMA,
        "task": task,
        "upstream": upstream,
        "layer_selection": layer_selection,
        "metrics": metrics,
        "test_split": test_split,
        "best_step": best_step,
        "config": config,
        "seed": seed,
        "versions": package_versions(),
        "expdir": str(Path(expdir).resolve()),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    results.update(extra or {})
    return results
