"""``mrsuperb convert IN OUT``: a fairseq MR-HuBERT/HuBERT checkpoint to s3prl's converted format."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from upstream_mrhubert.convert import convert_to_s3prl

    written, s3prl_upstream = convert_to_s3prl(args.input, args.output, overwrite=args.force)
    print(f"wrote {written}; load it in s3prl with: -u {s3prl_upstream} -k {written}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a fairseq MR-HuBERT/HuBERT checkpoint to s3prl's converted format",
        description=__doc__,
    )
    parser.add_argument("input", help="fairseq checkpoint (.pt)")
    parser.add_argument("output", help="where to write the s3prl-converted checkpoint")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    parser.set_defaults(handler=run)
