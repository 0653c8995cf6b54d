"""The SUPERB grid: its cells, each an ordinary s3prl run, and how one cell is run, resumed and judged.

A cell is (upstream identity, task, learning rate, seed). It lives in ``DIR/<upstream>/<task>/lr<lr>_seed<seed>/``
and is exactly ``run_downstream.py -m train ... -o config.optimizer.lr=LR --seed SEED -p CELL`` followed by
``run_downstream.py -m evaluate -e <best dev checkpoint> -t <test split>``, as the sequential probe sweep runs
each layer. ``cell.json`` beside s3prl's files records the command line and every attempt (started, resumed with
``-a`` from which checkpoint, how it ended), so a rerun of the grid knows what it is looking at:

- a cell whose ``results.json`` holds its test evaluation is finished and never rerun;
- a cell with ``states-*.ckpt`` but no test evaluation was interrupted: it is resumed with s3prl's ``-a``;
- a cell diverged when s3prl skipped a training step for a NaN gradient norm (s3prl goes on without the step; in
  fp32 that means the learning rate blew the head up) or when its dev or test metric is not finite: it is recorded
  as such (not evaluated on test, not rerun, no part in the selection);
- a cell whose run raised failed: the error is recorded, and the next run of the grid tries it again (with ``-a``
  when it had saved checkpoints).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import math
import os
import re
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from downstream_probes import result_files, tasks
from downstream_probes.s3prl import run_downstream
from downstream_probes.s3prl.experiment import newest_readable_checkpoint
from downstream_probes.s3prl.shared_plan import HeadSpec, SharedSweepOptions, head_argv
from downstream_probes.s3prl.sweep import best_checkpoint
from upstream_mrhubert.atomic_io import read_json_record, write_json_atomic
from upstream_mrhubert.errors import MrsuperbError

CELL_FILE = "cell.json"
CELL_SCHEMA = "mrsuperb.superb_cell/1"
FINISHED, DIVERGED, FAILED, INTERRUPTED, PENDING = "finished", "diverged", "failed", "interrupted", "pending"
DONE_STATES = (FINISHED, DIVERGED)
LR_OVERRIDE = "config.optimizer.lr"


class GridError(MrsuperbError, ValueError):
    """A grid that cannot be run as asked (bad learning rates, seeds, upstreams, or a cell folder of another grid)."""


def format_lr(lr: float) -> str:
    """``1e-05`` -> ``1e-5``, ``0.00025`` -> ``2.5e-4``: the learning rate as it appears in folder names."""
    mantissa, exponent = f"{float(lr):e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def parse_lrs(values: Sequence[str]) -> list[float]:
    """Positive, distinct learning rates, sorted ascending (ties go to the smaller one: the order matters)."""
    lrs = []
    for value in values:
        try:
            lr = float(value)
        except ValueError:
            raise GridError(f"--lrs: {value!r} is not a number; give e.g. --lrs 1e-5,1e-4,1e-3") from None
        if not math.isfinite(lr) or lr <= 0:
            raise GridError(f"--lrs: {value!r} is not a positive learning rate")
        lrs.append(lr)
    if not lrs:
        raise GridError("--lrs: give at least one learning rate, e.g. --lrs 1e-5,1e-4,1e-3")
    if len({format_lr(lr) for lr in lrs}) != len(lrs):
        raise GridError(f"--lrs {','.join(values)}: a learning rate is given twice")
    return sorted(lrs)


def parse_seeds(values: Sequence[str]) -> list[int]:
    """Distinct whole-number seeds, in the order given."""
    try:
        seeds = [int(value) for value in values]
    except ValueError:
        raise GridError(f"--seeds {','.join(values)}: seeds are whole numbers, e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise GridError(f"--seeds {','.join(values)}: give distinct seeds, e.g. --seeds 0,1,2")
    return seeds


def upstream_folder(identity: str) -> str:
    """The folder of an upstream identity (``mrhubert_local:tiny`` -> ``mrhubert_local+tiny``)."""
    return identity.replace(":", "+").replace("/", "_")


@dataclass(frozen=True, kw_only=True)
class Cell:
    """One run of the grid: everything its two ``run_downstream.py`` commands need. What runs (the upstream, the
    task and its config) first, then where the cell sits in the grid (learning rate, seed, folder)."""

    upstream: str
    upstream_ckpt: str | None
    model_config: str | None
    task: str
    config: str | None = None
    override: str | None = None
    device: str | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    lr: float
    seed: int
    folder: Path

    @property
    def identity(self) -> str:
        return tasks.upstream_identity(self.upstream, self.upstream_ckpt)

    @property
    def name(self) -> str:
        return f"lr{format_lr(self.lr)}_seed{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.identity}/{self.task}/{self.name}"

    def sweep_options(self, sweep_dir: Path, **more: Any) -> SharedSweepOptions:
        """The cell's upstream, task, config and seed as the options of a shared sweep in ``sweep_dir`` (``more``:
        the other fields of ``SharedSweepOptions``)."""
        named_alike = ("upstream", "task", "upstream_ckpt", "model_config", "config", "override", "device")
        return SharedSweepOptions(
            sweep_dir=sweep_dir,
            extra_args=("--seed", str(self.seed), *self.extra_args),
            **{name: getattr(self, name) for name in named_alike},
            **more,
        )

    def train_argv(self) -> list[str]:
        """``run_downstream.py`` arguments of the cell's training (without ``-a``): the command line a shared sweep
        head gets (``shared_plan.head_argv``), with the cell's learning rate, seed and folder."""
        return head_argv(self.sweep_options(self.folder.parent), self.head_spec())

    def head_spec(self) -> HeadSpec:
        """The cell as a head of a shared sweep (``--shared``): its folder and its learning rate."""
        return HeadSpec(self.name, None, folder=self.folder, override=f"{LR_OVERRIDE}={self.lr!r}")

    def evaluate_argv(self, checkpoint: Path, test_split: str) -> list[str]:
        argv = ["-m", "evaluate", "-e", str(checkpoint), "-t", test_split, "-p", str(self.folder)]
        return [*argv, "--device", self.device] if self.device else argv

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder)
        data["extra_args"] = list(self.extra_args)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        data = dict(data)
        data["folder"] = Path(data["folder"])
        data["extra_args"] = tuple(data.get("extra_args", ()))
        return cls(**data)


