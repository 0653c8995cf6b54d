"""``mrsuperb leaderboard RUNS... --format md|csv|html [--out FILE] [--profile profile.json]``."""

from __future__ import annotations

import argparse
import sys

from downstream_probes.cli._options import add_option
from downstream_probes.reports.leaderboard import FORMATS, TABLE2_COLUMNS, write_leaderboard

HELP = "SUPERB table (paper Table 2) from results.json files"
DESCRIPTION = (
    "Rows are upstreams, columns the paper's Table 2 metrics; best per column marked, missing cells "
    "shown as '—', every cell traceable to its results.json. When several runs exist for one "
    "upstream and task: weighted-sum before single-layer probes, then the newest 'created'."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="RUNS", help="results.json files, or folders searched recursively for them"
    )
    parser.add_argument("--format", choices=FORMATS, default="md", help="output format (default: md)")
    parser.add_argument("--out", help="write here (atomically) instead of only printing")
    parser.add_argument("--profile", help="profile.json of `mrsuperb profile`, shown under the table (md, html)")
    parser.add_argument(
        "--sort",
        choices=[c.key for c in TABLE2_COLUMNS],
        help="order rows by this column, best first (default: the paper's row order)",
    )
    add_option(parser, "-q", "--quiet", action="store_true", help="with --out: do not also print the result")


def run(args: argparse.Namespace) -> int:
    text = write_leaderboard(args.runs, args.format, out=args.out, profile=args.profile, sort_by=args.sort)
    if args.out is None or not args.quiet:
        sys.stdout.write(text if args.format != "html" or args.out is None else f"wrote {args.out}\n")
    return 0
