"""``recipes/pretrain_toy/run.py --report-only``: the toy experiment's tables and report from what the runs wrote.

The pretraining, downstream and analysis outputs are written by hand here, in the formats their tools write
(``results.json`` of ``mrsuperb pretrain`` and of ``run_downstream.py``, ``{layer: score}`` analysis files), so
that the report's arithmetic (best layers, trained minus random twin) can be checked exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import load_recipe

from downstream_probes.tasks import TASKS
from upstream_mrhubert.output_folder import LOCK_FILE, folder_lock


def _write(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")


def test_report_tables_compare_each_variant_with_its_random_twin(tmp_path: Path) -> None:
    toy = load_recipe("pretrain_toy/run.py")
    out = tmp_path / "toy"
    _write(
        out / "pretrain" / "mono_base" / "results.json",
        {
            "config": {"optim": {"max_steps": 700}},
            "seed": 0,
            "steps_done": 700,
            "history": [{"step": 700, "loss": 7.5}],
            "valid_history": [{"step": 700, "loss": 7.25, "acc_m_0": 0.145}],
            "targets": {"majority_baseline_valid": 0.064},
            "throughput": {"train_wall_seconds": 489.0, "audio_seconds_per_second": 19.4},
        },
    )
    layers = ("T0", "T1", "D0")
    scores = {
        "trained": {"cca_phone": (0.20, 0.45, 0.30), "mi_word": (0.1, 0.2, 0.4)},
        "random": {"cca_phone": (0.25, 0.21, 0.10), "mi_word": (0.1, 0.1, 0.1)},
    }
    for twin, files in scores.items():
        for name, values in files.items():
            _write(out / "analysis" / f"mono_base_{twin}" / f"{name}.json", dict(zip(layers, values, strict=True)))
        accuracy = 0.6 if twin == "trained" else 0.3
        _write(
            out / "downstream" / "200_steps" / f"mono_base_{twin}" / "ks" / "results.json",
            {"test_split": "test", "metrics": {"test": {TASKS["ks"].primary: accuracy}}, "best_step": 200, "seed": 0},
        )

    _write(
        out / "downstream" / "1000_steps" / "mono_base_trained" / "ks" / "results.json",
        {"test_split": "test", "metrics": {"test": {TASKS["ks"].primary: 0.75}}, "best_step": 1000, "seed": 0},
    )

    assert toy.main(["--out", str(out), "--variants", "mono_base", "--tasks", "ks", "--report-only"]) == 0

    report = json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))
    entry = report["variants"]["mono_base"]
    assert entry["valid_acc_m_0"] == pytest.approx(0.145)
    assert entry["downstream"]["200"]["trained"]["ks"]["test"] == pytest.approx(0.6)
    assert entry["analysis"]["random"]["cca_phone"]["T0"] == pytest.approx(0.25)
    analysis = (out / "report" / "analysis.md").read_text(encoding="utf-8")
    # best trained layer T1 (0.45) against the best random layer (T0, 0.25): +0.200; MI word: D0 0.4 vs 0.1
    assert "| mono_base | cca_phone | T1 | 0.450 | 0.210 | 0.250 | +0.200 |" in analysis
    assert "| mono_base | mi_word | D0 | 0.400 | 0.100 | 0.100 | +0.300 |" in analysis
    table2 = (out / "report" / "table2.md").read_text(encoding="utf-8")
    short, long = table2.split("1000 downstream steps")
    assert "| mono_base | trained | 0.600 |" in short and "| mono_base | random | 0.300 |" in short
    assert "| mono_base | trained | 0.750 |" in long and "random" not in long
    assert report["downstream_steps"] == [200, 1000]
    table3 = (out / "report" / "table3.md").read_text(encoding="utf-8")
    assert "| mono_base | toy_mono_base.yaml | 700 | 7.500 | 7.250 | 0.145 | 0.064 | 489 |" in table3
    assert (out / "report" / "analysis_mono_base.png").stat().st_size > 0


def test_a_folder_another_toy_experiment_holds_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two toy experiments (or a report) into one --out used to write side by side."""
    toy = load_recipe("pretrain_toy/run.py")
    out = tmp_path / "toy"
    with folder_lock(out, "--out"):
        assert toy.main(["--out", str(out), "--report-only"]) == 2
    assert f"{out} is in use by another run (pid {os.getpid()})" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]
