"""What a downstream run writes, and the readers that check it: the one home of the result schemas.

* ``results.json`` (schema ``mrsuperb.results/1``) of a downstream run: written by ``write_results``, read and checked
  by ``load_results_file`` (``ResultsDocument`` lists its fields).
* ``sweep.json`` (schema ``mrsuperb.probe_sweep/1``) of a probe sweep: ``write_sweep`` / ``load_sweep_file``.
* ``protocol.json`` (schema ``mrsuperb.superb_protocol/1``) of one (upstream, task) of a SUPERB learning-rate grid
  (``mrsuperb superb``): ``write_protocol`` / ``load_protocol_file`` (``ProtocolDocument`` lists its fields).
* ``evaluations.jsonl``: the probe runner appends one line per evaluation as it happens, so a run killed mid-way
  keeps what it had evaluated; ``results.json`` is (re)built from it at the end of ``train`` and merged with each
  ``evaluate``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, TypedDict

from downstream_probes.tasks import TASK_NAMES, TASKS, TaskSpec
from upstream_mrhubert import provenance
from upstream_mrhubert.atomic_io import (
    finite_or_null,
    read_strict_json,
    write_json_atomic,
    write_text_atomic,
)
from upstream_mrhubert.errors import MrsuperbError

RESULTS_SCHEMA = "mrsuperb.results/1"
RESULTS_FILE = "results.json"
EVALUATIONS_FILE = "evaluations.jsonl"
SWEEP_SCHEMA = "mrsuperb.probe_sweep/1"
SWEEP_FILE = "sweep.json"
RESULT_PACKAGES = (
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
)
LAYER_WEIGHTS_FILE = "layer_weights.json"
PROTOCOL_SCHEMA = "mrsuperb.superb_protocol/1"
PROTOCOL_FILE = "protocol.json"


class ResultsError(MrsuperbError, ValueError):
    """A results/sweep file that does not follow its schema; the message names the file and says what to do."""


# ------------------------------------------------------------------------------------------------------------
# the evaluation log


def append_evaluation(expdir: str | Path, record: dict[str, Any]) -> None:
    """Append one evaluation (split, step, metrics) as a JSON line, flushed to disk."""
    path = Path(expdir) / EVALUATIONS_FILE
    with path.open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(finite_or_null(record), sort_keys=True, allow_nan=False) + "\n")
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
    if spec is None:
        return None, {}
    candidates = [r for r in training if r["split"] == dev_split and spec.primary in r["metrics"]]
    if not candidates:
        return None, {}
    sign = 1.0 if spec.lower_is_better else -1.0
    best = min(candidates, key=lambda r: (sign * r["metrics"][spec.primary], r["step"]))
    at_best = {r["split"]: r["metrics"] for r in training if r["step"] == best["step"]}
    return int(best["step"]), at_best


# ------------------------------------------------------------------------------------------------------------
# results.json


def package_versions() -> dict[str, str]:
    """Versions of the packages a downstream result depends on."""
    return provenance.package_versions(RESULT_PACKAGES)


def write_results(expdir: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically."""
    return write_json_atomic(Path(expdir) / RESULTS_FILE, results, default=str)


def read_results(expdir: str | Path) -> dict[str, Any] | None:
    """The ``results.json`` of an experiment folder, checked against the schema; None if the run wrote none yet."""
    path = Path(expdir) / RESULTS_FILE
    if not path.is_file():
        return None
    return dict(load_results_file(path))


class ResultsDocument(TypedDict, total=False):
    """The fields of ``results.json`` (schema ``mrsuperb.results/1``); the first seven are required."""

    schema: str
    task: str
    upstream: str
    layer_selection: dict[str, Any]  # {"mode": "weighted_sum"} or {"mode": "single_layer", "layer": NAME, "index": I}
    metrics: dict[str, dict[str, float]]  # split -> metric -> value, as s3prl's expert computes it
    test_split: str
    created: str  # ISO-8601
    upstream_ckpt: str | None
    best_step: int | None
    config: dict[str, Any]
    seed: int
    versions: dict[str, str]
    expdir: str
    sweep: dict[str, Any]  # present when a shared probe sweep wrote the run


REQUIRED_RESULTS_FIELDS = ("task", "upstream", "layer_selection", "metrics", "test_split", "created")


def _read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return read_strict_json(path, ResultsError, f"delete it or re-run that {what}")


