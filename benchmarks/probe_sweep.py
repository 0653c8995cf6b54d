"""Shared probe sweep vs separate s3prl runs: wall time, peak memory, and where the shared sweep's time goes.

For IC and KS on the synthetic corpora, with a base-size random-init MR-HuBERT (``mrhubert_mono_base``: 768-dim,
4-4-4, 15 layers) written as a fairseq checkpoint, every variant trains for the same ``--steps`` per head (quick
config heads, one dev evaluation at the last step, no test evaluation):

* ``weighted sum``: one ``run_downstream.py -m train`` (s3prl's weighted-sum ``Featurizer``);
* ``single layer``: one ``run_downstream.py -m train -l D0``, standing for each run of the sequential sweep;
* ``shared``: ``probe-sweep --shared --layers all --with-weighted-sum --no-evaluate`` (15 layer heads and the
  weighted sum, one upstream forward per batch).

The sequential sweep (``probe-sweep`` without ``--shared``: 15 single-layer runs, plus the weighted-sum run) is
extrapolated as ``15 x single layer + weighted sum``: every single-layer run does the same work whichever layer it
reads. Each variant runs in its own process (wall time measured inside it, from before the run to after; peak
resident memory from ``wait4``); rounds interleave the variants (the order rotates), at 1 thread and at the
default thread count; medians are printed.

    python benchmarks/probe_sweep.py [--steps 8] [--repeats 1] [--threads 1 0] [--tasks ic ks] [--utterances 48]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

VARIANTS = ("weighted sum", "single layer", "shared")
LAYER_RUNS = 15  # the sequential sweep's single-layer runs for a 4-4-4 model


def write_base_checkpoint(path: Path, seed: int = 0) -> Path:
    """mono-base with random weights (``build_random_model``) as a fairseq checkpoint."""
    from upstream_mrhubert.architectures import architecture, build_random_model
    from upstream_mrhubert.checkpoints.io import write_fairseq_checkpoint
    from upstream_mrhubert.testing.tiny import tiny_dictionaries

    arch = architecture("mrhubert_mono_base")
    model_cfg, task_cfg = arch.model_cfg(), arch.task_cfg()
    model, _ = build_random_model(model_cfg, task_cfg, seed=seed)
    return write_fairseq_checkpoint(
        path,
        model_cfg=model_cfg,
        task_cfg=task_cfg,
        state_dict=model.state_dict(),
        dictionaries_symbols=tiny_dictionaries(model_cfg),
    )


def _override(corpus: Path, steps: int) -> str:
    from downstream_probes.corpora import api as corpora
    from downstream_probes.s3prl.run_downstream import override_option

    runner = (
        f"config.runner.total_steps={steps},,config.runner.eval_step={steps},,config.runner.save_step={steps}"
        f",,config.runner.log_step={steps},,config.runner.eval_dataloaders=['dev']"
    )
    return f"{override_option(corpora.s3prl_overrides(corpus))},,{runner}"


# ---------------------------------------------------------------------------------------------------------------
# workers (one variant, in a fresh process)


def worker(variant: str, task: str, checkpoint: str, corpus: str, steps: int, out: str) -> dict[str, Any]:
    from downstream_probes.paths import recipes_dir

    config = str(recipes_dir() / "quick" / task / "config.yaml")
    override = _override(Path(corpus), steps)
    common = ["-u", "mrhubert_local", "-k", checkpoint, "-d", task, "-c", config, "-o", override, "--device", "cpu"]
    if variant == "shared":
        from downstream_probes.s3prl.shared_plan import SharedSweepOptions
        from downstream_probes.s3prl.shared_sweep import run_shared_sweep

        options = SharedSweepOptions(
            upstream="mrhubert_local", task=task, sweep_dir=Path(out), upstream_ckpt=checkpoint, config=config,
            override=override, with_weighted_sum=True, evaluate=False, device="cpu",
        )  # fmt: skip
        start = time.perf_counter()
        _, shared = run_shared_sweep(options)
        wall = time.perf_counter() - start
        return {"wall_s": wall, "timing": dict(shared.timing), "upstream_forwards": shared.upstream_forwards}
    from downstream_probes.s3prl import run_downstream

    layer = ["-l", "D0"] if variant == "single layer" else []
    start = time.perf_counter()
    status = run_downstream.main(["-m", "train", *common, "-p", out, *layer])
    if status != 0:
        raise RuntimeError(f"run_downstream.py exited with {status}")
    return {"wall_s": time.perf_counter() - start}


def _run_worker(arguments: list[str], threads: int, script: str = __file__) -> dict[str, Any]:
    """Run ``script`` (this benchmark, or another one reusing this driver) with ``arguments`` in a fresh process."""
    environment = dict(os.environ)
    if threads:
        environment["OMP_NUM_THREADS"] = environment["MKL_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen([sys.executable, script, *arguments], stdout=stdout, stderr=stderr, env=environment)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"worker {' '.join(arguments[:3])} failed:\n{stderr.read()[-3000:]}")
        result = json.loads(stdout.read().strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024
    return result


# ---------------------------------------------------------------------------------------------------------------
# driver


def interleaved_rounds(
    variants: Sequence[str],
    repeats: int,
    threads: int,
    worker_args: Sequence[str],
    prefix: Path,
    script: str = __file__,
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` rounds of every variant, each in a fresh process of ``script`` with ``--worker VARIANT
    *worker_args OUT``; a round starts one variant later than the round before, so no variant always runs first."""
    results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    for repeat in range(repeats):
        shift = repeat % len(variants)
        for variant in [*variants[shift:], *variants[:shift]]:
            out = f"{prefix}_{repeat}_{variant.replace(' ', '_')}"
            results[variant].append(_run_worker(["--worker", variant, *worker_args, out], threads, script))
    return results


