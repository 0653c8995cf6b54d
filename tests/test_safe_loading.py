"""Every state file is read through the allow-listed unpickler: a crafted file runs no code (issue 24 item 1)."""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from downstream_probes.s3prl import shared_sweep
from upstream_mrhubert.checkpoints.io import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("upstream_mrhubert", "downstream_probes", "recipes")


class _Payload:
    """Unpickling this calls os.system: the attack a planted state file would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_no_unrestricted_torch_load_in_the_packages() -> None:
    pattern = re.compile(r"weights_only\s*=\s*False")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_crafted_shared_sweep_state_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    state_dir = tmp_path / shared_sweep.STATE_DIR
    state_dir.mkdir()
    buffer = io.BytesIO()
    torch.save({"format": shared_sweep.STATE_FORMAT, "evil": _Payload(marker)}, buffer, pickle_module=pickle)
    planted = state_dir / "pass-0.rank-0.step-8.pt"
    planted.write_bytes(buffer.getvalue())
    sweep = SimpleNamespace(sweep_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"refused to load .*pass-0\.rank-0\.step-8\.pt.*Nothing from the file"):
        shared_sweep.SharedSweep.latest_state(sweep, 0)
    assert not marker.exists()


def test_truncated_shared_sweep_state_is_named(tmp_path: Path) -> None:
    state_dir = tmp_path / shared_sweep.STATE_DIR
    state_dir.mkdir()
    buffer = io.BytesIO()
    torch.save({"format": shared_sweep.STATE_FORMAT, "step": 8}, buffer)
    (state_dir / "pass-0.rank-0.step-8.pt").write_bytes(buffer.getvalue()[:100])
    with pytest.raises(CheckpointError, match=r"step-8\.pt is truncated.*delete .*rerun without -a"):
        shared_sweep.SharedSweep.latest_state(SimpleNamespace(sweep_dir=tmp_path), 0)


def test_crafted_downstream_checkpoint_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A planted states-*.ckpt was refused by torch's weights_only, but as a raw UnpicklingError traceback."""
    from downstream_probes.s3prl import run_downstream

    marker = tmp_path / "pwned"
    planted = tmp_path / "exp" / "states-2.ckpt"
    planted.parent.mkdir()
    buffer = io.BytesIO()
    torch.save({"Args": _Payload(marker)}, buffer, pickle_module=pickle)
    planted.write_bytes(buffer.getvalue())
    assert run_downstream.main(["-m", "evaluate", "-e", str(planted), "-t", "test", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"refused to load {planted}" in err and "Traceback" not in err
    assert not marker.exists()