def _check_metrics(metrics: Any, path: str | os.PathLike[str], where: str = "metrics") -> None:
    """``{split: {metric: number or null}}`` (null: a value that was not finite, see the run's status)."""
    if not isinstance(metrics, dict):
        raise ResultsError(f"{path}: '{where}' is a {type(metrics).__name__}; it must map split -> {{metric: value}}")
    for split, values in metrics.items():
        if not isinstance(values, dict):
            raise ResultsError(f"{path}: {where}[{split!r}] is {values!r}, not a mapping of metric names to numbers")
        for name, value in values.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ResultsError(f"{path}: {where}[{split!r}][{name!r}] is {value!r}, not a number")


def validate_results(data: Any, path: str | os.PathLike[str]) -> ResultsDocument:
    """Check a parsed ``results.json`` against the schema; raises ``ResultsError`` naming ``path``."""
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ResultsError(f"{path} is not a results file of schema {RESULTS_SCHEMA} (found {found!r})")
    missing = [key for key in REQUIRED_RESULTS_FIELDS if key not in data]
    if missing:
        raise ResultsError(f"{path} lacks {', '.join(missing)}; it was not written by run_downstream.py")
    for key in ("task", "upstream", "test_split", "created"):
        if not isinstance(data[key], str):
            raise ResultsError(f"{path}: '{key}' is {data[key]!r}, not a string")
    if data["task"] not in TASKS:
        raise ResultsError(f"{path}: unknown task {data['task']!r} (expected one of {', '.join(TASK_NAMES)})")
    _check_metrics(data["metrics"], path)
    if not isinstance(data["layer_selection"], dict):
        raise ResultsError(f"{path}: 'layer_selection' is {data['layer_selection']!r}, not a mapping")
    return data  # type: ignore[return-value]


def load_results_file(path: str | os.PathLike[str]) -> ResultsDocument:
    """Read and check one ``results.json``."""
    path = Path(path)
    return validate_results(_read_json(path, "experiment"), path)


# ------------------------------------------------------------------------------------------------------------
# sweep.json


def write_sweep(sweep_dir: str | Path, document: dict[str, Any]) -> Path:
    """Write ``sweep.json`` (schema ``mrsuperb.probe_sweep/1``) atomically."""
    document = {"schema": SWEEP_SCHEMA, **document}
    return write_json_atomic(Path(sweep_dir) / SWEEP_FILE, document)


