"""``mrsuperb superb``: the learning-rate x seed grid, SUPERB's dev-based selection, resuming, and the leaderboard.

End to end on quick IC with the tiny MR-HuBERT: a 3-lr x 2-seed grid whose ``protocol.json`` is checked against the
cells' own ``results.json``; the same grid killed (SIGKILL) mid-way and rerun; a diverging learning rate. The fast
tests check the selection rule (direction, ties, diverged cells) on hand-made cells.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_tiny_fluent_commands

from downstream_probes import cli, result_files, tasks
from downstream_probes.paths import recipes_dir
from downstream_probes.s3prl.protocol import SuperbOptions, expand_grid, run_superb
from downstream_probes.s3prl.protocol.grid import GridError, format_lr, parse_lrs, parse_seeds
from downstream_probes.s3prl.protocol.selection import protocol_document, select
from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

LRS = ("1e-4", "1e-3", "1e-2")
SEEDS = ("0", "1")


def strict_json(path: Path) -> dict:
    """protocol.json parsed as strict JSON: NaN or Infinity in it fails the test."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}: not strict JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


# ------------------------------------------------------------------------------------------------------------
# the rule, on hand-made cells


def entry(lr: float, seed: int, dev: float | None, test: float | None, status: str = "finished") -> dict:
    return {
        "lr": lr,
        "seed": seed,
        "expdir": f"/x/lr{lr}_seed{seed}",
        "status": status,
        "dev": {} if dev is None else {"acc": dev, "wer": dev},
        "test": {} if test is None else {"acc": test, "wer": test},
    }


def test_selection_follows_the_task_direction_and_breaks_ties_to_the_smaller_lr() -> None:
    cells = [entry(1e-3, 0, 0.8, 0.70), entry(1e-3, 1, 0.6, 0.72), entry(1e-4, 0, 0.7, 0.5), entry(1e-4, 1, 0.7, 0.6)]
    chosen = select(tasks.TASKS["ic"], cells)  # mean dev 0.7 for both lrs: the smaller wins
    assert chosen["lr"] == 1e-4 and chosen["lr_name"] == "1e-4"
    assert chosen["test"]["acc"]["mean"] == pytest.approx(0.55)
    assert chosen["test"]["acc"]["sd"] == pytest.approx(statistics.stdev([0.5, 0.6]))
    assert chosen["test"]["acc"]["n"] == 2
    cells[0]["dev"]["acc"] = 0.81
    assert select(tasks.TASKS["ic"], cells)["lr"] == 1e-3  # higher accuracy is better
    cells = [entry(1e-3, 0, 10.0, 11.0), entry(1e-4, 0, 12.0, 9.0)]
    assert select(tasks.TASKS["asr"], cells)["lr"] == 1e-3  # lower WER is better


def test_diverged_and_unfinished_cells_take_no_part() -> None:
    cells = [entry(1e-2, 0, 0.99, 0.1, status="diverged"), entry(1e-3, 0, None, None, status="interrupted")]
    assert select(tasks.TASKS["ic"], cells) is None
    cells.append(entry(1e-4, 0, 0.5, 0.4))
    chosen = select(tasks.TASKS["ic"], cells)
    assert chosen["lr"] == 1e-4 and chosen["test"]["acc"] == {"mean": 0.4, "sd": None, "n": 1}


def test_grid_options_are_checked(tmp_path: Path) -> None:
    assert [format_lr(lr) for lr in parse_lrs(["1e-3", "2.5e-4", "0.1"])] == ["2.5e-4", "1e-3", "1e-1"]
    for bad in (["x"], ["0"], ["-1e-3"], ["1e-3", "0.001"], []):
        with pytest.raises(GridError):
            parse_lrs(bad)
    with pytest.raises(GridError, match="distinct"):
        parse_seeds(["1", "1"])
    base = {
        "upstreams": ["mrhubert_local"],
        "upstream_ckpts": ["a.pt"],
        "tasks": ["ic"],
        "lrs": [1e-3],
        "out": tmp_path,
    }
    with pytest.raises(GridError, match="config.optimizer.lr"):
        expand_grid(SuperbOptions(**base, override="config.optimizer.lr=1"))
    with pytest.raises(GridError, match="unknown task"):
        expand_grid(SuperbOptions(**{**base, "tasks": ["nope"]}))
    with pytest.raises(GridError, match="one -k per upstream"):
        expand_grid(SuperbOptions(**{**base, "upstreams": ["mrhubert_local", "mrhubert_b4a"]}))
    cells = expand_grid(SuperbOptions(**{**base, "lrs": [1e-4, 1e-3], "seeds": [0, 1]}))
    assert [cell.folder.relative_to(tmp_path.resolve()).as_posix() for cell in cells] == [
        "mrhubert_local+a/ic/lr1e-4_seed0",
        "mrhubert_local+a/ic/lr1e-4_seed1",
        "mrhubert_local+a/ic/lr1e-3_seed0",
        "mrhubert_local+a/ic/lr1e-3_seed1",
    ]
    argv = cells[3].train_argv()
    assert argv[argv.index("--seed") + 1] == "1" and argv[argv.index("-o") + 1] == "config.optimizer.lr=0.001"


