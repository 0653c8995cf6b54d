"""``mrsuperb compare PATH...``: rank agreement of one model's learnt layer weights, CCA scores and single-layer
probes, one block per model (upstream name plus checkpoint)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from downstream_probes.cli._options import add_option, add_out_option

HELP = "Spearman, Kendall and top-k agreement of layer rankings (weights, CCA, single-layer probes)"


def _number(value: float | None) -> str:
    return "   -  " if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:6.3f}"


def run(args: argparse.Namespace) -> int:
    from downstream_probes.analysis.compare import (
        compare_sources,
        comparison_document,
        find_sources,
        models,
        write_plots,
    )
    from upstream_mrhubert.atomic_io import write_json_atomic

    sources = find_sources(args.paths)
    comparisons = compare_sources(sources, top_k=args.top_k, common_layers=args.common_layers)
    for model in models(sources):  # one block per model; a row never mixes two models
        print(f"model {model}")
        rows = [c for c in comparisons if c.model == model]
        if not rows:
            kinds = ", ".join(sorted({s.label for s in sources if s.model == model}))
            print(f"  nothing to compare: only {kinds} (a task needs two of weights, probes, CCA)")
        for c in rows:
            print(
                f"  {c.task:<4} {c.a:>14} vs {c.b:<14} layers {c.layers:>3}  "
                f"rho {_number(c.spearman)}  tau {_number(c.kendall)}  top-{c.top_k} {_number(c.top_k_overlap)}"
            )
            if c.spearman_ci95 is not None:
                print(
                    f"  {'':<4} {'':>14}    {'':<14} {'':>10}  rho 95% [{c.spearman_ci95[0]:.2f}, {c.spearman_ci95[1]:.2f}]"
                    f"  p {_number(c.p_value)} (surrogates)  top-{c.top_k} by chance {_number(c.top_k_chance)}"
                    f"  replicates {c.replicates_a}/{c.replicates_b}"
                )
    if args.out:
        write_json_atomic(args.out, comparison_document(sources, comparisons, args.top_k))
        print(f"wrote {args.out}")
    if args.plot_dir:
        for path in write_plots(sources, comparisons, Path(args.plot_dir)):
            print(f"wrote {path}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="folders (searched for layer_weights.json, cca_*.json, sweep.json) or such files",
    )
    add_option(
        parser,
        "--top-k",
        type=int,
        default=3,
        deprecated=("-k",),
        help="size of the top-layer sets compared (default 3)",
    )
    add_out_option(parser, "write the comparisons as JSON here", deprecated=("-o", "--output"))
    parser.add_argument(
        "--common-layers",
        action="store_true",
        help="rank two sources of a model on the layers they share (default: refuse sources with different layers)",
    )
    parser.add_argument(
        "--plot-dir", help="write per model its weights, CCA and probes side by side, weight heatmaps and CCA curves"
    )
