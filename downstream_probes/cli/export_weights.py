"""``mrsuperb export-weights EXPDIR...``: the learnt SUPERB layer weights of s3prl runs as JSON and CSV."""

from __future__ import annotations

import argparse

from downstream_probes.cli._options import add_out_option

HELP = "write layer_weights.json/.csv (softmax of s3prl's learnt Featurizer weights) for training runs"


def run(args: argparse.Namespace) -> int:
    import json

    from downstream_probes.analysis.layer_weights import export_layer_weights
    from downstream_probes.tasks import upstream_identity

    for target in args.expdirs:
        path = export_layer_weights(target, out_dir=args.out, resolve_upstream=not args.no_resolve)
        record = json.loads(path.read_text(encoding="utf-8"))
        top = max(record["layers"], key=lambda layer: layer["weight"])
        print(
            f"{path}: {upstream_identity(record['upstream'], record.get('upstream_ckpt'))} / {record['task']} "
            f"at step {record['step']}, "
            f"{len(record['layers'])} layers, largest weight {top['weight']:.3f} on {top['name']}"
        )
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "expdirs", nargs="+", metavar="EXPDIR", help="s3prl experiment folders (-p) or checkpoint files"
    )
    add_out_option(parser, "write the files here (default: next to each checkpoint)", deprecated=("-o", "--out-dir"))
    parser.add_argument("--no-resolve", action="store_true", help="do not rebuild the upstream to read its layer names")
