"""``mrsuperb pretrain --config RECIPE --corpus DIR --out DIR [--max-steps N] [-a]``: MR-HuBERT masked prediction.

Runs alone or under ``torchrun --nproc_per_node N -m downstream_probes.cli pretrain ...`` (DDP); the code is in
:mod:`upstream_mrhubert.pretraining`, see docs/pretraining.md.
"""

from __future__ import annotations

import argparse

from downstream_probes.cli._options import add_quiet_option, add_resume_option
from upstream_mrhubert.errors import UsageError

HELP = "pretrain MR-HuBERT (HuBERT-style masked prediction) on a corpus, with the paper's ablations"


def run(args: argparse.Namespace) -> int:
    from upstream_mrhubert.pretraining.config import load_recipe
    from upstream_mrhubert.pretraining.trainer import train

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: give at least 1")
        import torch

        torch.set_num_threads(args.threads)
    config = load_recipe(args.config)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise UsageError(f"--max-steps {args.max_steps}: give at least 1")
        config = config.with_overrides(optim={"max_steps": args.max_steps})
    results = train(
        config,
        args.corpus,
        args.out,
        resume=args.auto_resume,
        recipe=str(args.config),
        device=args.device,
        progress=not args.quiet,
    )
    last = results["history"][-1] if results["history"] else {}
    valid = results["valid_history"][-1] if results["valid_history"] else {}
    if last:
        print(
            f"step {results['steps_done']}: train loss {last['loss']:.3f} bits, masked accuracy {last['acc_m_0']:.3f}"
        )
    if valid:
        print(
            f"valid loss {valid['loss']:.3f} bits, masked accuracy {valid['acc_m_0']:.3f} "
            f"(majority-cluster baseline {results['targets']['majority_baseline_valid']:.3f})"
        )
    print(f"checkpoints in {args.out}/checkpoints, results in {args.out}/results.json")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="recipe YAML, e.g. recipes/pretrain/toy_mono_base.yaml")
    parser.add_argument("--corpus", required=True, help="folder with LibriSpeech/<split>/ (mrsuperb corpus asr)")
    parser.add_argument("--out", required=True, help="the run's folder (results.json, checkpoints/, tensorboard/)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="override optim.max_steps (the run's length and its schedule's)"
    )
    add_resume_option(parser, "resume the run in --out from its last save")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per process (default: torch's). On a machine shared with other jobs use 1: see "
        "docs/pretraining.md (2 threads were 15x slower than 1 under load)",
    )
    add_quiet_option(parser)