def _shares(timing: dict[str, float]) -> tuple[float, float]:
    upstream = timing.get("upstream_train", 0.0) + timing.get("upstream_evaluation", 0.0)
    heads = timing.get("heads", 0.0) + timing.get("evaluation", 0.0) - timing.get("upstream_evaluation", 0.0)
    total = upstream + heads + timing.get("data", 0.0) + timing.get("checkpoints", 0.0)
    return 100.0 * upstream / total, 100.0 * heads / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps of every head (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds per thread count (default 1)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="thread counts; 0 = torch's default")
    parser.add_argument("--tasks", nargs="+", default=["ic", "ks"], choices=["ic", "ks"])
    parser.add_argument("--utterances", type=int, default=48, help="synthetic corpus size per task (default 48)")
    parser.add_argument("--worker", nargs=6, metavar=("VARIANT", "TASK", "CKPT", "CORPUS", "STEPS", "OUT"))
    args = parser.parse_args(argv)
    if args.worker:
        variant, task, checkpoint, corpus, steps, out = args.worker
        print(json.dumps(worker(variant, task, checkpoint, corpus, int(steps), out)))
        return 0

    from downstream_probes.corpora import api as corpora

    with tempfile.TemporaryDirectory(prefix="probe_sweep_bench_") as scratch:
        root = Path(scratch)
        checkpoint = write_base_checkpoint(root / "mono_base_random.pt")
        print(f"base-size random-init MR-HuBERT: {checkpoint} ({checkpoint.stat().st_size / 2**20:.0f} MiB)")
        for task in args.tasks:
            corpus = root / f"corpus_{task}"
            corpora.build_corpus(
                task, corpus, utterances=max(args.utterances, corpora.minimum_utterances(task)), seed=0
            )
            for threads in args.threads:
                worker_args = [task, str(checkpoint), str(corpus), str(args.steps)]
                results = interleaved_rounds(VARIANTS, args.repeats, threads, worker_args, root / f"{task}_{threads}")
                _report(task, threads, args.steps, results)
    return 0


def _report(task: str, threads: int, steps: int, results: dict[str, list[dict[str, Any]]]) -> None:
    label = "default" if threads == 0 else str(threads)
    print(f"\n{task.upper()}, {steps} steps per head, threads={label}, {len(results['shared'])} round(s), medians:")
    report_shared(
        results,
        baseline="weighted sum",
        sequential=("sequential sweep (15 x single layer + weighted sum, extrapolated)", LAYER_RUNS, "single layer"),
        target=3.0,
        what="sweep",
        heads=LAYER_RUNS + 1,
    )


def report_shared(
    results: dict[str, list[dict[str, Any]]],
    *,
    baseline: str,
    sequential: tuple[str, int, str],
    target: float,
    what: str,
    heads: int,
) -> None:
    """Each variant's median wall time and peak memory, the shared pass and the extrapolated sequential one (``label,
    runs, variant``: that many runs of the variant, plus the baseline when it is not that variant) against
    ``baseline``, and where the shared pass's time goes (its median round)."""
    wall = {variant: statistics.median(r["wall_s"] for r in runs) for variant, runs in results.items()}
    peak = {variant: max(r["peak_rss_mib"] for r in runs) for variant, runs in results.items()}
    label, runs, variant_of_runs = sequential
    sequential_s = runs * wall[variant_of_runs] + (wall[baseline] if variant_of_runs != baseline else 0.0)
    width = max(map(len, wall)) + 2
    for variant in wall:
        print(f"  {variant:<{width}} {wall[variant]:8.1f} s   peak RSS {peak[variant]:7.0f} MiB")
    print(f"  {label} {sequential_s:8.1f} s")
    print(f"  shared / {baseline:<16} {wall['shared'] / wall[baseline]:6.2f}x   (target <= {target:g}x)")
    print(f"  sequential / {baseline:<12} {sequential_s / wall[baseline]:6.2f}x")
    print(f"  sequential / shared        {sequential_s / wall['shared']:6.2f}x")
    shared = results["shared"][len(results["shared"]) // 2]
    upstream_share, heads_share = _shares(shared["timing"])
    print(
        f"  shared {what}'s time: upstream {upstream_share:.0f}%, heads {heads_share:.0f}% "
        f"({shared['upstream_forwards']} upstream forwards for {heads} heads)"
    )


if __name__ == "__main__":
    sys.exit(main())
