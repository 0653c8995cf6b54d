"""The one stage runner of the project's pipelines (``make demo`` and the paper recipe).

A pipeline is a list of phases; a phase holds chains of stages; the stages of a chain run in order and a phase runs
``workers`` chains at a time. Every stage has a visible output, which ``is_done`` checks, so a pipeline killed
half-way resumes where it stopped. Commands run as subprocesses with their output in one log file per stage; a
failure names the stage and shows the log's tail.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from downstream_probes.result_files import RESULTS_FILE
from downstream_probes.tasks import TASKS
from upstream_mrhubert.errors import MrsuperbError


class StageError(MrsuperbError, RuntimeError):
    """A stage failed; the message names it and shows the tail of its log."""


@dataclass
class Stage:
    """One step with a visible output: ``is_done`` checks the output, ``run`` makes it.

    ``describe`` (optional) gives the command line, for dry runs.
    """

    name: str
    is_done: Callable[[], bool]
    run: Callable[[], None]
    describe: Callable[[], str] | None = None


@dataclass
class Phase:
    """Chains of stages; the stages of a chain run in order, chains run ``workers`` at a time."""

    name: str
    chains: list[list[Stage]]
    workers: int = 1

    @property
    def stages(self) -> list[Stage]:
        return [stage for chain in self.chains for stage in chain]


def console_script(name: str) -> str:
    """A console script of this installation: next to the running interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        f"console script {name} not found next to {sys.executable} nor on PATH; install the "
        "project into this environment (`make venv`, or `pip install -e .`)"
    )


def run_logged(
    stage: str, command: Sequence[str], log: Path, env: Mapping[str, str], error: type[Exception] = StageError
) -> None:
    """Run ``command`` with its stdout and stderr in ``log`` (the command line first); fail with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(command)}\n\n")
        handle.flush()
        status = subprocess.run(list(command), stdout=handle, stderr=subprocess.STDOUT, env=dict(env)).returncode
    if status != 0:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = "\n".join("    " + line[-200:] for line in lines[-15:])
        raise error(f"stage '{stage}' failed (exit status {status}); full log: {log}\n{tail}")


def stage_log(log_dir: Path, name: str) -> Path:
    """Where a stage's output is kept: ``log_dir/<name>.log``, spaces and slashes of the name as ``_``."""
    return log_dir / (name.replace("/", "_").replace(" ", "_") + ".log")


def command_stage(
    name: str,
    is_done: Callable[[], bool],
    command: Callable[[], list[str]],
    log_dir: Path,
    env: Mapping[str, str],
    after: Callable[[], None] | None = None,
) -> Stage:
    """A stage that runs ``command()`` (built when the stage runs) logged to ``log_dir/<name>.log``, then ``after``."""

    def run() -> None:
        run_logged(name, command(), stage_log(log_dir, name), env)
        if after is not None:
            after()

    return Stage(name, is_done, run, describe=lambda: shlex.join(command()))


def has_test_metrics(expdir: Path, task: str) -> bool:
    """True when the run's results.json holds every Table-2 metric of ``task`` on its test split."""
    try:
        results = json.loads((expdir / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    test = results.get("metrics", {}).get(results.get("test_split"), {})
    return all(metric in test for metric in TASKS[task].reported_metrics)


def subprocess_env(jobs: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of the stages' subprocesses: the cores shared among ``jobs`` parallel ones, unbuffered output."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONUNBUFFERED": "1",
        "TQDM_MININTERVAL": "5",
        **(extra or {}),
    }


def run_phases(phases: Sequence[Phase], *, desc: str, progress: bool = True) -> dict[str, float]:
    """Run every phase in order, skipping stages already done; returns the seconds spent per executed stage."""
    from tqdm import tqdm

    timings: dict[str, float] = {}
    total = sum(len(phase.stages) for phase in phases)
    with tqdm(total=total, desc=desc, unit="stage", disable=not progress, dynamic_ncols=True) as bar:

        def run_chain(chain: list[Stage]) -> None:
            for stage in chain:
                if stage.is_done():
                    bar.update(1)
                    continue
                bar.set_postfix_str(stage.name, refresh=True)
                start = time.perf_counter()
                stage.run()
                timings[stage.name] = time.perf_counter() - start
                bar.write(f"  {stage.name}: {timings[stage.name]:.0f} s")
                bar.update(1)

        for phase in phases:
            if phase.workers <= 1:
                for chain in phase.chains:
                    run_chain(chain)
                continue
            with ThreadPoolExecutor(max_workers=phase.workers, thread_name_prefix=phase.name) as pool:
                futures = [pool.submit(run_chain, chain) for chain in phase.chains]
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in done if f.exception() is not None]
                if failed:
                    for future in futures:
                        future.cancel()  # chains not started yet; running ones finish their stage
                    raise failed[0].exception()  # type: ignore[misc]
    return timings