def load_sweep_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check one ``sweep.json``: schema, task, primary metric and a list of layers."""
    path = Path(path)
    data = _read_json(path, "sweep")
    if not isinstance(data, dict) or data.get("schema") != SWEEP_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ResultsError(f"{path} has schema {found!r}, expected {SWEEP_SCHEMA!r}")
    missing = [key for key in ("upstream", "task", "primary_metric", "layers") if key not in data]
    if missing or not isinstance(data.get("layers"), list):
        raise ResultsError(f"{path} lacks {', '.join(missing) or 'a list of layers'}; re-run the sweep")
    for key in ("upstream", "task", "primary_metric"):
        if not isinstance(data[key], str):
            raise ResultsError(f"{path}: '{key}' is {data[key]!r}, not a string")
    entries = [*data["layers"], *([data["weighted_sum"]] if "weighted_sum" in data else [])]
    seen: set[str] = set()
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ResultsError(
                f"{path}: layer entry {number} is {entry!r}, not a mapping with a 'name'; re-run the sweep"
            )
        if entry["name"] in seen:
            raise ResultsError(f"{path}: layer {entry['name']!r} is listed twice; re-run the sweep into a new folder")
        seen.add(entry["name"])
        _check_metrics(entry.get("metrics", {}), path, f"{entry['name']}.metrics")
    return data


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
        "schema": RESULTS_SCHEMA,
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


# ------------------------------------------------------------------------------------------------------------
# protocol.json


class ProtocolDocument(TypedDict, total=False):
    """The fields of ``protocol.json`` (schema ``mrsuperb.superb_protocol/1``), one per (upstream, task) of a grid.

    Strict JSON: a metric that is not finite is ``null``. ``selection`` is None while no cell has finished.
    """

    schema: str
    upstream: str
    upstream_ckpt: str | None
    upstream_identity: str
    task: str
    dev_split: str
    test_split: str
    primary_metric: str
    lower_is_better: bool
    rule: str  # how the learning rate was chosen, in words
    lrs: list[float]
    seeds: list[int]
    cells: list[dict[str, Any]]  # lr, seed, expdir, status, best_step, dev {metric: value}, test {metric: value}
    # lr (the chosen one), dev_mean {lr: mean dev metric}, per_seed [{seed, expdir, test}], test {metric: {mean,
    # sd, n}}
    selection: dict[str, Any] | None
    complete: bool  # every cell finished
    missing: list[dict[str, Any]]  # cells not finished (pending, interrupted, failed): {lr, seed, status}
    diverged: list[dict[str, Any]]  # cells that diverged: {lr, seed, status}
    created: str


REQUIRED_PROTOCOL_FIELDS = ("upstream", "upstream_identity", "task", "test_split", "primary_metric", "cells")


def write_protocol(folder: str | Path, document: dict[str, Any]) -> Path:
    """Write ``protocol.json`` atomically as strict JSON (``allow_nan=False``: a NaN raises instead of being written)."""
    document = {"schema": PROTOCOL_SCHEMA, **document}
    return write_text_atomic(Path(folder) / PROTOCOL_FILE, json.dumps(document, indent=2, allow_nan=False) + "\n")


def load_protocol_file(path: str | os.PathLike[str]) -> ProtocolDocument:
    """Read and check one ``protocol.json``: schema, required fields, a known task, a list of cells."""
    path = Path(path)
    data = _read_json(path, "grid (mrsuperb superb)")
    if not isinstance(data, dict) or data.get("schema") != PROTOCOL_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ResultsError(f"{path} has schema {found!r}, expected {PROTOCOL_SCHEMA!r}")
    missing = [key for key in REQUIRED_PROTOCOL_FIELDS if key not in data]
    if missing or not isinstance(data.get("cells"), list):
        raise ResultsError(f"{path} lacks {', '.join(missing) or 'a list of cells'}; rerun mrsuperb superb")
    for key in ("upstream", "upstream_identity", "task", "test_split", "primary_metric"):
        if not isinstance(data[key], str):
            raise ResultsError(f"{path}: '{key}' is {data[key]!r}, not a string")
    if data["task"] not in TASKS:
        raise ResultsError(f"{path}: unknown task {data['task']!r} (expected one of {', '.join(TASK_NAMES)})")
    if "created" in data and not isinstance(data["created"], str):
        raise ResultsError(f"{path}: 'created' is {data['created']!r}, not a string")
    for index, cell in enumerate(data["cells"]):
        _check_cell(cell, path, f"cells[{index}]")
    selection = data.get("selection")
    if selection is not None:
        _check_selection(selection, path)
    return data  # type: ignore[return-value]


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _check_cell(cell: Any, path: Path, where: str) -> None:
    """One grid cell (or a selection's per-seed run): lr/seed numbers, strings, metrics ``{metric: number|null}``."""
    if not isinstance(cell, dict):
        raise ResultsError(f"{path}: {where} is {cell!r}, not a grid cell")
    for key in ("lr", "seed"):
        if key in cell and not _is_number(cell[key]):
            raise ResultsError(f"{path}: {where}.{key} is {cell[key]!r}, not a number")
    for key in ("expdir", "status", "name"):
        if key in cell and not isinstance(cell[key], str):
            raise ResultsError(f"{path}: {where}.{key} is {cell[key]!r}, not a string")
    _check_metrics({split: cell[split] for split in ("dev", "test") if split in cell}, path, where)


def _check_selection(selection: Any, path: Path) -> None:
    """The dev-selected lr: ``lr``, ``per_seed`` runs and ``test`` ``{metric: {mean, sd, n}}``."""
    if not isinstance(selection, dict) or not _is_number(selection.get("lr")):
        raise ResultsError(f"{path}: 'selection' is {selection!r}, not a selected learning rate; rerun mrsuperb superb")
    per_seed = selection.get("per_seed", [])
    if not isinstance(per_seed, list):
        raise ResultsError(f"{path}: selection.per_seed is {per_seed!r}, not a list")
    for index, run in enumerate(per_seed):
        _check_cell(run, path, f"selection.per_seed[{index}]")
    test = selection.get("test", {})
    if not isinstance(test, dict):
        raise ResultsError(f"{path}: selection.test is {test!r}, not a mapping of metrics")
    for metric, summary in test.items():
        if not isinstance(summary, dict) or any(
            summary.get(key) is not None and not _is_number(summary[key]) for key in ("mean", "sd", "n")
        ):
            raise ResultsError(f"{path}: selection.test[{metric!r}] is {summary!r}, not {{mean, sd, n}} numbers")
