"""``mrsuperb prepare TASK --raw DIR --out DIR``: turn a real SUPERB dataset, as its official download unpacks, into
what s3prl's reader for TASK takes (asr: len_for_bucket/; se: 16 kHz audio and Kaldi lists; sd: Kaldi folders with
RTTMs from Libri2Mix; sf, ic, ks: checked where they lie), and print the -o overrides to train with."""

from __future__ import annotations

import argparse

from downstream_probes.cli._options import add_out_option, add_quiet_option
from downstream_probes.tasks import TASK_NAMES

HELP = "prepare a real SUPERB dataset for s3prl and print the -o overrides"


def run(args: argparse.Namespace) -> int:
    from downstream_probes.corpora.prepare import prepare
    from downstream_probes.s3prl.run_downstream import override_option

    prepared = prepare(args.task, args.raw, args.out, rttm_dir=args.rttm_dir, progress=not args.quiet)
    counts = ", ".join(f"{split} {count}" for split, count in prepared.counts.items())
    print(f"{prepared.task}: {prepared.raw} -> {prepared.out} ({counts})")
    print(f'-o "{override_option(prepared.overrides)}"')
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:

    parser.add_argument("task", choices=TASK_NAMES, help="the SUPERB task")
    parser.add_argument(
        "--raw", required=True, metavar="DIR", help="the folder the official download was unpacked into"
    )
    add_out_option(parser, "the folder for the prepared files (and prepared.json)", required=True, metavar="DIR")
    parser.add_argument(
        "--rttm-dir", default=None, help="sd: LibriMix's metadata/LibriSpeech (default: looked for under --raw)"
    )
    add_quiet_option(parser)
