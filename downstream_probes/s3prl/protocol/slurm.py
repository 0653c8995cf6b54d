"""The Slurm executor: every unfinished cell (with ``--shared``: every group of one seed's learning rates) a task
of one Slurm job array, submitted through submitit.

Each job runs ``run_cell`` (the same code as a local cell: train, resuming with ``-a`` when the cell has
checkpoints, then the test evaluation). ``CellJob`` is submitit-checkpointable: on preemption or at the time limit
submitit requeues it, and the requeued job resumes the cell from its newest ``states-*.ckpt``. The job's id and its
log files are kept in ``CELL/slurm.json``; the logs themselves are in ``DIR/slurm_logs/<job id>/``. Submitting
returns at once; a rerun of the grid reads what finished, leaves the cells whose job is still queued or running,
and submits only the rest. ``wait`` follows the jobs with a progress bar until none of the grid's is left.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import submitit
from tqdm import tqdm

from downstream_probes.s3prl.protocol.grid import DONE_STATES, Cell, GridError, cell_state, claim_folder, run_cell
from downstream_probes.s3prl.protocol.shared import run_shared_group, shared_groups
from upstream_mrhubert.atomic_io import write_json_atomic

SLURM_FILE = "slurm.json"
LOG_DIR = "slurm_logs"
POLL_SECONDS = 2.0


class CellJob(submitit.helpers.Checkpointable):
    """One cell as a submitit job; requeued (and so resumed with ``-a``) on preemption or timeout."""

    def __call__(self, cell: dict[str, Any]) -> str:
        return run_cell(Cell.from_dict(cell))


class SharedGroupJob(submitit.helpers.Checkpointable):
    """The learning rates of one seed as one ``--shared`` job; requeued on preemption or timeout, the shared pass
    resumes from its saved state."""

    def __call__(self, cells: list[dict[str, Any]]) -> str:
        run_shared_group([Cell.from_dict(cell) for cell in cells])
        return "done"


def queued_jobs() -> set[str]:
    """Ids of the jobs Slurm still holds (pending, running, requeued, ...), array tasks as ``<array>_<task>``."""
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise GridError(
            "--executor slurm: squeue not found; run on a Slurm login node (or use --executor local)"
        ) from None
    if done.returncode != 0:
        raise GridError(f"--executor slurm: squeue failed ({done.stderr.strip()}); is Slurm reachable from here?")
    return {line.strip() for line in done.stdout.splitlines() if line.strip()}


def read_submission(cell: Cell) -> dict[str, Any] | None:
    path = cell.folder / SLURM_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _executor(out: Path, settings: Any) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=str(out / LOG_DIR / "%j"), cluster="slurm")
    parameters: dict[str, Any] = {
        "name": "superb",
        "timeout_min": int(settings.time_min),
        "cpus_per_task": int(settings.cpus),
        "gpus_per_node": int(settings.gpus),
        "slurm_array_parallelism": int(settings.array_parallelism),
    }
    if settings.partition:
        parameters["slurm_partition"] = settings.partition
    if settings.mem_gb:
        parameters["mem_gb"] = float(settings.mem_gb)
    if settings.extra:
        parameters["slurm_additional_parameters"] = dict(settings.extra)
    executor.update_parameters(**parameters)
    return executor


def submit(units: Sequence[Sequence[Cell]], out: Path, settings: Any, shared: bool = False) -> list[str]:
    """Submit ``units`` (one cell each, or one ``--shared`` group each) as one job array; returns the job ids and
    records each in the ``slurm.json`` of its cells."""
    if not units:
        return []
    executor = _executor(out, settings)
    if shared:
        jobs = executor.map_array(SharedGroupJob(), [[cell.to_dict() for cell in unit] for unit in units])
    else:
        jobs = executor.map_array(CellJob(), [unit[0].to_dict() for unit in units])
    submitted = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for unit, job in zip(units, jobs, strict=True):
        record = {"job_id": str(job.job_id), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr)}
        record["submitted"] = submitted
        for cell in unit:
            write_json_atomic(cell.folder / SLURM_FILE, record)
    return [str(job.job_id) for job in jobs]


def run_slurm(
    cells: Sequence[Cell], out: Path, settings: Any, wait: bool = False, quiet: bool = False, shared: bool = False
) -> list[str]:
    """Submit every cell (``shared``: every group of one seed's learning rates) that is neither done nor still
    queued; with ``wait``, follow the grid's jobs to the end. Returns the ids of the jobs submitted now."""
    todo = [cell for cell in cells if cell_state(cell) not in DONE_STATES]
    live = queued_jobs() if todo else set()
    for cell in todo:
        claim_folder(cell)
    if shared:
        units = shared_groups(todo)
    else:
        units = [[cell] for cell in todo]
    pending = [unit for unit in units if any(_not_queued(cell, live) for cell in unit)]
    job_ids = submit(pending, Path(out), settings, shared=shared)
    if not quiet:
        print(
            f"superb grid on Slurm: {len(cells) - len(todo)} cell(s) done, "
            f"{len(todo) - sum(len(unit) for unit in pending)} still queued, {len(job_ids)} job(s) submitted now"
            + (f" ({job_ids[0].split('_')[0]})" if job_ids else "")
        )
    if wait:
        follow(cells, quiet=quiet)
    return job_ids


def _not_queued(cell: Cell, live: set[str]) -> bool:
    previous = read_submission(cell)
    return previous is None or previous["job_id"] not in live


def follow(cells: Sequence[Cell], quiet: bool = False) -> None:
    """Poll until no cell of the grid has a job left in Slurm's queue; a progress bar counts the done cells."""
    progress = tqdm(total=len(cells), desc="superb grid (slurm)", unit="cell", disable=quiet)
    while True:
        done = sum(cell_state(cell) in DONE_STATES for cell in cells)
        progress.n = done
        progress.refresh()
        live = queued_jobs()
        waiting = [c for c in cells if (r := read_submission(c)) is not None and r["job_id"] in live]
        if done == len(cells) or not waiting:
            break
        time.sleep(POLL_SECONDS)
    progress.close()
