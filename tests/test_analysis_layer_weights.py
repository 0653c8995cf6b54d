"""Layer weights from a real run_downstream.py run (tiny MR-HuBERT, IC): the run's own export and the CLI's."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from downstream_probes import cli
from downstream_probes.analysis.layer_weights import (
    LayerWeightsError,
    export_layer_weights,
    load_s3prl_checkpoint,
)


def _tiny_fluent_commands(root: Path) -> Path:
    """Fluent Speech Commands layout (data/*_data.csv + wavs) with a few half-second noise clips."""
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    (root / "wavs").mkdir()
    header = ",path,speakerId,transcription,action,object,location\n"
    for split, count in (("train", 8), ("valid", 4), ("test", 4)):
        rows = []
        for index in range(count):
            relative = f"wavs/{split}_{index}.wav"
            soundfile.write(str(root / relative), (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
            action = ("activate", "deactivate")[index % 2]
            rows.append(f"{index},{relative},spk{index % 2},turn it on,{action},lights,none\n")
        (root / "data" / f"{split}_data.csv").write_text(header + "".join(rows))
    return root


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """One 2-step IC training of the tiny MR-HuBERT through run_downstream.py (s3prl's runner)."""
    from downstream_probes import run_downstream
    from downstream_probes.paths import recipes_dir
    from upstream_mrhubert.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("weights")
    checkpoint = write_tiny_checkpoint(root / "tiny.pt", "base_2res", seed=0)
    data = _tiny_fluent_commands(root / "fsc")
    expdir = root / "exp"
    status = run_downstream.main(
        ["-m", "train", "-u", "mrhubert_local", "-k", str(checkpoint), "-d", "ic",
         "-c", str(recipes_dir() / "quick" / "ic" / "config.yaml"), "-p", str(expdir),
         "-o", f"config.downstream_expert.datarc.file_path={data},,config.runner.total_steps=2,,"
               "config.runner.eval_dataloaders=['dev']", "--device", "cpu"]
    )  # fmt: skip
    assert status == 0
    return expdir, checkpoint


def _layer_names(checkpoint: Path) -> list[str]:
    from upstream_mrhubert.hub import build_upstream

    return build_upstream("mrhubert_local", ckpt=checkpoint).layer_names


def test_run_writes_layer_weights_with_upstream_layer_names(trained_run):
    expdir, upstream_ckpt = trained_run
    record = json.loads((expdir / "layer_weights.json").read_text())
    assert record["upstream"] == "mrhubert_local" and record["task"] == "ic"
    assert record["checkpoint"] == str((expdir / "dev-best.ckpt").resolve())  # the best-on-dev checkpoint
    assert record["step"] == load_s3prl_checkpoint(expdir / "dev-best.ckpt")["Step"] == 2
    names = [layer["name"] for layer in record["layers"]]
    assert names == _layer_names(upstream_ckpt) and names[0] == "T0" and "D0" in names and "U0" in names
    raw = np.array([layer["raw"] for layer in record["layers"]])
    saved = load_s3prl_checkpoint(Path(record["checkpoint"]))["Featurizer"]["weights"].double().numpy()
    np.testing.assert_allclose(raw, saved)
    assert np.any(raw != 0.0)  # trained: the weights moved from their zero initialisation
    weights = np.array([layer["weight"] for layer in record["layers"]])
    np.testing.assert_allclose(weights, np.exp(raw) / np.exp(raw).sum(), rtol=1e-12)


def test_export_weights_command_writes_json_and_csv(trained_run, tmp_path, capsys):
    expdir, _ = trained_run
    assert cli.main(["export-weights", str(expdir), "-o", str(tmp_path)]) == 0
    assert "mrhubert_local / ic at step 2, 15 layers" in capsys.readouterr().out
    record = json.loads((tmp_path / "layer_weights.json").read_text())
    assert record == json.loads((expdir / "layer_weights.json").read_text())
    rows = list(csv.DictReader((tmp_path / "layer_weights.csv").open()))
    assert [row["name"] for row in rows] == [layer["name"] for layer in record["layers"]]
    assert sum(float(row["weight"]) for row in rows) == pytest.approx(1.0)


def test_names_fall_back_to_a_stored_list_then_to_indices(trained_run, tmp_path):
    expdir, _ = trained_run
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


def test_bad_input_gives_one_clear_error(trained_run, tmp_path, capsys):
    expdir, _ = trained_run
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