def check_override(override: str | None) -> None:
    """The learning rate is the grid's: an ``-o`` that sets it too is refused."""
    if override and LR_OVERRIDE in override:
        raise GridError(f"-o sets {LR_OVERRIDE}; the grid sets it per cell from --lrs: drop it from -o")


# ------------------------------------------------------------------------------------------------------------
# cell.json and the state of a cell


def read_cell_record(folder: Path) -> dict[str, Any] | None:
    path = folder / CELL_FILE
    if not path.is_file():
        return None
    return read_json_record(
        path, CELL_SCHEMA, GridError, "delete the cell folder to run it afresh, or choose another -p"
    )


def write_cell_record(folder: Path, record: dict[str, Any]) -> None:
    write_json_atomic(folder / CELL_FILE, record)


def claim_folder(cell: Cell) -> dict[str, Any]:
    """The cell's record, created on first use; a folder of the same name holding another command is refused."""
    folder = cell.folder
    record = read_cell_record(folder)
    argv = cell.train_argv()
    if record is None:
        if folder.is_dir() and any(folder.iterdir()):
            raise GridError(f"{folder} already holds files that no grid wrote; choose another -p or empty it")
        folder.mkdir(parents=True, exist_ok=True)
        record = {"schema": CELL_SCHEMA, "cell": cell.to_dict(), "argv": argv, "attempts": []}
        write_cell_record(folder, record)
    elif _comparable(record["argv"]) != _comparable(argv):
        raise GridError(
            f"{folder} was run with another command ({' '.join(record['argv'])}); give the same -u/-k/-g/-c/-o as "
            "before, or choose another -p"
        )
    return record


def _comparable(argv: Sequence[str]) -> list[str]:
    """A cell's command without its device (a cell may resume on another machine: Slurm requeue, another GPU), its
    words sorted (the order options come in does not change the run)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--device":
            skip = True
            continue
        out.append(arg)
    return sorted(out)


def is_finite_number(value: Any) -> bool:
    """A metric value that counts: an int or float (not a bool) that is finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def cell_state(cell: Cell) -> str:
    """``finished``, ``diverged``, ``failed``, ``interrupted`` (checkpoints, no test evaluation) or ``pending``."""
    spec = tasks.TASKS[cell.task]
    record = read_cell_record(cell.folder) if cell.folder.is_dir() else None
    last = record["attempts"][-1] if record and record["attempts"] else {}
    if last.get("status") == FAILED:
        return FAILED
    results = result_files.read_results(cell.folder)
    if results is not None and spec.test_split in results.get("evaluated_checkpoints", {}):
        return FINISHED if _metrics_finite(results, spec) else DIVERGED
    if last.get("status") == DIVERGED:
        return DIVERGED
    if any(cell.folder.glob("states-*.ckpt")) or last:  # started (a kill may come before the first save)
        return INTERRUPTED
    return PENDING


def attempt_status(cell: Cell) -> str:
    """What an attempt that ran to its end left: the cell's state if finished or diverged, else failed."""
    state = cell_state(cell)
    return state if state in DONE_STATES else FAILED


