"""``mrsuperb convert IN OUT``: a fairseq MR-HuBERT/HuBERT checkpoint to s3prl's converted format."""

from __future__ import annotations

import argparse

HELP = "convert a fairseq MR-HuBERT/HuBERT checkpoint to s3prl's converted format"


def run(args: argparse.Namespace) -> int:
    from upstream_mrhubert.convert import convert_to_s3prl

    written, s3prl_upstream = convert_to_s3prl(args.input, args.output, overwrite=args.force)
    print(f"wrote {written}; load it in s3prl with: -u {s3prl_upstream} -k {written}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="fairseq checkpoint (.pt)")
    parser.add_argument("output", help="where to write the s3prl-converted checkpoint")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
