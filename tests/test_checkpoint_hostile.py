"""Hostile checkpoints (issue 14, items 6-8 and the checkpoint errors): a zoo of files written by the tests.

Every file starts from a genuine tiny MR-HuBERT checkpoint (``upstream_mrhubert.testing.tiny``) and changes one
thing. Each must be refused with one :class:`CheckpointError` that names the file and the key or cfg field, before
anything large is allocated; nothing may be written by ``convert`` for a refused input.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import subprocess
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from upstream_mrhubert.checkpoints import io as ckpt_io
from upstream_mrhubert.checkpoints.io import CheckpointError, FairseqDictionary, load_checkpoint
from upstream_mrhubert.testing.tiny import tiny_config, tiny_dictionaries, tiny_state_dict, write_tiny_checkpoint

Q_PROJ = "encoders.0.layers.0.self_attn.q_proj.weight"
K_PROJ = "encoders.0.layers.0.self_attn.k_proj.weight"
FC1 = "encoders.0.layers.0.fc1.weight"


@functools.cache
def _genuine() -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor], list[list[str]]]:
    model_cfg, task_cfg = tiny_config("base_2res")
    dictionaries = tiny_dictionaries(model_cfg)
    return model_cfg, task_cfg, tiny_state_dict(model_cfg, task_cfg, dictionaries), dictionaries


def _genuine_parts() -> tuple[dict[str, Any], dict[str, Any], dict[str, torch.Tensor], list[list[str]]]:
    """A fresh copy of one genuine tiny checkpoint's parts (built once per session: the zoo mutates copies)."""
    model_cfg, task_cfg, weights, dictionaries = _genuine()
    return dict(model_cfg), dict(task_cfg), {k: v.clone() for k, v in weights.items()}, [list(d) for d in dictionaries]


def write_raw(path: Path, *, mutate: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A tiny checkpoint in fairseq's layout, written without any of our checks (tensors kept as they are, views
    and strides included), after ``mutate`` changed the top-level state."""
    model_cfg, task_cfg, weights, dictionaries = _genuine_parts()
    state: dict[str, Any] = {
        "args": None,
        "cfg": {"_name": None, "model": dict(model_cfg), "task": dict(task_cfg)},
        "model": OrderedDict(weights),
        "criterion": None,
        "optimizer_history": [],
        "task_state": {"dictionaries": [FairseqDictionary.from_symbols(s) for s in dictionaries]},
        "extra_state": {"epoch": 1},
    }
    if mutate is not None:
        mutate(state)
    torch.save(state, path, pickle_module=ckpt_io._FAIRSEQ_PICKLE_MODULE)
    return path


def build(path: Path) -> torch.nn.Module:
    """What every user path does with a checkpoint: load it and build the model."""
    from upstream_mrhubert.hub import build_model

    return build_model(load_checkpoint(path))


def _set_model(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda state: state["model"].__setitem__(key, value)


def _set_cfg(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda state: state["cfg"]["model"].__setitem__(field, value)


# --------------------------------------------------------------------------------------------------------------
# item 6: small files that force huge allocations


def test_stride_zero_tensor_is_refused(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "stride0.pt", mutate=_set_model(FC1, torch.zeros(1).expand(64, 32)))
    with pytest.raises(CheckpointError, match=rf"stride0\.pt.*{FC1}.*stride"):
        load_checkpoint(path)


def test_overlapping_storages_are_refused(tmp_path: Path) -> None:
    def overlap(state: dict[str, Any]) -> None:
        base = torch.randn(2048)
        state["model"][Q_PROJ] = base[:1024].view(32, 32)
        state["model"][K_PROJ] = base[512:1536].view(32, 32)

    path = write_raw(tmp_path / "overlap.pt", mutate=overlap)
    with pytest.raises(CheckpointError, match=r"overlap\.pt.*(q_proj.*k_proj|k_proj.*q_proj).*overlap"):
        load_checkpoint(path)


def test_self_overlapping_tensor_is_refused(tmp_path: Path) -> None:
    base = torch.randn(128)  # 95 stored values standing for 64 x 32 = 2048 elements
    path = write_raw(tmp_path / "self.pt", mutate=_set_model(FC1, base.as_strided((64, 32), (1, 1))))
    with pytest.raises(CheckpointError, match=rf"self\.pt.*{FC1}.*overlap"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("encoder_layers", 10**7),
        ("conv_feature_layers", "[(512,10,5)] * 100000000"),
        ("encoder_embed_dim", 10**6),
        ("encoder_ffn_embed_dim", 10**9),
        ("conv_pos", 10**7),
        ("override_encoder_layers", "[1, 10000000, 1]"),
    ],
)
def test_cfg_beyond_sane_bounds_is_refused_before_building(tmp_path: Path, field: str, value: Any) -> None:
    path = write_raw(tmp_path / "huge_cfg.pt", mutate=_set_cfg(field, value))
    with pytest.raises(CheckpointError, match=rf"{field}"):
        build(path)


@pytest.mark.slow  # a fresh interpreter, to measure its peak memory
def test_tensor_shapes_are_checked_against_the_cfg_before_building(tmp_path: Path) -> None:
    # A cfg 1024 times wider than its weights (about 200 MB of feed-forward layers): the shapes are compared with
    # the cfg before any weight is allocated, so the refusal costs no memory. Measured in a fresh interpreter.
    path = write_raw(tmp_path / "wide.pt", mutate=_set_cfg("encoder_ffn_embed_dim", 2**16))
    script = f"""
