"""``mrsuperb compare PATH...``: rank agreement of learnt layer weights, CCA scores and single-layer probes."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def _number(value: float | None) -> str:
    return "   -  " if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:6.3f}"


def run(args: argparse.Namespace) -> int:
    from downstream_probes.analysis.compare import compare_sources, comparison_document, find_sources, write_plots
    from upstream_mrhubert.atomic_io import write_json_atomic

    sources = find_sources(args.paths)
    comparisons = compare_sources(sources, top_k=args.top_k)
    if not comparisons:
        print("nothing to compare: no upstream has two rankings for the same task (weights, probes, CCA)")
    for c in comparisons:
        print(
            f"{c.upstream:<24} {c.task:<4} {c.a:>14} vs {c.b:<14} layers {c.layers:>3}  "
            f"rho {_number(c.spearman)}  tau {_number(c.kendall)}  top-{c.top_k} {_number(c.top_k_overlap)}"
        )
    if args.output:
        write_json_atomic(args.output, comparison_document(sources, comparisons, args.top_k))
        print(f"wrote {args.output}")
    if args.plot_dir:
        for path in write_plots(sources, Path(args.plot_dir)):
            print(f"wrote {path}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="Spearman, Kendall and top-k agreement of layer rankings (weights, CCA, single-layer probes)",
        description=__doc__,
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="folders (searched for layer_weights.json, cca_*.json, sweep.json) or such files",
    )
    parser.add_argument("-k", "--top-k", type=int, default=3, help="size of the top-layer sets compared (default 3)")
    parser.add_argument("-o", "--output", help="write the comparisons as JSON here")
    parser.add_argument("--plot-dir", help="write layer-weight heatmaps and CCA curves here")
    parser.set_defaults(handler=run)
