"""SUPERB learning-rate grid: ``--shared`` (all learning rates of a seed from one upstream forward per batch) vs one
run and the sequential grid: wall time, peak memory, and where the shared grid's time goes.

IC on the synthetic corpus, a base-size random-init MR-HuBERT (``mrhubert_mono_base``: 768-dim, 4-4-4, written as a
fairseq checkpoint by ``benchmarks/probe_sweep.py``'s ``write_base_checkpoint``), the quick-config IC head, the same
``--steps`` for every cell, one dev evaluation at the last step, no test evaluation:

* ``one run``: one ``run_downstream.py -m train`` with one learning rate (a cell of the grid);
* ``shared``: the ``--lrs`` (default five) as heads of one shared pass (what ``mrsuperb superb --shared`` runs for one
  seed), each head in its own folder, one upstream forward per batch.

The sequential grid (``mrsuperb superb`` without ``--shared``) is extrapolated as ``len(lrs) x one run``: every cell
does the same work whatever its learning rate. Each variant runs in its own process (wall time inside it, peak
resident memory from ``wait4``); rounds interleave the variants, at 1 thread and at the default thread count.

    python benchmarks/superb_grid.py [--steps 8] [--repeats 1] [--threads 1 0] [--utterances 48]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from probe_sweep import _override, interleaved_rounds, report_shared, write_base_checkpoint

VARIANTS = ("one run", "shared")
LRS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def worker(variant: str, checkpoint: str, corpus: str, steps: int, out: str) -> dict[str, Any]:
    from downstream_probes.paths import recipes_dir
    from downstream_probes.s3prl.protocol.grid import LR_OVERRIDE, format_lr

    config = str(recipes_dir() / "quick" / "ic" / "config.yaml")
    override = _override(Path(corpus), steps)
    if variant == "shared":
        from downstream_probes.s3prl.shared_plan import HeadSpec, SharedSweepOptions
        from downstream_probes.s3prl.shared_sweep import run_shared_sweep

        heads = [HeadSpec(f"lr{format_lr(lr)}_seed0", None, override=f"{LR_OVERRIDE}={lr!r}") for lr in LRS]
        options = SharedSweepOptions(
            upstream="mrhubert_local", task="ic", sweep_dir=Path(out), upstream_ckpt=checkpoint, config=config,
            override=override, evaluate=False, device="cpu", heads=heads, extra_args=("--seed", "0"),
        )  # fmt: skip
        start = time.perf_counter()
        _, shared = run_shared_sweep(options)
        wall = time.perf_counter() - start
        return {"wall_s": wall, "timing": dict(shared.timing), "upstream_forwards": shared.upstream_forwards}
    from downstream_probes.s3prl import run_downstream

    argv = ["-m", "train", "-u", "mrhubert_local", "-k", checkpoint, "-d", "ic", "-c", config, "--device", "cpu",
            "-o", f"{override},,{LR_OVERRIDE}={LRS[2]!r}", "--seed", "0", "-p", out]  # fmt: skip
    start = time.perf_counter()
    if run_downstream.main(argv) != 0:
        raise RuntimeError("run_downstream.py failed")
    return {"wall_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps of every cell (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds per thread count (default 1)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="thread counts; 0 = torch's default")
    parser.add_argument("--utterances", type=int, default=48, help="synthetic IC corpus size (default 48)")
    parser.add_argument("--worker", nargs=5, metavar=("VARIANT", "CKPT", "CORPUS", "STEPS", "OUT"))
    args = parser.parse_args(argv)
    if args.worker:
        variant, checkpoint, corpus, steps, out = args.worker
        print(json.dumps(worker(variant, checkpoint, corpus, int(steps), out)))
        return 0

    from downstream_probes.corpora import api as corpora

    with tempfile.TemporaryDirectory(prefix="superb_grid_bench_") as scratch:
        root = Path(scratch)
        checkpoint = write_base_checkpoint(root / "mono_base_random.pt")
        print(f"base-size random-init MR-HuBERT: {checkpoint} ({checkpoint.stat().st_size / 2**20:.0f} MiB)")
        corpus = root / "corpus_ic"
        corpora.build_corpus("ic", corpus, utterances=max(args.utterances, corpora.minimum_utterances("ic")), seed=0)
        for threads in args.threads:
            worker_args = [str(checkpoint), str(corpus), str(args.steps)]
            results = interleaved_rounds(VARIANTS, args.repeats, threads, worker_args, root / str(threads), __file__)
            _report(threads, args.steps, results)
    return 0


def _report(threads: int, steps: int, results: dict[str, list[dict[str, Any]]]) -> None:
    label = "default" if threads == 0 else str(threads)
    print(f"\nIC, {len(LRS)} lrs x 1 seed, {steps} steps per cell, threads={label}, medians:")
    report_shared(
        results,
        baseline="one run",
        sequential=(f"sequential grid ({len(LRS)} x one run, extrapolated)", len(LRS), "one run"),
        target=1.5,
        what="grid",
        heads=len(LRS),
    )


if __name__ == "__main__":
    sys.exit(main())
