"""Single-layer probe sweep: one s3prl downstream run per upstream layer (``-l NAME``), recorded in one JSON.

For each layer: ``run_downstream.py -m train -l LAYER`` into ``<sweep_dir>/<LAYER>/``, then (unless disabled)
``-m evaluate`` of its best dev checkpoint on the task's test split. After every layer, ``<sweep_dir>/sweep.json``
(schema ``mrsuperb.probe_sweep/1``, written through ``downstream_probes.tasks``) is rewritten atomically with every
finished layer's metrics; a layer whose ``results.json`` already holds the test split is not run again, so an
interrupted sweep resumes where it stopped. ``new_document`` and ``run_entry`` build the document for this sweep and
for the shared one (``shared_sweep``), which trains every layer's probe from one upstream forward per batch.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from downstream_probes import result_files, tasks
from downstream_probes.s3prl import run_downstream
from downstream_probes.s3prl.plugins import build_hub_upstream
from upstream_mrhubert.errors import MrsuperbError, UsageError
from upstream_mrhubert.output_folder import check_settings, file_identity, folder_lock

SETTINGS_REMEDY = "rerun with the settings it was made with, or write this sweep into another folder with -p"

BEST_CHECKPOINT_PATTERNS = ("*-best.ckpt", "best-states-*.ckpt")


class ProbeRunError(MrsuperbError, RuntimeError):
    """A downstream run of the sweep exited with an error."""


def upstream_layer_names(upstream: str, ckpt: str | None = None, model_config: str | None = None) -> list[str]:
    """Build the upstream once through s3prl's hub (entry points registered) and read its ``layer_names``."""
    model = build_hub_upstream(upstream, ckpt, model_config)
    names = getattr(model, "layer_names", None)
    if names is None:
        raise UsageError(f"upstream {upstream!r} does not expose layer_names; a sweep needs named layers")
    return list(names)


def best_checkpoint(expdir: Path) -> Path:
    """The checkpoint s3prl saved for the best dev score, else the newest ``states-*.ckpt``."""
    for pattern in BEST_CHECKPOINT_PATTERNS:
        found = sorted(expdir.glob(pattern))
        if found:
            return found[0]
    states = sorted(expdir.glob("states-*.ckpt"), key=lambda p: int(p.stem.split("-")[-1]))
    if not states:
        raise FileNotFoundError(f"no checkpoint in {expdir}: the training run saved nothing")
    return states[-1]


def new_document(spec: tasks.TaskSpec, upstream: str, upstream_ckpt: str | None) -> dict[str, Any]:
    """The head of a ``sweep.json`` document (``layers`` still empty)."""
    return {
        "upstream": upstream,
        "upstream_ckpt": str(upstream_ckpt) if upstream_ckpt else None,
        "upstream_identity": tasks.upstream_identity(upstream, upstream_ckpt),
        "task": spec.task,
        "test_split": spec.test_split,
        "primary_metric": spec.primary,
        "lower_is_better": spec.lower_is_better,
        "layers": [],
    }


def run_entry(name: str, index: int | None, expdir: Path) -> dict[str, Any]:
    """One probe of the sweep, as its ``results.json`` says it ended."""
    results = result_files.read_results(expdir) or {}
    return {
        "name": name,
        "index": index,
        "expdir": str(expdir.resolve()),
        "best_step": results.get("best_step"),
        "metrics": results.get("metrics", {}),
    }


def _run(argv: list[str]) -> None:
    status = run_downstream.main(argv)
    if status != 0:
        raise ProbeRunError(f"run_downstream.py {' '.join(argv)} exited with status {status}")


def sweep(
    *,
    upstream: str,
    task: str,
    sweep_dir: str | Path,
    upstream_ckpt: str | None = None,
    model_config: str | None = None,
    config: str | None = None,
    override: str | None = None,
    layers: Sequence[str] | None = None,
    evaluate: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Train (and evaluate) one probe per layer; returns the sweep document written to ``sweep.json``.

    The sweep folder is locked while it runs (each layer's run locks its own folder) and records its settings in
    ``settings.json``: a rerun with another checkpoint, config or ``-o`` is refused, naming the fields, instead of
    keeping the finished layers at the old settings and mixing both in ``sweep.json``."""
    spec = tasks.task_for(task)
    if spec is None:
        raise UsageError(f"unknown task {task!r}; choose one of {', '.join(tasks.TASKS)}")
    sweep_dir = Path(sweep_dir)
    settings = {
        "command": "probe-sweep",
        "task": spec.task,
        "upstream": upstream,
        "upstream_ckpt": file_identity(upstream_ckpt),
        "model_config": file_identity(model_config),
        "config": file_identity(config),
        "override": override,
    }
    with folder_lock(sweep_dir, "-p"):
        started = any(
            (folder / result_files.RESULTS_FILE).exists() for folder in sweep_dir.iterdir() if folder.is_dir()
        )
        check_settings(sweep_dir, settings, remedy=SETTINGS_REMEDY, started=started)
        return _sweep_layers(
            spec, sweep_dir, upstream, upstream_ckpt, model_config, config, override, layers, evaluate, device
        )


def _sweep_layers(
    spec: tasks.TaskSpec,
    sweep_dir: Path,
    upstream: str,
    upstream_ckpt: str | None,
    model_config: str | None,
    config: str | None,
    override: str | None,
    layers: Sequence[str] | None,
    evaluate: bool,
    device: str | None,
) -> dict[str, Any]:
    all_layers = upstream_layer_names(upstream, upstream_ckpt, model_config)
    chosen = list(layers) if layers else all_layers
    unknown = [name for name in chosen if name not in all_layers]
    if unknown:
        raise UsageError(f"upstream {upstream!r} has no layer(s) {unknown}; its layers: {all_layers}")

    common = ["-u", upstream, "-d", spec.task]
    if upstream_ckpt:
        common += ["-k", str(upstream_ckpt)]
    if model_config:
        common += ["-g", str(model_config)]
    if config:
        common += ["-c", str(config)]
    device_args = ["--device", device] if device else []
    document = new_document(spec, upstream, upstream_ckpt)
    for name in tqdm(chosen, desc=f"probe sweep {upstream} / {spec.task}", unit="layer"):
        expdir = sweep_dir / name
        previous = result_files.read_results(expdir)
        done = previous is not None and (not evaluate or spec.test_split in previous.get("metrics", {}))
        if not done:
            train_argv = ["-m", "train", *common, "-l", name, "-p", str(expdir)]
            if override:
                train_argv += ["-o", override]
            _run(train_argv + device_args)
            if evaluate:
                eval_argv = ["-m", "evaluate", "-e", str(best_checkpoint(expdir)), "-t", spec.test_split]
                _run(eval_argv + device_args)
        document["layers"].append(run_entry(name, all_layers.index(name), expdir))
        document["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        result_files.write_sweep(sweep_dir, document)
    return document
