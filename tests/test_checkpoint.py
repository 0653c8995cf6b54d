"""The checkpoint loader: real fairseq layout, the allow-list, and clear errors for bad files."""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from upstream_mrhubert.checkpoints.io import (
    CheckpointError,
    FairseqDictionary,
    load_checkpoint,
    write_converted_checkpoint,
    write_fairseq_checkpoint,
)

MODEL_CFG = {"_name": "multires_hubert", "encoder_embed_dim": 8}
TASK_CFG = {"_name": "multires_hubert_pretraining", "label_rate_ratios": [1, 2]}


def _write_tiny(path: Path) -> Path:
    return write_fairseq_checkpoint(
        path,
        model_cfg=MODEL_CFG,
        task_cfg=TASK_CFG,
        state_dict={"layer_norm.weight": torch.arange(4.0)},
        dictionaries_symbols=[["10", "11", "12"], ["20", "21"]],
    )


def _pickled_bytes(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


def test_written_file_has_fairseq_layout_and_class_paths(tmp_path: Path) -> None:
    path = _write_tiny(tmp_path / "tiny.pt")
    raw = _pickled_bytes(path)
    assert b"fairseq.data.dictionary\nDictionary" in raw
    assert b"upstream_mrhubert" not in raw  # nothing of ours leaks into the file
    with torch.serialization.safe_globals([(FairseqDictionary, "fairseq.data.dictionary.Dictionary")]):
        state = torch.load(path, weights_only=True)
    assert set(state) >= {"args", "cfg", "model", "criterion", "optimizer_history", "task_state", "extra_state"}
    assert state["args"] is None and state["cfg"]["model"] == MODEL_CFG


def test_fairseq_round_trip(tmp_path: Path) -> None:
    loaded = load_checkpoint(_write_tiny(tmp_path / "tiny.pt"))
    assert loaded.source_format == "fairseq" and loaded.model_name == "multires_hubert"
    assert loaded.task_cfg["label_rate_ratios"] == [1, 2]
    assert torch.equal(loaded.state_dict["layer_norm.weight"], torch.arange(4.0))
    # fairseq dictionaries start with the four special symbols
    assert loaded.dictionaries_symbols == [
        ["<s>", "<pad>", "</s>", "<unk>", "10", "11", "12"],
        ["<s>", "<pad>", "</s>", "<unk>", "20", "21"],
    ]


def test_converted_round_trip(tmp_path: Path) -> None:
    original = load_checkpoint(_write_tiny(tmp_path / "tiny.pt"))
    converted = load_checkpoint(write_converted_checkpoint(tmp_path / "converted.pt", original))
    assert converted.source_format == "s3prl_converted"
    assert converted.model_cfg == original.model_cfg and converted.task_cfg == original.task_cfg
    assert converted.dictionaries_symbols == original.dictionaries_symbols


@pytest.mark.parametrize("namespace_allowed_globally", [False, True])
def test_legacy_args_and_numpy_meters_load(tmp_path: Path, namespace_allowed_globally: bool) -> None:
    """Also when argparse.Namespace is on torch's global allow-list (s3prl_compat puts it there)."""
    path = tmp_path / "legacy.pt"
    torch.save(
        {
            "args": argparse.Namespace(arch="hubert", encoder_layers=2, normalize=False),
            "model": {"w": torch.ones(2)},
            "extra_state": {"loss": np.float64(1.5), "hist": np.arange(3)},
        },
        path,
    )
    before = list(torch.serialization.get_safe_globals())
    if namespace_allowed_globally:
        torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        loaded = load_checkpoint(path)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)
    assert loaded.model_name == "hubert" and loaded.model_cfg["encoder_layers"] == 2
    assert loaded.task_cfg["normalize"] is False


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "was_run"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": {"model": {}, "task": {}}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pt.*system"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_pickle_with_unknown_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"model": {}, "cfg": {"model": {}, "task": {}}, "x": Path("/etc")}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)


@pytest.mark.parametrize("corruption", ["truncated", "garbage", "empty"])
def test_corrupt_file_names_the_file(tmp_path: Path, corruption: str) -> None:
    good = _write_tiny(tmp_path / "good.pt").read_bytes()
    bad = {"truncated": good[: len(good) // 2], "garbage": os.urandom(2048), "empty": b""}[corruption]
    path = tmp_path / f"{corruption}.pt"
    path.write_bytes(bad)
    with pytest.raises(CheckpointError, match=f"{corruption}\\.pt"):
        load_checkpoint(path)


def test_missing_file_and_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    path = tmp_path / "state_dict_only.pt"
    torch.save({"encoder.weight": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="neither a fairseq checkpoint"):
        load_checkpoint(path)


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(pickle.PicklingError):
        write_fairseq_checkpoint(
            tmp_path / "x.pt", model_cfg={"bad": lambda: 0}, task_cfg={}, state_dict={}, dictionaries_symbols=[]
        )
    assert list(tmp_path.iterdir()) == []