import resource
from upstream_mrhubert.checkpoints.io import CheckpointError, load_checkpoint
from upstream_mrhubert.hub import build_model
loaded = load_checkpoint({str(path)!r})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    build_model(loaded)
except CheckpointError as error:
    print("ERROR", error)
print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True)
    assert re.search(r"ERROR .*wide\.pt.*fc1\.weight.*\(64, 32\).*\(65536, 32\)", done.stdout), done.stdout
    growth_mb = int(done.stdout.split("GROWTH_KB")[1]) / 1024
    assert growth_mb < 100, f"refusing the checkpoint grew the process by {growth_mb:.0f} MB"


# --------------------------------------------------------------------------------------------------------------
# item 7: the numpy allow-list must not build memory-unsafe arrays


class _HostileDtypeArray:
    """Pickles as an ndarray of raw bytes whose float64 dtype was given an object field at offset 0 (BUILD)."""

    def __reduce__(self) -> tuple:
        core = getattr(np, "_core", None) or np.core
        return (core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), _HOSTILE_DTYPE, False, b"A" * 8))


class _ObjectDtype:
    def __reduce__(self) -> tuple:
        return (np.dtype, ("O8", False, True))


class _HostileDtype:
    def __reduce__(self) -> tuple:
        return (np.dtype, ("f8", False, True), (3, "|", None, ("a",), {"a": (_ObjectDtype(), 0)}, 8, 1, 0))


_HOSTILE_DTYPE: Any = _HostileDtype()


class _StructuredDtype:
    def __reduce__(self) -> tuple:
        return (np.dtype, ([("a", "<f8"), ("b", "<i4")], False, True))


@pytest.mark.parametrize("payload", [_HostileDtypeArray, _StructuredDtype])
def test_numpy_structured_or_object_dtypes_are_refused(tmp_path: Path, payload: type) -> None:
    path = write_raw(tmp_path / "numpy.pt", mutate=lambda state: state["extra_state"].__setitem__("x", payload()))
    with pytest.raises(CheckpointError, match=r"numpy\.pt.*dtype"):
        load_checkpoint(path)


def test_plain_numpy_values_still_load(tmp_path: Path) -> None:
    def meters(state: dict[str, Any]) -> None:
        state["extra_state"]["values"] = [np.float64(1.5), np.arange(3, dtype=np.int64), np.array([True])]

    loaded = load_checkpoint(write_raw(tmp_path / "meters.pt", mutate=meters))
    assert loaded.model_name == "multires_hubert"


