"""The local executor: every unfinished cell in its own process, one after another or ``jobs`` at a time.

Each cell runs as ``python -m downstream_probes.s3prl.protocol.grid CELL_FOLDER`` (its output in
``CELL_FOLDER/cell.log``), so a crash or an out-of-memory in one cell leaves the others running, and the cell
processes die with the grid (``PR_SET_PDEATHSIG``), so a killed grid leaves no orphan holding a cell's lock. With
several GPUs each running cell gets its own (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from downstream_probes.s3prl.protocol.grid import DONE_STATES, Cell, cell_state, claim_folder

CELL_LOG = "cell.log"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: receive SIGKILL when the grid process dies (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def cell_command(cell: Cell) -> list[str]:
    return [sys.executable, "-m", "downstream_probes.s3prl.protocol.grid", str(cell.folder)]


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_local(cells: Sequence[Cell], jobs: int = 1, quiet: bool = False) -> dict[str, str]:
    """Run every cell not yet finished, diverged or failed; returns each run cell's final state by label."""
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: give at least 1")
    todo = [cell for cell in cells if cell_state(cell) not in DONE_STATES]
    for cell in todo:
        claim_folder(cell)
    gpus = _gpu_count() if jobs > 1 else 0
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(jobs):
        slots.put(slot)
    states: dict[str, str] = {}
    progress = tqdm(total=len(todo), desc="superb grid", unit="cell", disable=quiet)

    def run(cell: Cell) -> None:
        slot = slots.get()
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
        try:
            with (cell.folder / CELL_LOG).open("a", encoding="utf-8") as log:
                subprocess.run(
                    cell_command(cell), env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
                )
            states[cell.label] = cell_state(cell)
            progress.set_postfix_str(f"{cell.label}: {states[cell.label]}")
            progress.update(1)
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(run, cell) for cell in todo]:
            future.result()
    progress.close()
    return states
