"""``mrsuperb profile -u NAME... [--seconds 10] [--out profile.json]``: parameters, FLOPs, CPU latency, memory."""

from __future__ import annotations

import argparse
import sys

from downstream_probes.cli._options import add_option
from upstream_mrhubert.errors import UsageError

HELP = "parameters, FLOPs, CPU latency and peak memory per second of audio, per block and resolution"
DESCRIPTION = (
    "Profile upstreams on one clip of seeded noise. A released name uses its cached checkpoint if "
    "present, otherwise random weights of its registered architecture (labelled random-init). "
    "Writes profile.json and profile.md (the Markdown table `mrsuperb leaderboard --profile` shows)."
)


def _checkpoint_pair(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-u", "--upstream", nargs="+", required=True, metavar="NAME", help="upstream names")
    add_option(
        parser,
        "-k",
        "--ckpt",
        dest="checkpoint",
        deprecated=("--checkpoint",),
        action="append",
        type=_checkpoint_pair,
        default=[],
        metavar="NAME=PATH",
        help="profile NAME with this checkpoint file (repeatable)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up (median; default 3)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice)")
    parser.add_argument(
        "--reference", help="ratios against this upstream (default mrhubert_b5a if profiled, else the first)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write profile.json here (and the Markdown table next to it, .md)")


def run(args: argparse.Namespace) -> int:
    from downstream_probes.reports.profile import profile_markdown, run_profile, write_profile

    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.reference is not None and args.reference not in args.upstream:
        raise UsageError(
            f"--reference {args.reference} is not among the profiled upstreams ({', '.join(args.upstream)})"
        )
    profile = run_profile(
        args.upstream,
        seconds=args.seconds,
        repeats=args.repeats,
        seed=args.seed,
        checkpoints=dict(args.checkpoint),
        reference=args.reference,
    )
    if args.out:
        write_profile(profile, args.out)
    sys.stdout.write(profile_markdown(profile))
    return 0
