"""Layer weights from a real run_downstream.py run (tiny MR-HuBERT, IC): the run's own export and the CLI's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from downstream_probes import cli
from downstream_probes.analysis.layer_weights import (
    LayerWeightsError,
    export_layer_weights,
    load_s3prl_checkpoint,
)
from downstream_probes.tasks import upstream_identity


def _layer_names(checkpoint: Path) -> list[str]:
    from upstream_mrhubert.hub import build_upstream

    return build_upstream("mrhubert_local", ckpt=checkpoint).layer_names


def test_run_writes_layer_weights_with_upstream_layer_names(tiny_ic_run):
    expdir = tiny_ic_run.expdir
    record = json.loads((expdir / "layer_weights.json").read_text())
    assert record["upstream"] == "mrhubert_local" and record["task"] == "ic"
    # the run's -k: with the upstream name it tells this model from other mrhubert_local checkpoints
    assert record["upstream_ckpt"] == str(Path(tiny_ic_run.upstream_checkpoint).resolve())
    model = upstream_identity(record["upstream"], record["upstream_ckpt"])
    assert model == f"mrhubert_local:{Path(tiny_ic_run.upstream_checkpoint).stem}"
    assert record["checkpoint"] == str((expdir / "dev-best.ckpt").resolve())  # the best-on-dev checkpoint
    assert record["step"] == load_s3prl_checkpoint(expdir / "dev-best.ckpt")["Step"] == tiny_ic_run.steps
    names = [layer["name"] for layer in record["layers"]]
    assert names == _layer_names(tiny_ic_run.upstream_checkpoint)
    assert names[0] == "T0" and "D0" in names and "U0" in names
    raw = np.array([layer["raw"] for layer in record["layers"]])
    saved = load_s3prl_checkpoint(Path(record["checkpoint"]))["Featurizer"]["weights"].double().numpy()
    np.testing.assert_allclose(raw, saved)
    assert np.any(raw != 0.0)  # trained: the weights moved from their zero initialisation
    weights = np.array([layer["weight"] for layer in record["layers"]])
    np.testing.assert_allclose(weights, np.exp(raw) / np.exp(raw).sum(), rtol=1e-12)


def test_export_weights_command_writes_json_and_csv(tiny_ic_run, tmp_path, capsys):
    expdir = tiny_ic_run.expdir
    assert cli.main(["export-weights", str(expdir), "--out", str(tmp_path)]) == 0
    model = f"mrhubert_local:{Path(tiny_ic_run.upstream_checkpoint).stem}"
    assert f"{model} / ic at step {tiny_ic_run.steps}, 15 layers" in capsys.readouterr().out
    record = json.loads((tmp_path / "layer_weights.json").read_text())
    assert record == json.loads((expdir / "layer_weights.json").read_text())
    rows = list(csv.DictReader((tmp_path / "layer_weights.csv").open()))
    assert [row["name"] for row in rows] == [layer["name"] for layer in record["layers"]]
    assert sum(float(row["weight"]) for row in rows) == pytest.approx(1.0)


def test_names_fall_back_to_a_stored_list_then_to_indices(tiny_ic_run, tmp_path):
    expdir = tiny_ic_run.expdir
    checkpoint = load_s3prl_checkpoint(next(expdir.glob("*.ckpt")))
    count = len(checkpoint["Featurizer"]["weights"])
    checkpoint["Args"].upstream = "no_such_upstream"
    checkpoint["layer_names"] = [f"L{i}" for i in range(count)]
    torch.save(checkpoint, tmp_path / "stored.ckpt")
    record = json.loads(export_layer_weights(tmp_path / "stored.ckpt", out_dir=tmp_path / "a").read_text())
    assert [layer["name"] for layer in record["layers"]] == [f"L{i}" for i in range(count)]
    del checkpoint["layer_names"]
    torch.save(checkpoint, tmp_path / "bare.ckpt")
    record = json.loads(export_layer_weights(tmp_path / "bare.ckpt", out_dir=tmp_path / "b").read_text())
    assert [layer["name"] for layer in record["layers"]] == [str(i) for i in range(count)]


def test_bad_input_gives_one_clear_error(tiny_ic_run, tmp_path, capsys):
    expdir = tiny_ic_run.expdir
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no s3prl checkpoint"):
        export_layer_weights(tmp_path / "empty")
    checkpoint = load_s3prl_checkpoint(next(expdir.glob("*.ckpt")))
    del checkpoint["Featurizer"]
    torch.save(checkpoint, tmp_path / "single.ckpt")
    assert cli.main(["export-weights", str(tmp_path / "single.ckpt")]) == 2
    assert "has no Featurizer weights: the run used a single layer (-l)" in capsys.readouterr().err
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(LayerWeightsError, match="not a readable s3prl checkpoint"):
        export_layer_weights(tmp_path / "junk.ckpt")
    assert cli.main(["export-weights", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_weights_for_another_upstream_are_refused(tiny_ic_run, tmp_path):
    """5 Featurizer weights of a checkpoint for a 15-layer upstream used to be named 0..4 (issue 24 item 9)."""
    checkpoint = load_s3prl_checkpoint(next(tiny_ic_run.expdir.glob("*.ckpt")))
    checkpoint["Featurizer"]["weights"] = checkpoint["Featurizer"]["weights"][:5].clone()
    torch.save(checkpoint, tmp_path / "five.ckpt")
    with pytest.raises(LayerWeightsError, match="holds 5 Featurizer weights, but upstream mrhubert_local has 15"):
        export_layer_weights(tmp_path / "five.ckpt", out_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "layer_weights.json").exists()
    checkpoint = load_s3prl_checkpoint(next(tiny_ic_run.expdir.glob("*.ckpt")))
    checkpoint["Featurizer"]["weights"][3] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.ckpt")
    with pytest.raises(LayerWeightsError, match="NaN or infinite"):
        export_layer_weights(tmp_path / "nan.ckpt", out_dir=tmp_path / "nan")
