"""The SUPERB protocol from one call: a learning-rate x seed grid per (upstream, task), run, selected on dev.

``run_superb(SuperbOptions(...))`` (what ``mrsuperb superb`` calls) expands the grid into cells (``grid``), runs the
unfinished ones with an executor (``local``: one process per cell, ``jobs`` at a time; ``slurm``: a Slurm array
through submitit; with ``shared``, one seed's learning rates together: in this process, or one Slurm job each),
and writes ``DIR/<upstream>/<task>/protocol.json`` for every (upstream, task) (``selection``: SUPERB's rule).
Rerunning it is idempotent: finished cells are read, interrupted ones resumed, the protocol rewritten.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from downstream_probes import tasks
from downstream_probes.s3prl.protocol.grid import Cell, GridError, check_override, upstream_folder
from downstream_probes.s3prl.protocol.local import run_local
from downstream_probes.s3prl.protocol.selection import write_protocols
from downstream_probes.s3prl.protocol.shared import run_shared_groups
from downstream_probes.s3prl.protocol.slurm import run_slurm
from upstream_mrhubert.output_folder import folder_lock

EXECUTORS = ("local", "slurm")


@dataclass
class SlurmSettings:
    """What each Slurm job asks for (submitit's ``slurm_*`` parameters)."""

    partition: str | None = None
    time_min: int = 60 * 24
    gpus: int = 0
    cpus: int = 1
    mem_gb: float | None = None
    array_parallelism: int = 256
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuperbOptions:
    """What ``mrsuperb superb`` was asked for (see ``downstream_probes.cli.superb``)."""

    upstreams: Sequence[str]
    tasks: Sequence[str]
    lrs: Sequence[float]
    out: Path
    seeds: Sequence[int] = (0,)
    upstream_ckpts: Sequence[str | None] = ()
    model_config: str | None = None
    config: str | None = None
    override: str | None = None
    device: str | None = None
    executor: str = "local"
    jobs: int = 1
    shared: bool = False
    wait: bool = False
    quiet: bool = False
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


def task_root(out: Path, cell: Cell) -> Path:
    """``DIR/<upstream>/<task>``: where a (upstream, task)'s cells and its protocol.json live."""
    return Path(out) / upstream_folder(cell.identity) / cell.task


def expand_grid(options: SuperbOptions) -> list[Cell]:
    """Every cell (upstream, task, lr, seed), upstreams and tasks in the order given, then lr, then seed."""
    if options.executor not in EXECUTORS:
        raise GridError(f"--executor {options.executor!r}: choose one of {', '.join(EXECUTORS)}")
    check_override(options.override)
    ckpts = list(options.upstream_ckpts) or [None] * len(options.upstreams)
    if len(ckpts) == 1 and len(options.upstreams) > 1:
        raise GridError("-k names one checkpoint for several -u upstreams: give one -k per upstream, comma-separated")
    if len(ckpts) != len(options.upstreams):
        raise GridError(f"-k gives {len(ckpts)} checkpoints for {len(options.upstreams)} upstreams; give one each")
    unknown = [task for task in options.tasks if tasks.task_for(task) is None]
    if unknown:
        raise GridError(f"-d {','.join(unknown)}: unknown task; choose from {', '.join(tasks.TASK_NAMES)}")
    if options.config and len(options.tasks) > 1 and "{task}" not in options.config:
        raise GridError("-c with several tasks: write {task} in the path (e.g. my/{task}/config.yaml), or one -d")
    identities = [tasks.upstream_identity(u, k) for u, k in zip(options.upstreams, ckpts, strict=True)]
    if len(set(identities)) != len(identities):
        raise GridError(f"-u/-k name the same upstream twice ({', '.join(identities)})")
    cells = []
    for upstream, ckpt in zip(options.upstreams, ckpts, strict=True):
        for task_name in options.tasks:
            task = tasks.task_for(task_name).task  # type: ignore[union-attr]
            for lr in options.lrs:
                for seed in options.seeds:
                    cell = Cell(
                        upstream=upstream,
                        upstream_ckpt=str(Path(ckpt).resolve()) if ckpt and "://" not in ckpt else ckpt,
                        model_config=str(Path(options.model_config).resolve()) if options.model_config else None,
                        task=task,
                        lr=float(lr),
                        seed=int(seed),
                        folder=Path(),
                        config=str(Path(options.config.replace("{task}", task)).resolve()) if options.config else None,
                        override=options.override,
                        device=options.device,
                    )
                    folder = (task_root(options.out, cell) / cell.name).resolve()
                    cells.append(dataclasses.replace(cell, folder=folder))
    return cells


def run_superb(options: SuperbOptions) -> list[dict[str, Any]]:
    """Run the grid (what is missing of it) and write every protocol.json; returns the protocol documents.

    With the Slurm executor and without ``wait``, returns once the jobs are queued, with the protocols of what had
    finished by then.
    """
    cells = expand_grid(options)
    if options.shared and options.jobs != 1:
        raise GridError("--shared trains the seeds one after another here (or as Slurm jobs): drop --jobs")
    # one grid command at a time per folder; each cell's run holds (and checks for links) its own folder
    with folder_lock(options.out, "-p", check_links=False):
        if options.executor == "slurm":
            run_slurm(
                cells, Path(options.out), options.slurm, wait=options.wait, quiet=options.quiet, shared=options.shared
            )
        elif options.shared:
            run_shared_groups(cells, quiet=options.quiet)
        else:
            run_local(cells, jobs=options.jobs, quiet=options.quiet)
        return write_protocols(cells, lambda cell: task_root(options.out, cell))
