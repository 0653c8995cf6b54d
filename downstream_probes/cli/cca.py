"""``mrsuperb cca -u NAME [-k CKPT] --corpus DIR --property mel|phone|word|glove|agwe``: PWCCA per layer.

The one-property form of ``mrsuperb analyze`` (same settings, sampling, cache and outputs, plus the property's
layer curve ``cca_<property>.png``):

=========  =====================================  ==============================================  ===========
property   view x                                 view y                                          stratified
=========  =====================================  ==============================================  ===========
mel        80 log-mel features, frame by frame    the layer's frames (500 utterances), C1..C7 too  no
phone      the layer, mean over the middle third  one-hot phone labels (<= 200 per phone)         by phone
word       the layer, mean over each word         one-hot labels of the 500 top-ranked words       by word
glove      the layer, mean over each word         the word's vector from a GloVe text file         by word
agwe       the layer, mean over each word         the word's vector from an AGWE text file         by word
=========  =====================================  ==============================================  ===========

(``mel`` keeps the reference's order: the mel features are view x.) Words missing from an embedding file are
dropped, as in the reference. Everything random is drawn from ``seed``. Writes ``cca_<property>.json``
(``{layer name: score}``), ``cca_<property>.png`` and ``provenance_cca_<property>.json`` (what was run, on what).
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from downstream_probes.cli._options import add_out_option, add_quiet_option, add_upstream_options
from upstream_mrhubert.errors import UsageError

HELP = "PWCCA of every upstream layer against mel features, phones, words or word embeddings"


def run(args: argparse.Namespace) -> int:
    from downstream_probes.analysis import analyze

    settings = analyze.AnalysisSettings(
        properties=(args.property,),
        embeddings={args.property: Path(args.embeddings)} if args.embeddings else {},
        **common_settings(args),
    )
    analyze.check_cca_settings(settings)  # before the (slow) upstream is built
    upstream = analyze.build_upstream_features(
        args.upstream, args.upstream_ckpt, args.upstream_model_config, args.state_rate
    )
    out_dir = Path(args.out) if args.out else Path("analysis") / args.upstream
    with _thread_limit(args.threads):
        result = analyze.run_cca(upstream, args.corpus, out_dir, settings)
    width = max(len(name) for name in result.scores)
    for name, score in result.scores.items():
        print(f"{name:>{width}}  {score:.4f}")
    print(f"wrote {result.json_path} and {result.plot_path}")
    return 0


def common_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``AnalysisSettings`` fields that ``cca`` and ``analyze`` take from the same options."""
    from downstream_probes.analysis.segments import SamplingSettings

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    return {
        "split": args.split,
        "seed": args.seed,
        "sampling": SamplingSettings(
            max_per_phone=args.max_per_phone,
            n_words=args.words,
            max_per_word=args.max_per_word,
            n_utterances=args.utterances,
        ),
        "alignments": Path(args.alignments) if args.alignments else None,
        "layers": args.layers.split(",") if args.layers else None,
        "stable": args.stable,
        "sign_convention": args.sign_convention,
        "state_rate": args.state_rate,
        "word_counts_split": word_counts_split(args),
        "word_list": Path(args.word_list) if args.word_list else None,
        "cnn_layers": not args.no_cnn,
        "cache_dir": Path(args.cache_dir) if args.cache_dir else None,
        "progress": not args.quiet,
        "sample_sets": args.sample_sets,
        "chance_permutations": args.chance_permutations,
    }


def word_counts_split(args: argparse.Namespace) -> str | None:
    """``--word-counts-split`` as the settings take it (``same``: rank by the analysed split's own counts)."""
    return None if args.word_counts_split == "same" else args.word_counts_split


