"""``mrsuperb probe-sweep -u NAME -d TASK``: one single-layer SUPERB probe per upstream layer, in one sweep JSON."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from downstream_probes.s3prl.sweep import sweep
    from downstream_probes.tasks import SWEEP_FILE

    document = sweep(
        upstream=args.upstream,
        task=args.downstream,
        sweep_dir=args.sweep_dir,
        upstream_ckpt=args.upstream_ckpt,
        model_config=args.upstream_model_config,
        config=args.config,
        override=args.override,
        layers=args.layers.split(",") if args.layers else None,
        evaluate=not args.no_evaluate,
        device=args.device,
    )
    split = document["test_split"] if not args.no_evaluate else None
    for layer in document["layers"]:
        metrics = layer["metrics"].get(split) if split else next(iter(layer["metrics"].values()), {})
        print(f"{layer['name']:>6}  {metrics}")
    print(f"wrote {args.sweep_dir}/{SWEEP_FILE}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "probe-sweep",
        help="train one single-layer probe per upstream layer and record each layer's result",
        description=__doc__,
    )
    parser.add_argument("-u", "--upstream", required=True, help="upstream name (see `mrsuperb upstreams`)")
    parser.add_argument("-d", "--downstream", required=True, help="task: asr, sf, ic, ks, se or sd")
    parser.add_argument("-k", "--upstream_ckpt", help="checkpoint for the upstream (s3prl's -k)")
    parser.add_argument("-g", "--upstream_model_config", help="upstream options file (s3prl's -g)")
    parser.add_argument("-c", "--config", help="downstream config (default: recipes/superb/TASK/config.yaml)")
    parser.add_argument("-o", "--override", help='s3prl overrides, e.g. "config.downstream_expert.datarc.x=..."')
    parser.add_argument("-p", "--sweep_dir", required=True, help="folder for the per-layer runs and sweep.json")
    parser.add_argument("--layers", help="comma-separated layer names (default: every layer)")
    parser.add_argument("--no-evaluate", action="store_true", help="train only; skip the test-split evaluation")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    parser.set_defaults(handler=run)
