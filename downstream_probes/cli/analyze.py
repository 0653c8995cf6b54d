"""``mrsuperb analyze -u NAME [-k CKPT] --corpus DIR [--properties ...] --out DIR``: the whole layer-wise analysis.

Every property of arXiv 2410.23955 Fig. 3 and 4 (CCA mel with the CNN's C1..C7, phone, word, GloVe, AGWE; MI
phone and word; spoken STS) from one pass of the upstream over the corpus; see docs/analysis.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from downstream_probes.cli._options import add_upstream_options
from downstream_probes.cli.cca import _thread_limit, add_common_arguments, common_settings
from upstream_mrhubert.errors import UsageError

HELP = "the whole layer-wise analysis (CCA, MI, spoken STS per layer) from one pass of the upstream"


def _pairs(value: str | None, option: str, convert) -> dict:
    """``a=1,b=2`` as a dict (values converted); one clear error otherwise."""
    result = {}
    for item in (part.strip() for part in (value or "").split(",") if part.strip()):
        key, sep, text = item.partition("=")
        if not sep or not key or not text:
            raise UsageError(f"{option}: {item!r} is not NAME=VALUE (e.g. {option} phone=50,word=200)")
        try:
            result[key.strip()] = convert(text.strip())
        except ValueError:
            raise UsageError(f"{option}: bad value {text!r} for {key!r}") from None
    return result


def _range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    return (int(low), int(high)) if sep else (int(low), int(low))


def run(args: argparse.Namespace) -> int:
    from downstream_probes.analysis import analyze

    settings = analyze.AnalysisSettings(
        properties=tuple(p.strip() for p in args.properties.split(",") if p.strip()),
        embeddings={k: Path(v) for k, v in _pairs(args.embeddings, "--embeddings", str).items()},
        mi_train_split=args.mi_train_split,
        mi_clusters=_pairs(args.mi_clusters, "--mi-clusters", int),
        mi_train_per_label=_pairs(args.mi_train_per_label, "--mi-train-per-label", _range),
        mi_running_bounds=not args.mi_per_label_bounds,
        mi_n_init=args.mi_n_init,
        sts_corpus=Path(args.sts_corpus) if args.sts_corpus else None,
        **common_settings(args),
    )
    analyze.check_settings(settings)  # before the (slow) upstream is built
    upstream = analyze.build_upstream_features(
        args.upstream, args.upstream_ckpt, args.upstream_model_config, args.state_rate
    )
    with _thread_limit(args.threads):
        result = analyze.run_analysis(upstream, args.corpus, Path(args.out), settings)
    for name, scores in result.scores.items():
        best = max(scores, key=scores.__getitem__)
        print(f"{name:>10}: {len(scores)} layers, highest {best} {scores[best]:.4f}  ({result.paths[name]})")
    print(f"figure: {result.figure}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from downstream_probes.analysis.protocol import DEFAULT_MI_TRAIN_SPLIT, DEFAULT_SPLIT, PROPERTIES

    add_upstream_options(parser)
    parser.add_argument("--corpus", help="LibriSpeech-style corpus with alignments/ (mrsuperb corpus asr)")
    parser.add_argument(
        "--properties",
        default=",".join(p for p in PROPERTIES if p not in ("glove", "agwe", "sts")),
        help=f"comma-separated, among {','.join(PROPERTIES)} (default: those that need no extra file)",
    )
    parser.add_argument("--embeddings", help="glove=FILE,agwe=FILE: word embedding text files (word v1 v2 ...)")
    parser.add_argument("--sts-corpus", help="spoken STS corpus folder (sts.jsonl + audio; mrsuperb corpus sts)")
    parser.add_argument("--split", default=DEFAULT_SPLIT, help=f"analysed split (default {DEFAULT_SPLIT})")
    parser.add_argument("--alignments", help="folder of TextGrids (default: CORPUS/alignments)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--layers", help="comma-separated layer names (default: every layer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    parser.add_argument("--stable", action="store_true", help="PWCCA: drop linearly dependent dimensions first")
    parser.add_argument(
        "--sign-convention",
        default="canonical",
        choices=["canonical", "lapack"],
        help="PWCCA: signs of the canonical pairs (lapack: bit-compatible with the reference, slower)",
    )
    parser.add_argument(
        "--mi-train-split",
        default=DEFAULT_MI_TRAIN_SPLIT,
        help=f"MI: split(s) whose pooled segments the k-means is fitted on (default {DEFAULT_MI_TRAIN_SPLIT!r}: "
        "train-clean-100 + train-clean-360, as the reference)",
    )
    parser.add_argument(
        "--mi-clusters", help="MI: k per span, e.g. phone=50,word=200 (default: the reference's 500 and 5000)"
    )
    parser.add_argument(
        "--mi-train-per-label",
        help="MI: training segments per label as LOW:HIGH, e.g. phone=3000:7000,word=600:1200 (the defaults)",
    )
    parser.add_argument("--no-cnn", action="store_true", help="mel: leave out the waveform CNN's C1..C7")
    parser.add_argument(
        "--mi-n-init",
        type=int,
        help="MI: k-means initialisations (default 3, the reference's; 1 is ~2.5x faster but not inside the "
        "reference's seed spread on every layer, see docs/analysis.md)",
    )
    parser.add_argument(
        "--mi-per-label-bounds",
        action="store_true",
        help="MI: cap each label's LOW:HIGH by its own count only (default: the reference's running minimum, where "
        "a label with fewer segments lowers the bounds of every later one)",
    )
    add_common_arguments(parser)