# --------------------------------------------------------------------------------------------------------------
# item 8: corrupted bytes, non-finite weights, download hashes


def _flip_tensor_byte(path: Path) -> None:
    """Change one byte of the largest stored tensor inside the zip (its CRC is left as it was)."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with path.open("r+b") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(handle.read(4), dtype="<u2")
        data_start = info.header_offset + 30 + int(name_length) + int(extra_length)
        handle.seek(data_start + 5)
        byte = handle.read(1)
        handle.seek(data_start + 5)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_tensor_bytes_fail_the_crc_check(tmp_path: Path) -> None:
    path = write_tiny_checkpoint(tmp_path / "flipped.pt")
    _flip_tensor_byte(path)
    with pytest.raises(CheckpointError, match=r"flipped\.pt.*(CRC|checksum)"):
        load_checkpoint(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_the_key(tmp_path: Path, value: float) -> None:
    def poison(state: dict[str, Any]) -> None:
        state["model"][FC1] = state["model"][FC1].clone()
        state["model"][FC1][3, 4] = value

    path = write_raw(tmp_path / "nan.pt", mutate=poison)
    with pytest.raises(CheckpointError, match=rf"nan\.pt.*{FC1}.*(NaN|infinite|finite)"):
        load_checkpoint(path)


def test_download_checks_the_published_sha256(tmp_path: Path) -> None:
    import hashlib

    from upstream_mrhubert.checkpoints.download import CheckpointUnavailableError, download_file

    source = write_tiny_checkpoint(tmp_path / "release.pt")
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    target = download_file(source.as_uri(), tmp_path / "cache" / "ok.pt", sha256=good)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(CheckpointUnavailableError, match=r"sha256"):
        download_file(source.as_uri(), tmp_path / "cache" / "bad.pt", sha256="0" * 64)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ok.pt"]  # nothing half-checked left


def test_registry_can_carry_a_sha256_per_release() -> None:
    from upstream_mrhubert.checkpoints.registry import RELEASED_CHECKPOINTS

    for release in RELEASED_CHECKPOINTS:
        assert release.sha256 is None or len(release.sha256) == 64


# --------------------------------------------------------------------------------------------------------------
# clear errors instead of tracebacks


def test_one_mis_shaped_projection_is_named(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "kproj.pt", mutate=_set_model(K_PROJ, torch.randn(32, 16)))  # torch.cat fails
    with pytest.raises(CheckpointError, match=rf"kproj\.pt.*{K_PROJ}.*\(32, 16\).*\(32, 32\)"):
        build(path)


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    [
        ("nontensor", _set_model(FC1, "not a tensor"), rf"{FC1}.*str"),
        ("model_list", lambda s: s.__setitem__("model", [1, 2]), r"'model'.*list"),
        ("model_none", lambda s: s.__setitem__("model", None), r"'model'.*NoneType"),
        ("cfg_list", lambda s: s.__setitem__("cfg", [1, 2]), r"'cfg'.*list"),
        ("symbols", lambda s: setattr(s["task_state"]["dictionaries"][0], "symbols", 5), r"symbols.*int"),
    ],
)
def test_wrong_types_are_clear_errors(
    tmp_path: Path, name: str, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = write_raw(tmp_path / f"{name}.pt", mutate=mutate)
    with pytest.raises(CheckpointError, match=rf"{name}\.pt.*{message}"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("encoder_embed_dim", 0), ("encoder_attention_heads", 0), ("encoder_embed_dim", -32), ("conv_pos_groups", 0)],
)
def test_zero_or_negative_dimensions_are_clear_errors(tmp_path: Path, field: str, value: int) -> None:
    path = write_raw(tmp_path / "dims.pt", mutate=_set_cfg(field, value))
    with pytest.raises(CheckpointError, match=rf"{field}={value}"):
        build(path)


def test_directory_or_fifo_is_not_reported_as_missing(tmp_path: Path) -> None:
    from upstream_mrhubert.hub import resolve_checkpoint

    folder = tmp_path / "folder.pt"
    folder.mkdir()
    fifo = tmp_path / "fifo.pt"
    os.mkfifo(fifo)
    for path, kind in ((folder, "folder"), (fifo, "not a regular file")):
        with pytest.raises(CheckpointError, match=rf"{path.name}.*{kind}") as error:
            load_checkpoint(path)
        assert "does not exist" not in str(error.value)
        with pytest.raises(CheckpointError, match=rf"{path.name}.*{kind}"):
            resolve_checkpoint("mrhubert_local", path)


def test_convert_refuses_invalid_input_and_writes_nothing(tmp_path: Path) -> None:
    from upstream_mrhubert.convert import convert_to_s3prl

    path = write_raw(tmp_path / "kproj.pt", mutate=_set_model(K_PROJ, torch.randn(32, 16)))
    with pytest.raises(CheckpointError, match=r"kproj\.pt"):
        convert_to_s3prl(path, tmp_path / "out.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kproj.pt"]


def test_convert_writes_normal_file_permissions(tmp_path: Path) -> None:
    from upstream_mrhubert.convert import convert_to_s3prl

    source = write_tiny_checkpoint(tmp_path / "tiny.pt")
    previous = os.umask(0o022)
    try:
        written, _ = convert_to_s3prl(source, tmp_path / "converted.pt")
        fairseq_written = write_tiny_checkpoint(tmp_path / "again.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert stat.S_IMODE(fairseq_written.stat().st_mode) == 0o644
    build(written)  # the converted file is still a valid checkpoint


def test_genuine_tiny_checkpoints_still_build(tmp_path: Path) -> None:
    from upstream_mrhubert.testing.tiny import PRESETS

    for preset in PRESETS:
        build(write_tiny_checkpoint(tmp_path / f"{preset}.pt", preset))


@pytest.mark.parametrize(("field", "value"), [("encoder_layers", 10**7), ("encoder_embed_dim", 0)])
def test_hubert_cfg_beyond_sane_bounds_is_refused(tmp_path: Path, field: str, value: int) -> None:
    from upstream_mrhubert.checkpoints.io import write_fairseq_checkpoint
    from upstream_mrhubert.testing.tiny_hubert import write_tiny_hubert_checkpoint

    genuine = load_checkpoint(write_tiny_hubert_checkpoint(tmp_path / "hubert.pt"))
    path = write_fairseq_checkpoint(
        tmp_path / "huge_hubert.pt",
        model_cfg={**genuine.model_cfg, field: value},
        task_cfg=genuine.task_cfg,
        state_dict=genuine.state_dict,
        dictionaries_symbols=genuine.dictionaries_symbols,
    )
    with pytest.raises(CheckpointError, match=rf"{field}={value}"):
        build(path)


def test_hubert_shapes_are_checked_against_the_cfg_before_building(tmp_path: Path) -> None:
    from upstream_mrhubert.checkpoints.io import write_fairseq_checkpoint
    from upstream_mrhubert.testing.tiny_hubert import write_tiny_hubert_checkpoint

    genuine = load_checkpoint(write_tiny_hubert_checkpoint(tmp_path / "hubert.pt"))
    path = write_fairseq_checkpoint(
        tmp_path / "wide_hubert.pt",
        model_cfg={**genuine.model_cfg, "encoder_ffn_embed_dim": 4096},
        task_cfg=genuine.task_cfg,
        state_dict=genuine.state_dict,
        dictionaries_symbols=genuine.dictionaries_symbols,
    )
    with pytest.raises(CheckpointError, match=r"wide_hubert\.pt.*wrong shape.*intermediate_dense.*4096"):
        build(path)


def test_mrsuperb_convert_refuses_a_bad_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from downstream_probes.cli import main as cli_main

    path = write_raw(tmp_path / "nan.pt", mutate=lambda s: s["model"][FC1].fill_(float("nan")))
    assert cli_main(["convert", str(path), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert "nan.pt" in err and FC1 in err and "Traceback" not in err
    assert not (tmp_path / "out.pt").exists()
