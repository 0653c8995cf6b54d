"""Every JSON reader fed truncated, mistyped and non-finite variants of a valid file (issue 24): each either reads
the file or raises our error type (``MrsuperbError``) naming it; never a KeyError, TypeError or a bare ``NaN``
taken as a number.

A reader of a new file kind joins ``READERS`` (name -> a valid document, the file name to write it under, and the
call that reads it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from downstream_probes.analysis.compare import read_source
from downstream_probes.analysis.layer_weights import load_layer_weights_file
from downstream_probes.reports.leaderboard.reading import load_protocol_run, load_run
from downstream_probes.result_files import load_protocol_file, load_results_file, load_sweep_file, new_results
from upstream_mrhubert.errors import MrsuperbError


def _results() -> dict[str, Any]:
    return new_results(
        task="ic",
        upstream="mrhubert_b4a",
        layer_selection={"mode": "weighted_sum"},
        metrics={"dev": {"acc": 0.5}, "test": {"acc": 0.25}},
        test_split="test",
        best_step=2,
        config={"runner": {"total_steps": 2}},
        seed=1,
        expdir="/tmp/run",
    )


def _sweep() -> dict[str, Any]:
    entry = {"name": "T0", "index": 0, "expdir": "/tmp/T0", "best_step": 2, "metrics": {"test": {"acc": 0.5}}}
    return {
        "schema": "mrsuperb.probe_sweep/1",
        "upstream": "mrhubert_b4a",
        "upstream_ckpt": None,
        "task": "ic",
        "test_split": "test",
        "primary_metric": "acc",
        "lower_is_better": False,
        "layers": [entry, {**entry, "name": "T1", "index": 1}],
    }


def _layer_weights() -> dict[str, Any]:
    return {
        "upstream": "mrhubert_b4a",
        "upstream_ckpt": None,
        "task": "ic",
        "checkpoint": "/tmp/dev-best.ckpt",
        "step": 2,
        "layers": [{"name": "T0", "weight": 0.25, "raw": 0.1}, {"name": "T1", "weight": 0.75, "raw": 1.2}],
    }


def _protocol() -> dict[str, Any]:
    run = {"seed": 0, "expdir": "/nonexistent/lr1e-3_seed0", "dev": {"acc": 0.75}, "test": {"acc": 0.5}}
    return {
        "schema": "mrsuperb.superb_protocol/1",
        "upstream": "mrhubert_b4a",
        "upstream_identity": "mrhubert_b4a",
        "task": "ic",
        "test_split": "test",
        "primary_metric": "acc",
        "cells": [{**run, "lr": 0.001, "name": "lr1e-3_seed0", "status": "finished", "best_step": 2}],
        "selection": {"lr": 0.001, "per_seed": [run], "test": {"acc": {"mean": 0.5, "sd": None, "n": 1}}},
        "created": "2026-12-06T07:00:00+00:00",
    }


def _cca(folder: Path) -> Callable[[Path], Any]:
    (folder / "provenance_cca_phone.json").write_text(json.dumps({"upstream": {"name": "mrhubert_b4a"}}))
    return read_source


READERS: dict[str, tuple[Callable[[], Any], str, Callable[[Path], Callable[[Path], Any]]]] = {
    "results": (_results, "results.json", lambda folder: load_results_file),
    "leaderboard": (_results, "results.json", lambda folder: load_run),
    "sweep": (_sweep, "sweep.json", lambda folder: load_sweep_file),
    "sweep (compare)": (_sweep, "sweep.json", lambda folder: read_source),
    "layer weights": (_layer_weights, "layer_weights.json", lambda folder: load_layer_weights_file),
    "layer weights (compare)": (_layer_weights, "layer_weights.json", lambda folder: read_source),
    "analysis output": (lambda: {"T0": 0.1, "T1": 0.4}, "cca_phone.json", _cca),
    "protocol": (_protocol, "protocol.json", lambda folder: load_protocol_file),
    "protocol (leaderboard)": (_protocol, "protocol.json", lambda folder: load_protocol_run),
}

WRONG_VALUES: tuple[Any, ...] = (None, True, 7, -1.5, "x", [], {}, [1, "a"], {"a": None})


def _paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _replaced(document: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


def _variants(document: Any) -> Iterator[tuple[str, str]]:
    """(description, file text): mistyped values at every position, bare non-finite numbers, truncations."""
    for path in _paths(document):
        for value in WRONG_VALUES:
            yield f"{list(path)} = {value!r}", json.dumps(_replaced(document, path, value))
        for constant in ("NaN", "Infinity", "-Infinity"):
            marker = "__NONFINITE__"
            text = json.dumps(_replaced(document, path, marker)).replace(f'"{marker}"', constant)
            yield f"{list(path)} = {constant}", text
    text = json.dumps(document, indent=1)
    for cut in sorted({1, len(text) // 3, len(text) // 2, len(text) - 2}):
        yield f"cut to {cut} characters", text[:cut]
    yield "empty", ""
    yield "not UTF-8", "\udcff"


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_variant_is_read_or_refused_with_our_error(reader: str, tmp_path: Path) -> None:
    make, name, setup = READERS[reader]
    read = setup(tmp_path)
    path = tmp_path / name
    path.write_text(json.dumps(make()))
    read(path)  # the valid document reads
    escaped = []
    for description, text in _variants(make()):
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        outcome = "read"
        try:
            read(path)
        except MrsuperbError as error:
            outcome = "named" if str(path) in str(error) else f"MrsuperbError not naming the file: {error}"
        except Exception as error:
            outcome = f"{type(error).__name__}: {error}"
        if outcome == "read" and any(c in text for c in ("NaN", "Infinity")):
            outcome = "a bare non-finite number was read"
        if outcome not in ("read", "named"):
            escaped.append(f"{description}: {outcome}")
    assert not escaped, "\n".join(escaped[:20])


def test_duplicate_layer_entries_are_refused(tmp_path: Path) -> None:
    """The later of two entries for one layer used to win silently (sweep.json, layer_weights.json)."""
    sweep = _sweep()
    sweep["layers"][1]["name"] = "T0"
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    with pytest.raises(MrsuperbError, match="layer 'T0' is listed twice"):
        load_sweep_file(tmp_path / "sweep.json")
    weights = _layer_weights()
    weights["layers"][1]["name"] = "T0"
    (tmp_path / "layer_weights.json").write_text(json.dumps(weights))
    with pytest.raises(MrsuperbError, match="layer T0 is listed twice"):
        load_layer_weights_file(tmp_path / "layer_weights.json")
