"""recipes/paper_2410.23955/reproduce.py: the planned commands (dry run), resume, and the ASR preparation step (`mrsuperb prepare asr`).

The real reproduction needs the released checkpoints, the SUPERB datasets and days of GPU time; here the plan is
checked: every (upstream, task) is trained with the SUPERB config and evaluated on its test split, CCA covers the
Fig. 2a models, finished steps are skipped, and nothing is written by a dry run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import load_recipe

from upstream_mrhubert.output_folder import LOCK_FILE, folder_lock


@pytest.fixture(scope="module")
def reproduce():
    return load_recipe("paper_2410.23955/reproduce.py")


def data_arguments(root: Path) -> list[str]:
    return [
        "--librispeech",
        str(root / "LibriSpeech"),
        "--alignments",
        str(root / "alignments"),
        "--snips",
        str(root / "SNIPS"),
        "--fsc",
        str(root / "fsc"),
        "--speech-commands",
        str(root / "sc"),
        "--speech-commands-test",
        str(root / "sc_test"),
        "--voicebank",
        str(root / "voicebank"),
        "--sd",
        str(root / "sd"),
    ]


def dry_run(reproduce, capsys, out: Path, *extra: str) -> list[str]:
    argv = [
        "--checkpoints",
        str(out.parent / "ckpt"),
        "--out",
        str(out),
        "--dry-run",
        *data_arguments(Path("/data")),
        *extra,
    ]
    assert reproduce.main(argv) == 0
    return capsys.readouterr().out.splitlines()


def test_dry_run_prints_the_whole_plan_and_writes_nothing(reproduce, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    lines = dry_run(reproduce, capsys, out)
    assert not out.exists()
    trains = [line for line in lines if " -m train " in line]
    evaluations = [line for line in lines if " -m evaluate " in line]
    upstreams = reproduce.TABLE2_UPSTREAMS
    assert len(trains) == len(evaluations) == len(upstreams) * 6
    for upstream in upstreams:
        for task in ("asr", "sf", "se", "ic", "ks", "sd"):
            train = next(line for line in trains if f" -u {upstream} -d {task} " in line)
            assert f"recipes/superb/{task}/config.yaml" in train and " -a " in train and "--seed 1337" in train
            assert str(out / "runs" / upstream / task) in train
    asr_train = next(line for line in trains if " -d asr " in line)
    assert "/data/LibriSpeech" in asr_train and str(out / "prepared" / "asr" / "len_for_bucket") in asr_train
    assert sum("-t test-clean" in line for line in evaluations) == len(upstreams)
    cca = [line for line in lines if " cca " in line]
    assert {line.split(" -u ")[1].split()[0] for line in cca} == {*upstreams, *reproduce.FIG2A_EXTRA_UPSTREAMS}
    assert all("--property word" in line and "--split dev-clean" in line for line in cca)
    assert any(" profile -u " in line for line in lines) and any(" compare " in line for line in lines)
    assert sum(" leaderboard " in line for line in lines) == 2
    assert " prepare asr --raw /data/LibriSpeech --out " in lines[0]


def test_finished_steps_are_skipped(reproduce, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    expdir = out / "runs" / "mrhubert_b5a" / "ic"
    expdir.mkdir(parents=True)
    (expdir / "results.json").write_text(json.dumps({"test_split": "test", "metrics": {"test": {"acc": 0.9}}}))
    (expdir / "layer_weights.json").write_text("{}")
    lines = dry_run(reproduce, capsys, out, "--tasks", "ic", "ks", "--upstreams", "mrhubert_b5a", "--cca-only")
    assert [line.split(" -m ")[1].split()[0] for line in lines if " -m " in line] == ["train", "evaluate"]
    assert all(" -d ks" in line or "/ks/" in line for line in lines if " -m " in line)
    assert not any("export-weights" in line and "/ic" in line for line in lines)


def test_tasks_without_their_dataset_are_skipped(reproduce, tmp_path: Path, capsys) -> None:
    argv = [
        "--checkpoints",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
        "--dry-run",
        "--fsc",
        "/data/fsc",
        "--upstreams",
        "mrhubert_b4a",
    ]
    assert reproduce.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if " -m train " in line] == [line for line in lines if " -d ic " in line]
    assert not any(" cca " in line for line in lines)  # no LibriSpeech and alignments: no Fig. 2a


def test_missing_checkpoints_are_one_clear_error(reproduce, tmp_path: Path, capsys) -> None:
    assert (
        reproduce.main(
            ["--checkpoints", str(tmp_path), "--fsc", "/data/fsc", "--upstreams", "mrhubert_b5a", "--cca-only"]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "b5-a.pt" in error and "https://dl.fbaipublicfiles.com/mrhubert/b5-a/b5-a.pt" in error


def test_a_folder_another_reproduction_holds_is_refused(reproduce, tmp_path: Path, capsys) -> None:
    """Two reproductions into one --out used to run their stages side by side."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "b5-a.pt").write_bytes(b"")  # only looked for: nothing runs
    fsc = tmp_path / "fsc"
    for split in ("train", "valid", "test"):
        (fsc / "data").mkdir(parents=True, exist_ok=True)
        (fsc / "data" / f"{split}_data.csv").write_text("")
    out = tmp_path / "out"
    argv = ["--checkpoints", str(tmp_path / "ckpt"), "--fsc", str(fsc), "--upstreams", "mrhubert_b5a", "--cca-only"]
    with folder_lock(out, "--out"):
        assert reproduce.main([*argv, "--out", str(out)]) == 2
    assert f"{out} is in use by another run (pid {os.getpid()})" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]
