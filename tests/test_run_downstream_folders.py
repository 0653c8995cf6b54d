"""Experiment folders (issue 14, items 1-2 and the run_downstream errors): a run writes only into its own folder.

A copied or moved folder is a new experiment: resuming (``-a``) or evaluating (``-e``) it writes there, never into the
folder stored inside the checkpoint. Two runs into one folder are refused by an OS lock that a crash releases. A
truncated newest ``states-*.ckpt`` falls back to the newest readable one. The s3prl runs are the real runner on a
tiny MR-HuBERT and a tiny IC corpus (``conftest.tiny_ic_run``).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from downstream_probes.paths import recipes_dir
from downstream_probes.s3prl import experiment, run_downstream

QUICK_IC = recipes_dir() / "quick" / "ic" / "config.yaml"


def _data_dir(run_root: Path) -> Path:
    return run_root / "fsc"


def _train_argv(checkpoint: Path, data: Path, expdir: Path, steps: int, *extra: str) -> list[str]:
    return [
        "-m", "train", "-u", "mrhubert_local", "-k", str(checkpoint), "-d", "ic", "-c", str(QUICK_IC),
        "-p", str(expdir), "--device", "cpu",
        "-o", f"config.downstream_expert.datarc.file_path={data},,config.runner.total_steps={steps}",
        *extra,
    ]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def copied_run(tiny_ic_run, tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """(original folder, its copy, the original's files before anything ran)."""
    original = tmp_path / "runs" / "k1"
    shutil.copytree(tiny_ic_run.expdir, original)
    # The copy's checkpoints must point at the folder they were written in, like a real run's: rewrite Args.expdir.
    _point_checkpoints_at(original)
    copy = tmp_path / "runs" / "k4"
    shutil.copytree(original, copy)
    return original, copy, _snapshot(original)


def _point_checkpoints_at(folder: Path) -> None:
    import torch

    from downstream_probes.s3prl import compat

    compat.apply()
    for path in folder.glob("*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=False)
        state["Args"].expdir = str(folder)
        torch.save(state, path)


@pytest.mark.slow
def test_resuming_a_copied_folder_writes_into_the_copy(tiny_ic_run, copied_run) -> None:
    original, copy, before = copied_run
    data = _data_dir(tiny_ic_run.expdir.parent)
    status = run_downstream.main(_train_argv(tiny_ic_run.upstream_checkpoint, data, copy, 4, "-a"))
    assert status == 0
    assert _snapshot(original) == before, "the original experiment folder was changed"
    results = json.loads((copy / "results.json").read_text())
    assert Path(results["expdir"]) == copy.resolve()
    assert any(r["step"] == 4 for r in results["history"])  # resumed at 2, evaluated at 4 (eval_step 2)


@pytest.mark.slow
def test_evaluating_a_copied_or_moved_checkpoint_writes_next_to_it(tiny_ic_run, copied_run, tmp_path: Path) -> None:
    original, copy, before = copied_run
    status = run_downstream.main(["-m", "evaluate", "-e", str(copy / "states-2.ckpt"), "--device", "cpu"])
    assert status == 0
    assert _snapshot(original) == before, "evaluating the copy changed the original folder"
    assert "test" in json.loads((copy / "results.json").read_text())["evaluated_checkpoints"]

    moved = tmp_path / "moved" / "k1"
    moved.parent.mkdir()
    shutil.move(original, moved)
    status = run_downstream.main(["-m", "evaluate", "-e", str(moved / "states-2.ckpt"), "--device", "cpu"])
    assert status == 0
    assert not original.exists(), "evaluating the moved folder re-created the old one"
    assert (moved / "results.json").is_file()


_HOLD_LOCK = """
import sys, time
from downstream_probes.s3prl.experiment import experiment_lock
with experiment_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def _hold_lock_in_subprocess(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_into_a_locked_folder_is_refused_and_a_crash_releases_the_lock(
    tiny_ic_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "exp"
    holder = _hold_lock_in_subprocess(folder)
    try:
        data = _data_dir(tiny_ic_run.expdir.parent)
        status = run_downstream.main(_train_argv(tiny_ic_run.upstream_checkpoint, data, folder, 1))
        assert status == 2
        message = capsys.readouterr().err
        assert str(folder) in message and "another run" in message and str(holder.pid) in message
        assert not (folder / "results.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # kill -9 released the lock: the folder can be locked again at once.
    from downstream_probes.s3prl.experiment import experiment_lock

    with experiment_lock(folder):
        pass


@pytest.mark.slow
def test_a_concurrent_run_is_refused_then_kill_9_and_resume(
    tiny_ic_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run A trains in a subprocess; run B into the same folder is refused while A runs; A is killed with -9
    mid-run; resuming with -a continues from A's last checkpoint, and no evaluation is recorded twice."""
    folder = tmp_path / "exp"
    data = _data_dir(tiny_ic_run.expdir.parent)
    overrides = (
        f"config.downstream_expert.datarc.file_path={data},,config.runner.total_steps=400,,"
        "config.runner.save_step=1,,config.runner.eval_step=2,,config.runner.max_keep=2"
    )
    argv = _train_argv(tiny_ic_run.upstream_checkpoint, data, folder, 400)
    argv[argv.index("-o") + 1] = overrides
    run_a = subprocess.Popen([sys.executable, "-m", "downstream_probes.s3prl.run_downstream", *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and len(list(folder.glob("states-*.ckpt"))) < 2 and run_a.poll() is None:
            time.sleep(0.2)
        assert run_a.poll() is None, "run A ended before it could be interrupted"
        capsys.readouterr()
        assert run_downstream.main(_train_argv(tiny_ic_run.upstream_checkpoint, data, folder, 2)) == 2
        refused = capsys.readouterr().err
        assert "another run" in refused and f"pid {run_a.pid}" in refused
    finally:
        run_a.send_signal(signal.SIGKILL)
        run_a.wait()
    saved = sorted(int(p.stem.split("-")[1]) for p in folder.glob("states-*.ckpt"))
    assert saved, "run A saved no checkpoint before it was killed"
    end = (saved[-1] // 2 + 1) * 2  # the next evaluation step (eval_step 2) after the last checkpoint
    resume = _train_argv(tiny_ic_run.upstream_checkpoint, data, folder, end, "-a")
    assert run_downstream.main(resume) == 0
    results = json.loads((folder / "results.json").read_text())
    assert results["expdir"] == str(folder.resolve())
    records = [json.loads(line) for line in (folder / "evaluations.jsonl").read_text().splitlines()]
    keys = [(r["phase"], r["split"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), "an evaluation was recorded twice"
    assert max(r["step"] for r in records) == end


def test_truncated_newest_checkpoint_falls_back_to_the_newest_readable_one(
    tiny_ic_run, copied_run, capsys: pytest.CaptureFixture[str]
) -> None:
    _, copy, _ = copied_run
    newest = copy / "states-4.ckpt"
    newest.write_bytes((copy / "states-2.ckpt").read_bytes()[:5000])  # a save cut short
    chosen = experiment.newest_readable_checkpoint(copy)
    assert chosen == copy / "states-2.ckpt"
    assert "states-4.ckpt" in capsys.readouterr().err


@pytest.mark.slow
def test_truncated_newest_checkpoint_resumes_with_dash_a(tiny_ic_run, copied_run, capsys) -> None:
    _, copy, _ = copied_run
    (copy / "states-4.ckpt").write_bytes((copy / "states-2.ckpt").read_bytes()[:5000])
    data = _data_dir(tiny_ic_run.expdir.parent)
    status = run_downstream.main(_train_argv(tiny_ic_run.upstream_checkpoint, data, copy, 3, "-a"))
    assert status == 0
    err = capsys.readouterr().err
    assert "states-4.ckpt" in err and "states-2.ckpt" in err


def test_layer_index_out_of_range_is_a_clear_error(tiny_ic_run, tmp_path: Path, capsys) -> None:
    data = _data_dir(tiny_ic_run.expdir.parent)
    status = run_downstream.main(_train_argv(tiny_ic_run.upstream_checkpoint, data, tmp_path / "l99", 1, "-l", "99"))
    assert status == 2
    err = capsys.readouterr().err
    assert "-l 99" in err and "layers" in err


@pytest.mark.slow
def test_negative_layer_index_records_the_layer_name(tiny_ic_run, tmp_path: Path) -> None:
    data = _data_dir(tiny_ic_run.expdir.parent)
    folder = tmp_path / "last"
    assert run_downstream.main(_train_argv(tiny_ic_run.upstream_checkpoint, data, folder, 1, "-l", "-1")) == 0
    selection = json.loads((folder / "results.json").read_text())["layer_selection"]
    assert selection["mode"] == "single" and selection["layer"] != "-1" and selection["index"] >= 0


def test_mode_defaults_to_train_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = experiment.default_mode(["-u", "mrhubert_b4a", "-d", "asr"])
    assert argv == ["-u", "mrhubert_b4a", "-d", "asr", "-m", "train"]
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "-m train" in said
    for given in (["-m", "evaluate", "-e", "x"], ["--mode=inference"], ["-h"]):
        assert experiment.default_mode(given) == given
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_training_without_a_mode_runs(tiny_ic_run, tmp_path: Path) -> None:
    data = _data_dir(tiny_ic_run.expdir.parent)
    argv = _train_argv(tiny_ic_run.upstream_checkpoint, data, tmp_path / "nomode", 1)
    assert run_downstream.main(argv[2:]) == 0
    assert (tmp_path / "nomode" / "results.json").is_file()


def test_an_unusable_experiment_folder_is_a_clear_error(tmp_path: Path) -> None:
    occupied = tmp_path / "a_file"
    occupied.write_text("not a folder")
    with pytest.raises(ValueError, match=r"a_file.*experiment folder.*-p"), experiment.experiment_lock(occupied):
        pass


def test_the_folder_comes_from_the_command_line(tmp_path: Path) -> None:
    checkpoint = tmp_path / "moved" / "states-4.ckpt"
    assert experiment.experiment_folder(["-e", str(checkpoint)]) == checkpoint.parent
    assert experiment.experiment_folder(["-e", str(checkpoint), "-p", str(tmp_path / "p")]) == tmp_path / "p"
    assert experiment.experiment_folder(["-n", "x"]) == Path("result/downstream/x")


# --------------------------------------------------------------------------------------------------------------
# Issue 24 items 3, 5 and the runner's raw tracebacks


@pytest.mark.parametrize("key", ["save_step", "log_step", "eval_step", "gradient_accumulate_steps", "total_steps"])
def test_zero_runner_steps_are_named_before_the_upstream_is_built(
    tiny_ic_run, tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    """-o config.runner.save_step=0 (log_step, gradient_accumulate_steps) was a ZeroDivisionError in training."""
    data = _data_dir(tiny_ic_run.expdir.parent)
    argv = _train_argv(tiny_ic_run.upstream_checkpoint, data, tmp_path / "zero", 1)
    argv[-1] += f",,config.runner.{key}=0"
    assert run_downstream.main(argv) == 2
    err = capsys.readouterr().err
    assert f"config.runner.{key}=0 must be a whole number of at least 1" in err and "Traceback" not in err


def test_resume_with_settings_the_checkpoint_contradicts_is_refused(
    copied_run, tiny_ic_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-a -o config.optimizer.lr=0.5 recorded lr 0.5 while the optimizer kept 0.001; -a -k OTHER.pt went on with
    the saved upstream while naming the new one. More total_steps (nothing saved holds them) still resume."""
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    _, copy, _ = copied_run
    data = _data_dir(tiny_ic_run.expdir.parent)
    before = _snapshot(copy)
    argv = _train_argv(tiny_ic_run.upstream_checkpoint, data, copy, 3, "-a")
    argv[argv.index("-o") + 1] += ",,config.optimizer.lr=0.5"
    assert run_downstream.main(argv) == 2
    assert "config.optimizer.lr (0.001 -> 0.5)" in capsys.readouterr().err
    other = write_tiny_checkpoint(tmp_path / "other.pt", "base_2res", seed=1)
    assert run_downstream.main(_train_argv(other, data, copy, 3, "-a")) == 2
    assert f"-k ('{tiny_ic_run.upstream_checkpoint}' -> '{other}')" in capsys.readouterr().err
    assert _snapshot(copy) == before


def test_a_planted_link_in_the_folder_is_refused(
    tiny_ic_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FOLDER/test_predict.csv -> elsewhere link made the expert overwrite elsewhere (issue 24 item 3)."""
    folder = tmp_path / "linked"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me\n")
    (folder / "test_predict.csv").symlink_to(elsewhere)
    data = _data_dir(tiny_ic_run.expdir.parent)
    assert run_downstream.main(_train_argv(tiny_ic_run.upstream_checkpoint, data, folder, 1)) == 2
    assert "test_predict.csv is a symbolic link" in capsys.readouterr().err
    assert elsewhere.read_text() == "keep me\n"
