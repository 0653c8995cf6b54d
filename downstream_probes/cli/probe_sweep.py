"""``mrsuperb probe-sweep -u NAME -d TASK``: one single-layer SUPERB probe per upstream layer, in one sweep JSON.

Without ``--shared``, each layer is its own ``run_downstream.py`` training (and test evaluation), one after the
other. With ``--shared``, every layer's probe (and, with ``--with-weighted-sum``, the weighted-sum probe) is trained
in one process from one upstream forward per batch, each head exactly as its separate run would train it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from downstream_probes.cli._options import (
    add_out_option,
    add_override_option,
    add_resume_option,
    add_upstream_options,
    comma_list,
    same_named,
)
from downstream_probes.tasks import TASK_NAMES
from upstream_mrhubert.errors import UsageError

HELP = "train one single-layer probe per upstream layer and record each layer's result"


def _layers(value: str | None) -> list[str] | None:
    if value is None or value == "all":
        return None
    return comma_list(value)


def _common_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments the sequential and the shared sweep take alike."""
    return {
        "upstream": args.upstream,
        "task": args.downstream,
        "upstream_ckpt": args.upstream_ckpt,
        "model_config": args.upstream_model_config,
        "layers": _layers(args.layers),
        "evaluate": not args.no_evaluate,
        **same_named(args, "config", "override", "device"),
    }


def run_sequential(args: argparse.Namespace) -> dict:
    from downstream_probes.s3prl.sweep import sweep

    return sweep(sweep_dir=args.out, **_common_options(args))


def run_shared(args: argparse.Namespace) -> dict:
    from downstream_probes.s3prl.shared_plan import SharedSweepOptions
    from downstream_probes.s3prl.shared_sweep import is_leader, run_shared_sweep

    document, shared = run_shared_sweep(
        SharedSweepOptions(
            sweep_dir=Path(args.out),
            with_weighted_sum=args.with_weighted_sum,
            max_heads_per_pass=args.max_heads_per_pass,
            resume=args.auto_resume,
            cache_features=Path(args.cache_features) if args.cache_features else None,
            **_common_options(args),
        )
    )
    if is_leader():
        print(shared.describe_timing())
    return document


def run(args: argparse.Namespace) -> int:
    from downstream_probes.result_files import SWEEP_FILE
    from downstream_probes.s3prl.shared_sweep import is_leader

    if not args.shared:
        for option, given in (
            ("--with-weighted-sum", args.with_weighted_sum),
            ("--max-heads-per-pass", args.max_heads_per_pass is not None),
            ("--cache-features", args.cache_features is not None),
            ("-a", args.auto_resume),
        ):
            if given:
                raise UsageError(f"{option} needs --shared (the sequential sweep resumes by itself)")
    document = run_shared(args) if args.shared else run_sequential(args)
    if not is_leader():
        return 0  # under torchrun the leader reports (and wrote the files)
    split = document["test_split"] if not args.no_evaluate else None
    entries = [*document["layers"], *([document["weighted_sum"]] if "weighted_sum" in document else [])]
    for entry in entries:
        metrics = entry["metrics"].get(split) if split else next(iter(entry["metrics"].values()), {})
        status = f"  ({entry['status']})" if entry.get("status", "finished") != "finished" else ""
        print(f"{entry['name']:>12}  {metrics}{status}")
    print(f"wrote {args.out}/{SWEEP_FILE}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_upstream_options(parser)
    parser.add_argument("-d", "--downstream", required=True, help=f"task: one of {', '.join(TASK_NAMES)}")
    parser.add_argument("-c", "--config", help="downstream config (default: recipes/superb/TASK/config.yaml)")
    add_override_option(parser)
    add_out_option(
        parser,
        "folder for the per-layer runs and sweep.json",
        required=True,
        short="-p",
        deprecated=("--sweep_dir", "--sweep-dir"),
        metavar="DIR",
    )
    parser.add_argument("--layers", help="comma-separated layer names, or all (default: every layer)")
    parser.add_argument("--no-evaluate", action="store_true", help="train only; skip the test-split evaluation")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available, else cpu)")
    shared = parser.add_argument_group("shared sweep (one process, one upstream forward per batch for all heads)")
    shared.add_argument("--shared", action="store_true", help="train every head in one process")
    shared.add_argument("--with-weighted-sum", action="store_true", help="add the weighted-sum head (weighted_sum/)")
    shared.add_argument(
        "--max-heads-per-pass",
        type=int,
        metavar="N",
        help="train at most N heads at once (more passes, less memory; default: all heads in one pass)",
    )
    shared.add_argument(
        "--cache-features",
        metavar="DIR",
        help="extract every layer of every utterance once into DIR (fp16, memory-mapped) and train from it",
    )
    add_resume_option(shared, "resume a killed shared sweep from its last checkpoint")
