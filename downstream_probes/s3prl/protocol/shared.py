"""``mrsuperb superb --shared``: the learning rates of one (upstream, task, seed) trained together, from one
upstream forward per batch.

Cells that differ only in learning rate see the same batches in the same order (same seed), so they are the heads
of one shared sweep (``downstream_probes.s3prl.shared_sweep``): each head is built from its cell's own
``run_downstream.py`` command line (its ``config.optimizer.lr`` and ``--seed``) and writes into its cell's folder
what the separate run writes; every head keeps its own random generators, so it trains exactly as its separate run
would (``tests/test_superb_protocol.py`` compares them). Each seed is its own pass over the data. The pass state
(for resuming a killed group with ``-a``) lives in ``DIR/<upstream>/<task>/shared/seed<S>/``.

What differs from separate runs: a head whose loss is not finite is stopped and recorded as diverged (a separate
s3prl run skips the step and goes on), and the upstream must not draw random numbers in eval mode (checked).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from downstream_probes import result_files, tasks
from downstream_probes.s3prl import run_downstream
from downstream_probes.s3prl.experiment import experiment_lock
from downstream_probes.s3prl.protocol.grid import (
    DIVERGED,
    DONE_STATES,
    FAILED,
    Cell,
    attempt_status,
    cell_state,
    claim_folder,
    read_cell_record,
    write_cell_record,
)
from downstream_probes.s3prl.separate_run import s3prl_process
from downstream_probes.s3prl.shared_sweep import SharedSweep

SHARED_DIR = "shared"


def shared_groups(cells: Sequence[Cell]) -> list[list[Cell]]:
    """The unfinished cells grouped by (upstream identity, task, seed), learning rates ascending."""
    groups: dict[tuple[str, str, int], list[Cell]] = {}
    for cell in cells:
        if cell_state(cell) not in DONE_STATES:
            groups.setdefault((cell.identity, cell.task, cell.seed), []).append(cell)
    return [sorted(group, key=lambda c: c.lr) for group in groups.values()]


def run_shared_group(group: Sequence[Cell]) -> None:
    """Train and test one group's cells as heads of one shared sweep, and record the attempt in each cell.json."""
    first = group[0]
    state_dir = first.folder.parent / SHARED_DIR / f"seed{first.seed}"
    records = {cell.name: claim_folder(cell) for cell in group}
    resume = (state_dir / "shared_state").is_dir()
    for cell in group:
        record = records[cell.name]
        for previous in record["attempts"]:
            if previous.get("status") == "running":
                previous["status"] = "killed"
        record["attempts"].append(
            {"action": "resume" if resume else "start", "shared": str(state_dir), "status": "running"}
        )
        write_cell_record(cell.folder, record)
    options = first.sweep_options(state_dir, resume=resume, heads=[cell.head_spec() for cell in group])
    spec = tasks.TASKS[first.task]
    run_downstream.prepare_s3prl()
    state_dir.mkdir(parents=True, exist_ok=True)
    error = None
    try:
        with contextlib.ExitStack() as locks:
            for cell in group:  # as a separate run holds its folder: no second grid run trains these cells meanwhile
                locks.enter_context(experiment_lock(cell.folder))
            shared = SharedSweep(options)
            with s3prl_process(shared.args):
                shared.start()
                shared.run(True, spec.test_split)
    except Exception as raised:  # recorded in every cell of the group; the other groups go on
        error = f"{type(raised).__name__}: {raised}"
    for cell in group:
        record = read_cell_record(cell.folder) or records[cell.name]
        results = result_files.read_results(cell.folder) or {}
        attempt = record["attempts"][-1]
        if error is not None:
            attempt["status"], attempt["error"] = FAILED, error
        elif results.get("sweep", {}).get("status") == DIVERGED:
            attempt["status"] = DIVERGED
            attempt["diverged_step"] = results["sweep"].get("diverged_step")
        else:
            attempt["status"] = attempt_status(cell)
        write_cell_record(cell.folder, record)


def run_shared_groups(cells: Sequence[Cell], quiet: bool = False) -> None:
    """Every group of unfinished cells, one after another, in this process."""
    for group in shared_groups(cells):
        if not quiet:
            print(f"shared: {group[0].identity} / {group[0].task} / seed {group[0].seed}: {[c.name for c in group]}")
        run_shared_group(group)
