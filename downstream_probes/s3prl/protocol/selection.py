"""SUPERB's selection over a learning-rate grid, written as ``protocol.json`` per (upstream, task).

The rule (SUPERB, and the MR-HuBERT paper's Table 2): every cell's dev score is the dev metric of its best
checkpoint (the step s3prl kept as ``dev-best.ckpt``, the one ``results.json`` reports); the learning rate whose
dev score, averaged over the seeds that finished, is best in the task's direction wins, ties going to the smaller
learning rate; the reported number is the test metric of that learning rate's runs (each run's best dev checkpoint
evaluated on the test split), one per seed, with their mean, sample standard deviation and count. A diverged or
failed cell takes no part in the choice; cells not finished yet (failed ones included: a rerun tries them again)
are listed as missing.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Sequence
from typing import Any

from downstream_probes import result_files, tasks
from downstream_probes.s3prl.protocol.grid import (
    DIVERGED,
    FINISHED,
    Cell,
    cell_state,
    dev_split_of,
    format_lr,
    is_finite_number,
)

RULE = (
    "lr with the best mean dev metric of the best checkpoint over finished seeds (ties: smaller lr); "
    "test metric of that lr per seed"
)


def _clean(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Metrics as strict JSON: a value that is not a finite number becomes null."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        out[str(key)] = float(value) if is_finite_number(value) else None
    return out


def cell_entry(cell: Cell) -> dict[str, Any]:
    """One cell of ``protocol.json``: its state and its dev (best step) and test metrics."""
    spec = tasks.TASKS[cell.task]
    status = cell_state(cell)
    results = result_files.read_results(cell.folder) if cell.folder.is_dir() else None
    metrics = (results or {}).get("metrics", {})
    return {
        "lr": cell.lr,
        "seed": cell.seed,
        "name": cell.name,
        "expdir": str(cell.folder.resolve()),
        "status": status,
        "best_step": (results or {}).get("best_step"),
        "dev": _clean(metrics.get(dev_split_of(results, spec), {})) if results else {},
        "test": _clean(metrics.get(spec.test_split, {})) if status in (FINISHED, DIVERGED) else {},
    }


def _summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values) if values else None,
        "sd": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
    }


def select(spec: tasks.TaskSpec, entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The chosen learning rate and its test metrics per seed and summarised; None while no cell has finished."""
    finished = [e for e in entries if e["status"] == FINISHED and e["dev"].get(spec.primary) is not None]
    if not finished:
        return None
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for entry in finished:
        by_lr.setdefault(entry["lr"], []).append(entry)
    dev_mean = {lr: statistics.fmean(e["dev"][spec.primary] for e in group) for lr, group in by_lr.items()}
    sign = 1.0 if spec.lower_is_better else -1.0
    chosen = min(dev_mean, key=lambda lr: (sign * dev_mean[lr], lr))
    runs = sorted(by_lr[chosen], key=lambda e: e["seed"])
    metric_names = sorted({name for e in runs for name, value in e["test"].items() if value is not None})
    return {
        "lr": chosen,
        "lr_name": format_lr(chosen),
        "dev_mean": {format_lr(lr): dev_mean[lr] for lr in sorted(dev_mean)},
        "per_seed": [{"seed": e["seed"], "expdir": e["expdir"], "dev": e["dev"], "test": e["test"]} for e in runs],
        "test": {
            name: _summary([e["test"][name] for e in runs if e["test"].get(name) is not None]) for name in metric_names
        },
    }


def protocol_document(cells: Sequence[Cell]) -> dict[str, Any]:
    """``protocol.json`` of the cells of one (upstream identity, task)."""
    first = cells[0]
    if any((c.identity, c.task) != (first.identity, first.task) for c in cells):
        raise ValueError("protocol_document: cells of several upstreams or tasks")
    spec = tasks.TASKS[first.task]
    entries = [cell_entry(cell) for cell in sorted(cells, key=lambda c: (c.lr, c.seed))]
    return {
        "upstream": first.upstream,
        "upstream_ckpt": str(first.upstream_ckpt) if first.upstream_ckpt else None,
        "upstream_identity": first.identity,
        "task": spec.task,
        "dev_split": spec.dev_split,
        "test_split": spec.test_split,
        "primary_metric": spec.primary,
        "lower_is_better": spec.lower_is_better,
        "rule": RULE,
        "lrs": sorted({c.lr for c in cells}),
        "seeds": sorted({c.seed for c in cells}),
        "cells": entries,
        "selection": select(spec, entries),
        "complete": all(e["status"] == FINISHED for e in entries),
        "missing": [_point(e) for e in entries if e["status"] not in (FINISHED, DIVERGED)],
        "diverged": [_point(e) for e in entries if e["status"] == DIVERGED],
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _point(entry: dict[str, Any]) -> dict[str, Any]:
    return {"lr": entry["lr"], "seed": entry["seed"], "status": entry["status"]}


def write_protocols(cells: Sequence[Cell], root_of: Any) -> list[dict[str, Any]]:
    """Write ``protocol.json`` for every (upstream identity, task) among ``cells`` into ``root_of(cell)``."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.identity, cell.task), []).append(cell)
    documents = []
    for group in groups.values():
        document = protocol_document(group)
        result_files.write_protocol(root_of(group[0]), document)
        documents.append(document)
    return documents


def summary_line(document: dict[str, Any]) -> str:
    """One line of a ``protocol.json``: the chosen learning rate and its test score (mean ± sd over seeds, n),
    with the cells still missing or diverged."""
    where = f"{document['upstream_identity']} / {document['task']}"
    selection = document["selection"]
    if selection is None:
        return f"{where}: no finished run yet"
    summary = selection["test"].get(document["primary_metric"], {})
    sd = f" ± {summary['sd']:.4f}" if summary.get("sd") is not None else ""
    mean = f"{summary['mean']:.4f}" if summary.get("mean") is not None else "—"
    notes = [f"{len(document['missing'])} missing"] if document["missing"] else []
    notes += [f"{len(document['diverged'])} diverged/failed"] if document["diverged"] else []
    noted = f" [{', '.join(notes)}]" if notes else ""
    return (
        f"{where}: lr {selection['lr_name']}, test {document['primary_metric']} {mean}{sd} "
        f"(n={summary.get('n', 0)}){noted}"
    )
