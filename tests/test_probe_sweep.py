"""The sequential ``probe-sweep`` (one ``run_downstream.py`` per layer): its folder lock and recorded settings.

The end-to-end sweep runs in the demo; here, what a rerun into an existing sweep folder is allowed to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from downstream_probes.result_files import new_results, write_results
from downstream_probes.s3prl.sweep import sweep
from upstream_mrhubert.output_folder import FolderLocked, SettingsMismatch, folder_lock


def _sweep(folder: Path, override: str) -> None:
    # an upstream that does not exist: the folder checks come before the upstream is built
    with pytest.raises(ValueError, match="unknown upstream"):
        sweep(upstream="no_such_upstream", task="ic", sweep_dir=folder, override=override, layers=["T0"])


def test_a_rerun_with_another_override_is_refused_once_a_layer_finished(tmp_path: Path) -> None:
    """A sequential sweep killed mid-way and rerun with another lr kept the finished layers at the old lr and mixed
    both in sweep.json (issue 24 item 5)."""
    folder = tmp_path / "sweep"
    _sweep(folder, "config.optimizer.lr=0.001")
    _sweep(folder, "config.optimizer.lr=0.01")  # nothing finished yet: the new settings replace the record
    results = new_results(
        task="ic", upstream="no_such_upstream", layer_selection={"mode": "single_layer", "layer": "T0", "index": 0},
        metrics={"dev": {"acc": 0.5}}, test_split="test", best_step=1, config={}, seed=0, expdir=folder / "T0",
    )  # fmt: skip
    write_results(folder / "T0", results)
    with pytest.raises(SettingsMismatch, match=r"override \('config.optimizer.lr=0.01' -> 'config.optimizer.lr=0.5'\)"):
        sweep(upstream="no_such_upstream", task="ic", sweep_dir=folder, override="config.optimizer.lr=0.5")
    _sweep(folder, "config.optimizer.lr=0.01")  # the same settings go on


def test_a_second_sweep_into_a_held_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "sweep"
    with folder_lock(folder), pytest.raises(FolderLocked, match=rf"in use by another run \(pid {os.getpid()}\)"):
        sweep(upstream="no_such_upstream", task="ic", sweep_dir=folder)