# ------------------------------------------------------------------------------------------------------------
# end to end


@pytest.fixture(scope="module")
def grid_inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The tiny checkpoint, a tiny Fluent Speech Commands corpus and the grid's s3prl overrides.

    One training batch holds the whole training set (8 utterances), so each epoch is one step and s3prl's ``-a``
    (which restarts the epoch it was in) replays exactly the batch the killed run was about to take.
    """
    root = tmp_path_factory.mktemp("superb_grid")
    override = (
        f"config.downstream_expert.datarc.file_path={write_tiny_fluent_commands(root / 'fsc')},,"
        "config.downstream_expert.datarc.train_batch_size=8,,config.runner.total_steps=6,,"
        "config.runner.save_step=2,,config.runner.eval_step=3,,config.runner.log_step=3,,"
        "config.runner.eval_dataloaders=['dev']"
    )
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the cells' processes: tiny models run fastest on one thread
    yield {"root": root, "ckpt": write_tiny_checkpoint(root / "tiny.pt", "base_2res", seed=0), "override": override}
    if threads is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = threads


def grid_argv(inputs: dict, out: Path, lrs=LRS, seeds=SEEDS) -> list[str]:
    return ["superb", "-u", "mrhubert_local", "-k", str(inputs["ckpt"]), "-d", "ic",
            "-c", str(recipes_dir() / "quick" / "ic" / "config.yaml"), "-o", inputs["override"],
            "--lrs", ",".join(lrs), "--seeds", ",".join(seeds), "-p", str(out), "--device", "cpu", "-q"]  # fmt: skip


def options_of(inputs: dict, out: Path) -> SuperbOptions:
    return SuperbOptions(
        upstreams=["mrhubert_local"], upstream_ckpts=[str(inputs["ckpt"])], tasks=["ic"], out=out,
        lrs=[float(lr) for lr in LRS], seeds=[int(seed) for seed in SEEDS],
        config=str(recipes_dir() / "quick" / "ic" / "config.yaml"), override=inputs["override"], device="cpu",
    )  # fmt: skip


@pytest.fixture(scope="module")
def whole_grid(grid_inputs: dict) -> Path:
    out = grid_inputs["root"] / "whole"
    assert cli.main(grid_argv(grid_inputs, out)) == 0
    return out


def task_folder(out: Path) -> Path:
    return out / "mrhubert_local+tiny" / "ic"


@pytest.mark.slow
def test_protocol_picks_the_best_dev_lr_from_the_cells_results(whole_grid: Path) -> None:
    folder = task_folder(whole_grid)
    protocol = strict_json(folder / "protocol.json")
    assert protocol["schema"] == result_files.PROTOCOL_SCHEMA and protocol["upstream_identity"] == "mrhubert_local:tiny"
    assert result_files.load_protocol_file(folder / "protocol.json")["task"] == "ic"
    assert protocol["complete"] and not protocol["missing"] and not protocol["diverged"]
    assert len(protocol["cells"]) == 6

    # the rule, recomputed from each cell's own results.json
    dev_mean, test_of = {}, {}
    for lr in LRS:
        devs = []
        for seed in SEEDS:
            results = json.loads((folder / f"lr{format_lr(float(lr))}_seed{seed}" / "results.json").read_text())
            assert results["config"]["optimizer"]["lr"] == float(lr) and results["seed"] == int(seed)
            assert results["evaluated_checkpoints"]["test"]["step"] == results["best_step"]
            devs.append(results["metrics"]["dev"]["acc"])
            test_of[(float(lr), int(seed))] = results["metrics"]["test"]["acc"]
        dev_mean[float(lr)] = statistics.fmean(devs)
    best = max(dev_mean.values())
    chosen = min(lr for lr, value in dev_mean.items() if value == best)
    selection = protocol["selection"]
    assert selection["lr"] == chosen
    tests = [test_of[(chosen, int(seed))] for seed in SEEDS]
    assert [run["test"]["acc"] for run in selection["per_seed"]] == tests
    assert selection["test"]["acc"]["mean"] == pytest.approx(statistics.fmean(tests))
    assert selection["test"]["acc"]["sd"] == pytest.approx(statistics.stdev(tests))
    assert selection["test"]["acc"]["n"] == 2


def stable(protocol: dict) -> dict:
    """protocol.json without what differs between two grid folders (paths, time)."""
    drop = ("schema", "created", "upstream_ckpt")
    kept = {key: value for key, value in protocol.items() if key not in drop}
    kept["cells"] = [{k: v for k, v in cell.items() if k != "expdir"} for cell in protocol["cells"]]
    if kept["selection"] is not None:
        selection = dict(kept["selection"])
        selection["per_seed"] = [{k: v for k, v in run.items() if k != "expdir"} for run in selection["per_seed"]]
        kept["selection"] = selection
    return kept


@pytest.mark.slow
def test_killed_grid_resumes_to_the_same_protocol(grid_inputs: dict, whole_grid: Path) -> None:
    """A 1-lr x 2-seed grid killed in its second cell; the uninterrupted reference is the same two cells of the
    whole grid (run by the fixture), read into a protocol.json the same way."""
    out = grid_inputs["root"] / "killed"
    argv = grid_argv(grid_inputs, out, lrs=("1e-4",))
    first, second = (task_folder(out) / name for name in ("lr1e-4_seed0", "lr1e-4_seed1"))
    entry_point = "import sys; from downstream_probes.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", entry_point, *argv],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not list(second.glob("states-*.ckpt")):
            assert process.poll() is None and time.monotonic() < deadline, "the grid did not reach its second cell"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = first / "results.json"
    assert "test" in json.loads(finished.read_text())["evaluated_checkpoints"]
    assert not (second / "results.json").exists(), "the second cell finished before the kill: nothing to resume"
    assert not (task_folder(out) / "protocol.json").exists()
    stamp = finished.stat().st_mtime_ns

    assert cli.main(argv) == 0
    assert finished.stat().st_mtime_ns == stamp  # the finished cell was not rerun
    assert len(json.loads((first / "cell.json").read_text())["attempts"]) == 1
    attempts = json.loads((second / "cell.json").read_text())["attempts"]
    assert [a["action"] for a in attempts] == ["start", "resume"] and attempts[0]["status"] == "killed"
    assert attempts[1]["resumed_from"].startswith("states-") and attempts[1]["status"] == "finished"
    resumed = strict_json(task_folder(out) / "protocol.json")
    reference = [c for c in expand_grid(options_of(grid_inputs, whole_grid)) if c.lr == 1e-4]
    assert stable(resumed) == stable(protocol_document(reference))

    assert cli.main(argv) == 0  # a third run finds everything done
    assert len(json.loads((second / "cell.json").read_text())["attempts"]) == 2


@pytest.mark.slow
def test_a_diverging_lr_is_recorded_and_left_out(grid_inputs: dict) -> None:
    out = grid_inputs["root"] / "diverging"
    assert cli.main([*grid_argv(grid_inputs, out, lrs=("1e30",)), "--jobs", "2"]) == 0  # both seeds at once
    protocol = strict_json(task_folder(out) / "protocol.json")
    assert protocol["diverged"] == [{"lr": 1e30, "seed": seed, "status": "diverged"} for seed in (0, 1)]
    assert protocol["selection"] is None and not protocol["complete"]
    cells = [json.loads((task_folder(out) / f"lr1e30_seed{seed}" / "cell.json").read_text()) for seed in (0, 1)]
    assert all(cell["attempts"][-1]["nan_gradient_steps"] for cell in cells), cells
    started = sorted((cell["attempts"][0]["started"], cell["attempts"][0]["ended"]) for cell in cells)
    assert started[1][0] <= started[0][1]  # the two cells ran side by side
    assert all(value is None or math.isfinite(value) for value in protocol["cells"][0]["dev"].values())


@pytest.mark.slow
def test_leaderboard_shows_the_protocol_number_not_the_newest_run(whole_grid: Path) -> None:
    from downstream_probes.reports import leaderboard as lb

    protocol = strict_json(task_folder(whole_grid) / "protocol.json")
    board = lb.load_leaderboard([whole_grid])
    column = next(c for c in lb.TABLE2_COLUMNS if c.key == "ic_acc")
    cell = board.cell("mrhubert_local:tiny", column)
    assert cell.run.protocol and cell.value == protocol["selection"]["test"]["acc"]["mean"]
    assert board.rows == ["mrhubert_local:tiny"] and not board.ignored  # the six cells are summarised, not rows
    summary = protocol["selection"]["test"]["acc"]
    sd = f" ± {column.format(summary['sd'])}" if summary["sd"] is not None else ""
    assert f"{column.format(summary['mean'])}{sd} (n=2)" in lb.render_markdown(board)


@pytest.mark.slow
def test_slurm_and_local_executors_give_the_same_protocol(grid_inputs: dict, whole_grid: Path, slurm_cluster) -> None:
    """The 2-cell grid (1 lr x 2 seeds) as a Slurm job array on the one-node cluster equals the same cells run by
    the local executor (the fixture's grid); a rerun submits only the cell that is missing."""
    from downstream_probes.s3prl.protocol.slurm import SLURM_FILE

    out = grid_inputs["root"] / "slurm"
    argv = [*grid_argv(grid_inputs, out, lrs=("1e-4",)), "--executor", "slurm", "--slurm-partition",
            slurm_cluster.partition, "--wait"]  # fmt: skip
    assert cli.main(argv) == 0
    cells = [task_folder(out) / name for name in ("lr1e-4_seed0", "lr1e-4_seed1")]
    jobs = [json.loads((cell / SLURM_FILE).read_text())["job_id"] for cell in cells]
    assert len({job.split("_")[0] for job in jobs}) == 1  # one array
    assert all(json.loads((cell / "cell.json").read_text())["attempts"][-1]["slurm_job_id"] for cell in cells)
    reference = [c for c in expand_grid(options_of(grid_inputs, whole_grid)) if c.lr == 1e-4]
    assert stable(strict_json(task_folder(out) / "protocol.json")) == stable(protocol_document(reference))

    shutil.rmtree(cells[1])
    assert cli.main(argv) == 0
    assert json.loads((cells[0] / SLURM_FILE).read_text())["job_id"] == jobs[0]  # finished: not submitted again
    assert json.loads((cells[1] / SLURM_FILE).read_text())["job_id"] not in jobs
    assert stable(strict_json(task_folder(out) / "protocol.json")) == stable(protocol_document(reference))


def evaluations(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "evaluations.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_shared_heads_give_their_separate_runs_metrics(grid_inputs: dict, whole_grid: Path) -> None:
    """--shared: the three learning rates of seed 0 as heads of one pass equal the separate cells of the grid."""
    out = grid_inputs["root"] / "shared"
    assert cli.main([*grid_argv(grid_inputs, out, seeds=("0",)), "--shared"]) == 0
    for lr in LRS:
        name = f"lr{format_lr(float(lr))}_seed0"
        shared, separate = task_folder(out) / name, task_folder(whole_grid) / name
        a, b = evaluations(shared), evaluations(separate)
        assert [(r["phase"], r["split"], r["step"]) for r in a] == [(r["phase"], r["split"], r["step"]) for r in b]
        for mine, theirs in zip(a, b, strict=True):
            assert mine["scalars"].keys() == theirs["scalars"].keys()
            for key, value in theirs["scalars"].items():
                assert abs(mine["scalars"][key] - value) <= 1e-6, (name, key)
        results = json.loads((shared / "results.json").read_text())
        assert results["config"]["optimizer"]["lr"] == float(lr) and results["sweep"]["status"] == "finished"
        assert json.loads((shared / "cell.json").read_text())["attempts"][-1]["status"] == "finished"
    reference = [c for c in expand_grid(options_of(grid_inputs, whole_grid)) if c.seed == 0]
    assert stable(strict_json(task_folder(out) / "protocol.json")) == stable(protocol_document(reference))


@pytest.mark.slow
def test_a_requeued_slurm_job_resumes_its_cell(grid_inputs: dict, slurm_cluster) -> None:
    """Preemption: Slurm warns a job it is about to preempt with SIGUSR2 (submitit asks for it); submitit then
    checkpoints the job and requeues it. The requeued job starts again and resumes its cell with -a; a rerun of the
    grid meanwhile submits nothing (the job is still queued)."""
    from downstream_probes.s3prl.protocol.slurm import SLURM_FILE

    out = grid_inputs["root"] / "slurm_requeue"
    # long enough that the job is still training when the signal comes
    steps = "total_steps=200,,config.runner.save_step=10,,config.runner.eval_step=100,,config.runner.log_step=100"
    override = grid_inputs["override"].replace(
        "total_steps=6,,config.runner.save_step=2,,config.runner.eval_step=3,,config.runner.log_step=3", steps
    )
    assert steps in override
    inputs = {**grid_inputs, "override": override}
    argv = [*grid_argv(inputs, out, lrs=("1e-4",), seeds=("0",)), "--executor", "slurm", "--slurm-partition",
            slurm_cluster.partition]  # fmt: skip
    assert cli.main(argv) == 0
    cell = task_folder(out) / "lr1e-4_seed0"
    job = json.loads((cell / SLURM_FILE).read_text())["job_id"]
    deadline = time.monotonic() + 240
    while not list(cell.glob("states-*.ckpt")):
        assert time.monotonic() < deadline, "the job saved no checkpoint"
        time.sleep(0.05)
    preempt = subprocess.run(["scancel", "--signal=USR2", job], capture_output=True, text=True)
    assert preempt.returncode == 0, preempt.stderr
    # Slurm holds a requeued job back for a while (its BeginTime); once it is pending again, let it start at once
    deadline = time.monotonic() + 60
    while subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip() != (
        "PENDING"
    ):
        assert time.monotonic() < deadline, "the requeued job did not come back to the queue"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True, check=True)
    assert cli.main([*argv, "--wait"]) == 0
    assert json.loads((cell / SLURM_FILE).read_text())["job_id"] == job  # not submitted again
    attempts = json.loads((cell / "cell.json").read_text())["attempts"]
    assert [a["action"] for a in attempts] == ["start", "resume"], attempts
    assert attempts[0]["status"] == "killed" and attempts[1]["status"] == "finished"
    assert attempts[0]["slurm_job_id"] == attempts[1]["slurm_job_id"] == job
    assert strict_json(task_folder(out) / "protocol.json")["complete"]


@pytest.mark.slow
def test_shared_groups_run_as_slurm_jobs(grid_inputs: dict, whole_grid: Path, slurm_cluster) -> None:
    """--shared --executor slurm: one job per seed, its learning rates as heads; the cells equal the local grid's."""
    from downstream_probes.s3prl.protocol.slurm import SLURM_FILE

    out = grid_inputs["root"] / "slurm_shared"
    argv = [*grid_argv(grid_inputs, out, lrs=("1e-4", "1e-3")), "--shared", "--executor", "slurm",
            "--slurm-partition", slurm_cluster.partition, "--wait"]  # fmt: skip
    assert cli.main(argv) == 0
    jobs = {
        (lr, seed): json.loads((task_folder(out) / f"lr{lr}_seed{seed}" / SLURM_FILE).read_text())["job_id"]
        for lr in ("1e-4", "1e-3")
        for seed in SEEDS
    }
    assert jobs[("1e-4", "0")] == jobs[("1e-3", "0")] != jobs[("1e-4", "1")] == jobs[("1e-3", "1")]
    reference = [c for c in expand_grid(options_of(grid_inputs, whole_grid)) if c.lr in (1e-4, 1e-3)]
    assert stable(strict_json(task_folder(out) / "protocol.json")) == stable(protocol_document(reference))


def test_a_second_grid_into_a_held_folder_is_refused(tmp_path: Path) -> None:
    """Two grid commands into one -p marked each other's live attempts as killed (issue 24's lock, for superb)."""
    from upstream_mrhubert.output_folder import FolderLocked, folder_lock

    out = tmp_path / "grid"
    options = SuperbOptions(upstreams=["mrhubert_local"], upstream_ckpts=[str(tmp_path / "tiny.pt")], tasks=["ic"],
                            lrs=[1e-3], seeds=[0], out=out)  # fmt: skip
    with folder_lock(out), pytest.raises(FolderLocked, match=r"in use by another run"):
        run_superb(options)
    assert not list(out.rglob("cell.json"))  # nothing was started
