"""recipes/paper_2410.23955/reproduce.py: the plan it runs, what it skips on a second run, the inputs it checks,
and s3prl's len_for_bucket index it writes. (The full pipeline was run with ``--config-dir recipes/quick`` on the
synthetic corpora; here nothing is trained.)"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "paper_2410.23955" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("paper_reproduce", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fake_librispeech(root: Path) -> Path:
    """Two utterances per split, real FLAC files with transcripts, in LibriSpeech's tree."""
    for n, split in enumerate(("train-clean-100", "dev-clean", "test-clean")):
        chapter = root / split / f"{n + 1}" / "10"
        chapter.mkdir(parents=True)
        lines = []
        for i, length in enumerate((16000, 24000)):
            utterance = f"{n + 1}-10-{i:04d}"
            soundfile.write(chapter / f"{utterance}.flac", np.zeros(length + n, dtype=np.float32), 16000)
            lines.append(f"{utterance} HELLO WORLD {i}")
        (chapter / f"{n + 1}-10.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_len_for_bucket_matches_s3prl_layout(reproduce, tmp_path: Path) -> None:
    libri = fake_librispeech(tmp_path / "LibriSpeech")
    reproduce.write_len_for_bucket(libri, tmp_path / "len_for_bucket")
    rows = list(csv.DictReader((tmp_path / "len_for_bucket" / "dev-clean.csv").open()))
    assert [r["file_path"] for r in rows] == ["dev-clean/2/10/2-10-0000.flac", "dev-clean/2/10/2-10-0001.flac"]
    assert [int(r["length"]) for r in rows] == [16001, 24001]
    assert rows[1]["label"] == "HELLO WORLD 1" and all((libri / r["file_path"]).is_file() for r in rows)


def test_dry_run_plan_and_resume(reproduce, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    libri = fake_librispeech(tmp_path / "LibriSpeech")
    fsc = tmp_path / "fsc"
    out = tmp_path / "out"
    argv = ["--checkpoints", str(tmp_path / "ckpt"), "--librispeech", str(libri), "--alignments", str(tmp_path),
            "--fsc", str(fsc), "--upstreams", "mrhubert_b5a", "--cca-only", "mrhubert_b2a", "--out", str(out),
            "--dry-run"]
    assert reproduce.main(argv) == 0
    commands = capsys.readouterr().out.splitlines()
    train = [c for c in commands if " -m train " in c]
    assert len(train) == 2 and all(" -a " in c and "recipes/superb/" in c for c in train)
    assert any("-d asr" in c and "libri_root" in c and "len_for_bucket" in c for c in train)
    assert any("-d ic" in c and "file_path" in c for c in train)
    assert sum(" -m evaluate " in c for c in commands) == 2
    assert sum(" cca -u " in c and "--property word" in c for c in commands) == 2  # b5a and the CCA-only b2a
    assert any("write-len-for-bucket" in c for c in commands)
    assert commands[-1].endswith(f"--out {out / 'leaderboard.html'} --quiet")

    # A finished training run, evaluation and export are skipped when the script runs again.
    expdir = out / "runs" / "mrhubert_b5a" / "ic"
    expdir.mkdir(parents=True)
    (expdir / "layer_weights.json").write_text("{}")
    (expdir / "results.json").write_text(json.dumps({"test_split": "test", "metrics": {"test": {"acc": 0.5}}}))
    assert reproduce.main(argv) == 0
    again = capsys.readouterr().out
    assert "-d ic" not in again and f"-p {out / 'runs' / 'mrhubert_b5a' / 'asr'}" in again
    assert "export-weights" in again and str(expdir) not in again


def test_missing_inputs_are_named(reproduce, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ckpt").mkdir()
    assert reproduce.main(["--checkpoints", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out"),
                           "--upstreams", "mrhubert_b5a", "--cca-only"]) == 2
    err = capsys.readouterr().err
    assert "b5-a.pt" in err and "https://dl.fbaipublicfiles.com/mrhubert/b5-a/b5-a.pt" in err
    (tmp_path / "ckpt" / "b5-a.pt").write_bytes(b"")
    assert reproduce.main(["--checkpoints", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out"),
                           "--upstreams", "mrhubert_b5a", "--cca-only", "--fsc", str(tmp_path / "no_fsc")]) == 2
    assert "ic: dataset incomplete" in capsys.readouterr().err
