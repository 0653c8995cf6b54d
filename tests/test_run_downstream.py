"""End to end: s3prl's runner and experts through run_downstream.py, with a tiny MR-HuBERT on synthetic corpora.

Every SUPERB task takes the user's path: ``mrsuperb corpus`` (the real dataset's raw layout), ``mrsuperb prepare``,
then trained for a few steps with the printed ``-o`` and evaluated on its test split (``-u mrhubert_local -k tiny.pt``);
one run selects a layer by name; one runs two CPU processes under torchrun (gloo); one is killed and resumed.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from downstream_probes.paths import recipes_dir
from downstream_probes.result_files import RESULTS_SCHEMA
from downstream_probes.s3prl import run_downstream
from downstream_probes.s3prl.sweep import best_checkpoint
from downstream_probes.tasks import TASKS

EXPECTED_TEST_METRICS = {
    "asr": {"wer", "cer"},
    "sf": {"slot_type_f1", "slot_value_cer"},
    "ic": {"acc"},
    "ks": {"acc"},
    "se": {"pesq", "stoi", "si_sdr"},
    "sd": {"der", "frame_acc"},
}


def quick_config(task: str) -> str:
    return str(recipes_dir() / "quick" / task / "config.yaml")


def train_argv(task: str, ckpt: Path, expdir: Path, override: str, *extra: str) -> list[str]:
    return [
        "-m",
        "train",
        "-u",
        "mrhubert_local",
        "-k",
        str(ckpt),
        "-d",
        task,
        "-c",
        quick_config(task),
        "-p",
        str(expdir),
        "-o",
        override,
        *extra,
    ]


def read_results(expdir: Path) -> dict:
    return json.loads((expdir / "results.json").read_text())


@pytest.mark.parametrize("task", ["asr", "sf", "ic", "ks", "se", "sd"])
def test_task_trains_and_evaluates(task: str, workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    expdir = workspace / f"exp_{task}"
    assert run_downstream.main(train_argv(task, tiny_ckpt, expdir, corpus_overrides(task))) == 0
    trained = read_results(expdir)
    dev_split = TASKS[task].dev_split
    assert trained["schema"] == RESULTS_SCHEMA and trained["task"] == task and trained["upstream"] == "mrhubert_local"
    assert trained["layer_selection"] == {"mode": "weighted_sum"}
    assert trained["best_step"] in (2, 4) and dev_split in trained["metrics"]
    assert trained["config"]["runner"]["total_steps"] == 4 and trained["seed"] == 1337
    assert trained["versions"]["s3prl"] == "0.4.18"
    weights = json.loads((expdir / "layer_weights.json").read_text())
    assert [layer["name"] for layer in weights["layers"]][:6] == ["T0", "T1", "T2", "T3", "T4", "D0"]
    assert weights["task"] == task and abs(sum(layer["weight"] for layer in weights["layers"]) - 1.0) < 1e-5

    best = best_checkpoint(expdir)  # the expert's best-on-dev checkpoint, else the last one (no dev improvement)
    test_split = TASKS[task].test_split
    assert run_downstream.main(["-m", "evaluate", "-e", str(best), "-t", test_split]) == 0
    results = read_results(expdir)
    assert results["test_split"] == test_split
    assert results["best_step"] == torch.load(best, map_location="cpu")["Step"]
    test_metrics = results["metrics"][test_split]
    assert EXPECTED_TEST_METRICS[task] <= set(test_metrics)
    assert all(math.isfinite(value) for value in test_metrics.values())
    for key in ("acc", "frame_acc", "slot_type_f1", "stoi"):
        if key in test_metrics:
            assert 0.0 <= test_metrics[key] <= 1.0
    assert results["metrics"][dev_split] == trained["metrics"][dev_split]  # evaluate merges, keeps training's
    if task == "sd":
        assert (
            expdir / "scoring" / f"hyp_{results['evaluated_checkpoints']['test']['der_threshold']}_"
            f"{results['evaluated_checkpoints']['test']['der_median_filter']}.rttm"
        ).is_file()
        assert test_metrics["der"] >= 0.0


def test_single_layer_by_name(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    expdir = workspace / "exp_ic_d0"
    assert run_downstream.main(train_argv("ic", tiny_ckpt, expdir, corpus_overrides("ic"), "-l", "D0")) == 0
    results = read_results(expdir)
    assert results["layer_selection"] == {"mode": "single", "layer": "D0", "index": 5}
    saved = torch.load(expdir / "states-4.ckpt", map_location="cpu")
    assert saved["Args"].upstream_layer_selection == 5
    assert "weights" not in saved.get("Featurizer", {})  # a single layer: no layer weights to learn


def test_unknown_layer_name_is_one_clear_error(workspace: Path, tiny_ckpt: Path, corpus_overrides, capsys) -> None:
    argv = train_argv("ic", tiny_ckpt, workspace / "exp_bad_layer", corpus_overrides("ic"), "-l", "X9")
    assert run_downstream.main(argv) == 2
    assert "-l X9" in capsys.readouterr().err


def test_placeholder_data_path_is_one_clear_error(workspace: Path, tiny_ckpt: Path, capsys) -> None:
    argv = ["-m", "train", "-u", "mrhubert_local", "-k", str(tiny_ckpt), "-d", "ic", "-p", str(workspace / "exp_x")]
    assert run_downstream.main(argv) == 2  # -d ic without -c: recipes/superb/ic/config.yaml, data path unset
    assert "config.downstream_expert.datarc.file_path" in capsys.readouterr().err


def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_two_cpu_processes_under_torchrun(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    expdir = workspace / "exp_ic_ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "downstream_probes.s3prl.run_downstream",
        *train_argv("ic", tiny_ckpt, expdir, corpus_overrides("ic")),
    ]
    done = subprocess.run(command, env=_subprocess_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = torch.load(expdir / "states-4.ckpt", map_location="cpu")
    assert saved["WorldSize"] == 2 and saved["Args"].backend == "gloo" and saved["Args"].device == "cpu"
    assert read_results(expdir)["best_step"] in (2, 4)


def test_killed_run_resumes_from_its_last_checkpoint(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    expdir = workspace / "exp_ic_resume"
    endless = (
        corpus_overrides("ic") + ",,config.runner.total_steps=100000,,config.runner.save_step=3"
        ",,config.runner.eval_step=4,,config.runner.eval_dataloaders=['dev']"
    )
    command = [
        sys.executable,
        "-m",
        "downstream_probes.s3prl.run_downstream",
        *train_argv("ic", tiny_ckpt, expdir, endless),
    ]
    process = subprocess.Popen(command, env=_subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (expdir / "states-6.ckpt").exists() and not list(expdir.glob("states-9.ckpt")):
            assert process.poll() is None and time.monotonic() < deadline, "training did not reach step 6"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved_steps = sorted(int(p.stem.split("-")[1]) for p in expdir.glob("states-*.ckpt"))
    assert saved_steps and not list(expdir.glob(".*.part"))
    last = saved_steps[-1]
    evaluated_before = {r["step"] for r in map(json.loads, (expdir / "evaluations.jsonl").read_text().splitlines())}
    assert 4 in evaluated_before

    target = last + 6  # s3prl saves only at multiples of save_step (3)
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "downstream_probes.s3prl.run_downstream",
            "-m",
            "train",
            "-a",
            "-p",
            str(expdir),
            "-o",
            f"config.runner.total_steps={target}",
        ],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resume from {expdir}/states-{last}.ckpt" in resumed.stdout + resumed.stderr
    final = torch.load(expdir / f"states-{target}.ckpt", map_location="cpu")
    assert final["Step"] == target
    assert all(int(state["step"]) == target for state in final["Optimizer"]["state"].values())
    history_steps = [r["step"] for r in read_results(expdir)["history"]]
    assert 4 in history_steps and max(history_steps) > last  # evaluations from before and after the kill


def test_probe_sweep_records_each_layer(workspace: Path, tiny_ckpt: Path, corpus_overrides) -> None:
    from downstream_probes import cli

    sweep_dir = workspace / "sweep_ic"
    argv = [
        "probe-sweep",
        "-u",
        "mrhubert_local",
        "-k",
        str(tiny_ckpt),
        "-d",
        "ic",
        "-c",
        quick_config("ic"),
        "-o",
        corpus_overrides("ic"),
        "-p",
        str(sweep_dir),
        "--layers",
        "T0,U0",
    ]
    assert cli.main(argv) == 0
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [(layer["name"], layer["index"]) for layer in sweep["layers"]] == [("T0", 0), ("U0", 10)]
    for layer in sweep["layers"]:
        assert 0.0 <= layer["metrics"]["test"]["acc"] <= 1.0
        assert read_results(Path(layer["expdir"]))["layer_selection"]["layer"] == layer["name"]


def test_a_run_that_fails_before_its_first_step_leaves_no_trace(workspace: Path, tiny_ckpt: Path, capsys) -> None:
    """Data paths pointing nowhere: s3prl has written args_*.yaml, config_*.yaml and tensorboard files when it fails;
    they go, and the folder the run created goes with them (issue 23)."""
    expdir = workspace / "exp_fails_early"
    with pytest.raises(Exception, match="fsc"):  # whatever s3prl raises for the missing corpus
        run_downstream.run(
            train_argv("ic", tiny_ckpt, expdir, "config.downstream_expert.datarc.file_path='/nonexistent/fsc'")
        )
    assert not expdir.exists()
    kept = workspace / "exp_kept_folder"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="fsc"):
        run_downstream.run(
            train_argv("ic", tiny_ckpt, kept, "config.downstream_expert.datarc.file_path='/nonexistent/fsc'")
        )
    assert sorted(path.name for path in kept.iterdir()) == ["notes.txt"]


def test_train_without_an_experiment_folder_is_refused(tiny_ckpt: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["-m", "train", "-u", "mrhubert_local", "-k", str(tiny_ckpt), "-d", "ic", "-c", quick_config("ic")]
    assert run_downstream.main(argv) == 2
    assert "-m train needs an experiment folder: give -p FOLDER" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # s3prl's default, result/downstream/None, was not made


def test_cache_dir_is_where_our_checkpoints_are_looked_for(workspace: Path, corpus_overrides, capsys) -> None:
    """--cache_dir: s3prl's own upstreams download there, and so do ours (not ~/.cache/mrhubert)."""
    cache = workspace / "ckpt_cache"
    argv = ["-m", "train", "-u", "mrhubert_b4a", "-d", "ic", "-c", quick_config("ic"), "-p", str(workspace / "e")]
    assert run_downstream.main([*argv, "-o", corpus_overrides("ic"), "--cache_dir", str(cache)]) == 2
    assert str(cache / "b4-a.pt") in capsys.readouterr().err  # offline here: the error names where to put it
    assert os.environ.get("MRHUBERT_CKPT_DIR") != str(cache)