def dev_split_of(results: dict[str, Any], spec: tasks.TaskSpec) -> str:
    """The split a run selected its best step on: the first of its config's ``eval_dataloaders``."""
    splits = ((results.get("config") or {}).get("runner") or {}).get("eval_dataloaders") or []
    return str(splits[0]) if splits else spec.dev_split


def _metrics_finite(results: dict[str, Any], spec: tasks.TaskSpec) -> bool:
    metrics = results.get("metrics", {})
    dev = metrics.get(dev_split_of(results, spec), {}).get(spec.primary)
    test = metrics.get(spec.test_split, {}).get(spec.primary)
    return is_finite_number(dev) and is_finite_number(test)


# ------------------------------------------------------------------------------------------------------------
# running one cell (in this process: the local executor starts one process per cell, Slurm one job)


class _NanWatch(io.TextIOBase):
    """stdout, passed through, noting the steps s3prl skipped for a gradient norm that was NaN (its runner prints
    ``grad norm is NaN at step N`` and goes on without the step: in fp32 that is a diverged training)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.steps: list[int] = []

    def write(self, text: str) -> int:
        for match in _NAN_STEP.finditer(text):
            self.steps.append(int(match.group(1)))
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


_NAN_STEP = re.compile(r"grad norm is NaN at step (\d+)")


@contextlib.contextmanager
def _watching_nan() -> Iterator[_NanWatch]:
    watch = _NanWatch(sys.stdout)
    saved, sys.stdout = sys.stdout, watch
    try:
        yield watch
    finally:
        sys.stdout = saved


def _slurm_job_id() -> str | None:
    """This process's Slurm job as ``squeue`` names it (``<array>_<task>`` for a task of a job array)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _training_complete(folder: Path) -> bool:
    """Training wrote its results.json and reached ``total_steps`` (a kill came during the test evaluation)."""
    results = result_files.read_results(folder)
    if results is None or "history" not in results or results.get("total_steps") is None:
        return False
    return any(folder.glob(f"states-{int(results['total_steps'])}.ckpt"))


def run_cell(cell: Cell) -> str:
    """Train the cell (resuming with ``-a`` from its newest checkpoint when it has one), evaluate its best dev
    checkpoint on the test split, and record the attempt in ``cell.json``; returns the cell's final state.

    A finished or diverged cell is left as it is; a failed one is tried again.
    """
    state = cell_state(cell)
    if state in DONE_STATES:
        return state
    record = claim_folder(cell)
    spec = tasks.TASKS[cell.task]
    trained = _training_complete(cell.folder)
    resumed_from = None
    if state in (INTERRUPTED, FAILED) and not trained:
        checkpoint = newest_readable_checkpoint(cell.folder)
        resumed_from = checkpoint.name if checkpoint is not None else None
    attempt: dict[str, Any] = {
        "action": "resume" if resumed_from else ("evaluate" if trained else "start"),
        "resumed_from": resumed_from,
        "started": _now(),
        "pid": os.getpid(),
        "host": os.uname().nodename,
        "slurm_job_id": _slurm_job_id(),
        "status": "running",
    }
    for previous in record["attempts"]:
        if previous.get("status") == "running":  # its process was killed (or the job preempted)
            previous["status"] = "killed"
    record["attempts"].append(attempt)
    write_cell_record(cell.folder, record)
    try:
        if not trained:
            with _watching_nan() as watch:
                run_downstream.run([*cell.train_argv(), *(["-a"] if resumed_from else [])])
            if watch.steps:
                attempt["nan_gradient_steps"] = watch.steps
        results = result_files.read_results(cell.folder) or {}
        if attempt.get("nan_gradient_steps"):
            attempt["status"] = DIVERGED
        elif is_finite_number(results.get("metrics", {}).get(dev_split_of(results, spec), {}).get(spec.primary)):
            run_downstream.run(cell.evaluate_argv(best_checkpoint(cell.folder), spec.test_split))
            attempt["status"] = attempt_status(cell)
        else:
            attempt["status"] = DIVERGED
    except Exception as error:  # recorded, and the grid goes on with the other cells
        attempt["status"] = FAILED
        attempt["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    attempt["ended"] = _now()
    write_cell_record(cell.folder, record)
    return str(attempt["status"])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m downstream_probes.s3prl.protocol.grid CELL_FOLDER``: run the cell recorded there."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m downstream_probes.s3prl.protocol.grid CELL_FOLDER", file=sys.stderr)
        return 2
    record = read_cell_record(Path(argv[0]))
    if record is None:
        print(f"{argv[0]}: no {CELL_FILE}", file=sys.stderr)
        return 2
    status = run_cell(Cell.from_dict(record["cell"]))
    return 0 if status in (FINISHED, DIVERGED) else 1


if __name__ == "__main__":
    sys.exit(main())