def _thread_limit(threads: int | None) -> contextlib.AbstractContextManager:
    """Caps torch's and the BLAS libraries' threads while it is open (PWCCA's small matrix products only contend
    on a shared machine); torch's previous setting comes back afterwards."""
    stack = contextlib.ExitStack()
    if threads is None:
        return stack
    import torch
    from threadpoolctl import threadpool_limits

    stack.callback(torch.set_num_threads, torch.get_num_threads())
    torch.set_num_threads(threads)
    stack.enter_context(threadpool_limits(limits=threads))
    return stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_upstream_options(parser)
    parser.add_argument(
        "--corpus", required=True, help="LibriSpeech-style corpus with alignments/ (mrsuperb corpus asr)"
    )
    parser.add_argument("--property", required=True, help="mel, phone, word, glove or agwe")
    parser.add_argument("--embeddings", help="word embedding text file (word v1 v2 ...), for glove and agwe")
    parser.add_argument("--split", default="dev-clean", help="corpus split (default: dev-clean, as the reference)")
    parser.add_argument("--alignments", help="folder of TextGrids (default: CORPUS/alignments)")
    add_out_option(parser, "output folder (default: analysis/UPSTREAM)", deprecated=("-o", "--out-dir"))
    parser.add_argument("--layers", help="comma-separated layer names (default: every layer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling and of the CCA splits (default 0)")
    parser.add_argument(
        "--stable",
        action="store_true",
        help="drop linearly dependent dimensions first (one-hot labels: see docs/analysis.md)",
    )
    parser.add_argument(
        "--sign-convention",
        default="canonical",
        choices=["canonical", "lapack"],
        help="signs of the canonical pairs (lapack: bit-compatible with the reference, slower)",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--no-cnn", action="store_true", help="mel: leave out the waveform CNN's layers C1..C7 (Fig. 4)"
    )


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that ``cca`` and ``analyze`` share: the samples, the states, the spread and the chance levels."""
    from downstream_probes.analysis import protocol

    parser.add_argument(
        "--state-rate",
        default=protocol.DEFAULT_STATE_RATE,
        choices=protocol.STATE_RATES,
        help="20ms: every state as s3prl's featurizer weights it (lower-resolution states repeated); native: each "
        f"state at its own rate (default {protocol.DEFAULT_STATE_RATE})",
    )
    parser.add_argument(
        "--word-counts-split",
        default=protocol.DEFAULT_WORD_COUNTS_SPLIT,
        help="split(s) whose word counts rank the vocabulary: names or prefixes, comma-separated (default "
        f"{protocol.DEFAULT_WORD_COUNTS_SPLIT!r}: every train-* split, as the reference's word.lst; 'same': the "
        "analysed split)",
    )
    parser.add_argument("--word-list", help="ranked word list file, one word a line (the reference's word.lst)")
    parser.add_argument("--max-per-phone", type=int, default=200, help="segments per phone (default 200)")
    parser.add_argument("--words", type=int, default=500, help="most frequent words kept (default 500)")
    parser.add_argument("--max-per-word", type=int, default=15, help="segments per word (default 15)")
    parser.add_argument("--utterances", type=int, default=500, help="utterances for frame level (default 500)")
    parser.add_argument("--cache-dir", help="feature cache (default: $MRSUPERB_CACHE/layer_features)")
    add_quiet_option(parser)
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch and BLAS (default: the libraries' own choice; 1 is fastest on a shared machine)",
    )
    parser.add_argument(
        "--sample-sets",
        type=int,
        default=protocol.DEFAULT_SAMPLE_SETS,
        help="independent draws of the sampled segments, utterances and MI training samples, each scored; the "
        f"score is their mean, with sd and a 95%% interval (default {protocol.DEFAULT_SAMPLE_SETS}, Pasad et al.'s "
        "protocol)",
    )
    parser.add_argument(
        "--chance-permutations",
        type=int,
        default=protocol.DEFAULT_CHANCE_PERMUTATIONS,
        help="CCA chance level: protocol runs per layer with the labels/embeddings permuted (default "
        f"{protocol.DEFAULT_CHANCE_PERMUTATIONS}; 0: none)",
    )
