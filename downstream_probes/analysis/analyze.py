"""The paper's whole layer-wise analysis (arXiv 2410.23955 Fig. 3 and 4) from one pass of an upstream per corpus.

Properties (``PROPERTIES``) and what each compares, per layer:

===========  =============================================================================================
``mel``      PWCCA: 80 log-mel features (view x) vs the layer's frames (500 utterances); also the waveform
             CNN's layers C1..C7 against mel frames matched to their receptive field and stride (Fig. 4)
``phone``    PWCCA: the layer mean-pooled over the middle third of each phone vs one-hot phones (<= 200 each)
``word``     PWCCA: the layer mean-pooled over each word vs one-hot words (the 500 top-ranked words, <= 15 each)
``glove``    PWCCA: as ``word``, vs the word's vector from a GloVe text file (words missing from it dropped)
``agwe``     PWCCA: as ``word``, vs the word's acoustically grounded word embedding (AGWE) from a text file
``mi_phone`` MI: k-means (500 clusters) of a TRAINING split's pooled phones; I(cluster; phone) / H(phone) on
             the analysed split's phone sample
``mi_word``  MI: the same with 5000 clusters, for the words of the word sample
``sts``      spoken STS: Spearman's rho of the mean (over 4 x 4 speaker combinations) cosine of mean-pooled
             utterance vectors against the human similarity of each sentence pair
===========  =============================================================================================

The analysed split's utterances go through the upstream ONCE for every property (segments, frames and CNN layers
kept together in one cache entry); the MI training sample and the STS corpus each get their own pass. Outputs in
``out_dir``: ``cca_<property>.json``, ``mi_<span>.json``, ``sts.json`` (each ``{layer: score}``), beside each a
``provenance_<that name>.json`` (upstream identity, corpus fingerprint, seed, sign convention, state rate, sample
counts, versions), and ``analysis.png`` (Fig. 3's panels, plus Fig. 4's frame-level panel).

Sample sets (``AnalysisSettings.sample_sets``, default 3 as Pasad et al.): independent draws of every sample (phone
and word segments, frame-level utterances, MI training segments); their union is extracted once and each set reads
its rows from the cache entry. A score is the mean over the sets; the provenance adds its spread and its chance
level (:mod:`downstream_probes.analysis.uncertainty`). Set 0 is the draw of a one-set run, so ``sample_sets=1``
reproduces the numbers written before sample sets existed.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from downstream_probes.analysis import extraction, mutual_info, segments, uncertainty
from downstream_probes.analysis.embeddings import read_embeddings
from downstream_probes.analysis.mel import HOP
from downstream_probes.analysis.plots import figure_uncertainty, plot_analysis_figure, plot_cca_curves, save_figure
from downstream_probes.analysis.protocol import (
    CCA_PROPERTIES,
    DEFAULT_CHANCE_PERMUTATIONS,
    DEFAULT_MI_TRAIN_SPLIT,
    DEFAULT_SAMPLE_SETS,
    DEFAULT_SPLIT,
    DEFAULT_STATE_RATE,
    DEFAULT_WORD_COUNTS_SPLIT,
    EMBEDDING_PROPERTIES,
    MI_PROPERTIES,
    PROPERTIES,
    STATE_RATES,
)
from downstream_probes.analysis.pwcca import cca_protocol, cca_score
from downstream_probes.analysis.sts import pair_similarities, read_spoken_sts
from downstream_probes.progress import progress_bar
from downstream_probes.s3prl.plugins import build_hub_upstream
from downstream_probes.tasks import upstream_identity
from upstream_mrhubert import hub, provenance
from upstream_mrhubert.atomic_io import write_json_atomic
from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.errors import MrsuperbError
from upstream_mrhubert.output_folder import file_sha256

ANALYSIS_SCHEMA = "mrsuperb.analysis/1"
MI_CHANCE_PERMUTATIONS = 200  # permuted cluster assignments per layer (cheap: no clustering)
STS_RESAMPLES = 1000  # bootstrap resamples and permutations of the STS pairs
PHONE_BASED = ("phone", "mi_phone")
WORD_BASED = ("word", "glove", "agwe", "mi_word")
FIGURE = "analysis.png"
ANALYSIS_PACKAGES = ("mrsuperb", "numpy", "scipy", "scikit-learn", "torch", "s3prl")


class AnalysisError(MrsuperbError, ValueError):
    """An analysis that cannot go ahead as asked (unknown property or layer, missing file or corpus)."""


@dataclass
class AnalysisSettings:
    """Everything of a run besides the upstream and the corpus; the defaults are the reference's protocol."""

    properties: Sequence[str] = ("phone", "word")
    split: str = DEFAULT_SPLIT
    seed: int = 0
    sampling: segments.SamplingSettings = field(default_factory=segments.SamplingSettings)
    embeddings: dict[str, Path] = field(default_factory=dict)
    alignments: Path | None = None
    layers: Sequence[str] | None = None
    stable: bool = False
    sign_convention: str = "canonical"
    state_rate: str = DEFAULT_STATE_RATE
    word_counts_split: str | None = DEFAULT_WORD_COUNTS_SPLIT
    word_list: Path | None = None
    mi_train_split: str = DEFAULT_MI_TRAIN_SPLIT
    mi_clusters: dict[str, int] = field(default_factory=dict)  # span -> k, overriding the reference's
    mi_train_per_label: dict[str, tuple[int, int]] = field(default_factory=dict)
    # the reference's running minimum of the per-label bounds (see segments.sample_training_segments)
    mi_running_bounds: bool = True
    # k-means initialisations (None: the reference's 3; 1 is ~2.5x faster, see docs/analysis.md for its spread)
    mi_n_init: int | None = None
    sts_corpus: Path | None = None
    cnn_layers: bool = True
    cache_dir: Path | None = None
    progress: bool = True
    # independent draws of the sampled segments, utterances and MI training samples (Pasad et al. 2023: 3)
    sample_sets: int = DEFAULT_SAMPLE_SETS
    # CCA chance level: protocol runs with the label/embedding rows permuted (0: none)
    chance_permutations: int = DEFAULT_CHANCE_PERMUTATIONS


@dataclass
class UpstreamFeatures:
    """What an analysis needs from an upstream: its states per utterance, its CNN layers (or None) and its
    identity (name, checkpoint, digest, options: recorded in the cache key and the provenance)."""

    states: extraction.Extractor
    cnn: extraction.Extractor | None
    identity: dict[str, Any]


@dataclass
class AnalysisResult:
    scores: dict[str, dict[str, float]]  # output name (cca_phone, mi_word, sts) -> {layer: score}
    paths: dict[str, Path]
    figure: Path | None
    provenance: dict[str, dict[str, Any]]


def check_settings(settings: AnalysisSettings) -> None:
    """Fail early (before the upstream is built) on what can be checked without it."""
    unknown = [p for p in settings.properties if p not in PROPERTIES]
    if unknown or not settings.properties:
        raise AnalysisError(f"unknown property {unknown[0] if unknown else ''!r}; choose among {', '.join(PROPERTIES)}")
    for prop in EMBEDDING_PROPERTIES:
        if prop in settings.properties and prop not in settings.embeddings:
            raise AnalysisError(
                f"property {prop} needs a word-embedding file (a text file of 'word v1 v2 ...' lines): "
                f"--embeddings {prop}=FILE (analyze) or --embeddings FILE (cca)"
            )
    if "sts" in settings.properties and settings.sts_corpus is None:
        raise AnalysisError("property sts needs --sts-corpus DIR (a spoken STS corpus: `mrsuperb corpus sts`)")
    if settings.mi_n_init is not None and settings.mi_n_init < 1:
        raise AnalysisError(f"--mi-n-init must be at least 1, got {settings.mi_n_init}")
    if settings.sample_sets < 1 or settings.chance_permutations < 0:
        raise AnalysisError(
            f"--sample-sets must be at least 1 (got {settings.sample_sets}) and --chance-permutations at least 0 "
            f"(got {settings.chance_permutations})"
        )
    if settings.seed < 0:
        raise AnalysisError(f"--seed {settings.seed}: give 0 or more (NumPy's seeds are non-negative)")
    options = {"max_per_phone": "--max-per-phone", "n_words": "--words", "max_per_word": "--max-per-word"}
    for name, value in asdict(settings.sampling).items():
        if value < 1:
            option = options.get(name, "--utterances")
            raise AnalysisError(f"{option} {value}: give at least 1 (sampling.{name})")
    if settings.state_rate not in STATE_RATES:
        raise AnalysisError(f"unknown state rate {settings.state_rate!r}; choose one of {', '.join(STATE_RATES)}")
    bad = [s for s in settings.mi_clusters if s not in ("phone", "word")]
    if bad:
        raise AnalysisError(f"--mi-clusters: unknown span {bad[0]!r}; use phone=K,word=K")
    for span, (low, high) in settings.mi_train_per_label.items():
        if span not in ("phone", "word") or not 1 <= low <= high:
            raise AnalysisError(
                f"--mi-train-per-label: {span}={low}:{high} is not a span (phone, word) with 1 <= LOW <= HIGH"
            )


def run_analysis(
    upstream: UpstreamFeatures,
    corpus: str | Path | None,
    out_dir: str | Path,
    settings: AnalysisSettings,
    *,
    figure: bool = True,
) -> AnalysisResult:
    """Score every layer (or ``settings.layers``) for every property and write the outputs into ``out_dir``
    (with ``figure``, also :data:`FIGURE`)."""
    check_settings(settings)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():  # found before the analysis, not after it
        raise AnalysisError(f"--out {out_dir} is a file; give a folder (it is created if missing)")
    cache_dir = settings.cache_dir or extraction.default_cache_dir()
    props = list(dict.fromkeys(settings.properties))
    scores: dict[str, dict[str, float]] = {}
    records: dict[str, dict[str, Any]] = {}
    corpus_props = [p for p in props if p != "sts"]
    if corpus_props:
        if corpus is None:
            raise AnalysisError(f"properties {', '.join(corpus_props)} need --corpus DIR")
        _corpus_analyses(upstream, Path(corpus), corpus_props, settings, cache_dir, scores, records)
    if "sts" in props:
        _sts_analysis(upstream, Path(settings.sts_corpus or ""), settings, cache_dir, scores, records)

    paths, provenance = {}, {}
    common = _common_provenance(upstream, settings)
    for name, layer_scores in scores.items():
        paths[name] = write_json_atomic(out_dir / f"{name}.json", layer_scores)
        provenance[name] = {**common, "output": name, **records[name], "scores": layer_scores}
        write_json_atomic(out_dir / f"provenance_{name}.json", provenance[name])
    figure_path = None
    if figure and scores:
        label = _label(upstream.identity)
        bands, chance = figure_uncertainty(provenance)
        figure_path = save_figure(
            plot_analysis_figure({label: scores}, bands={label: bands}, chance={label: chance}), out_dir / FIGURE
        )
    return AnalysisResult(scores, paths, figure_path, provenance)


def output_name(prop: str) -> str:
    """The file stem a property's scores are written under (``cca_phone``, ``mi_word``, ``sts``)."""
    return prop if prop.startswith("mi_") or prop == "sts" else f"cca_{prop}"


# --------------------------------------------------------------------------------------------- the analysed split


def _corpus_analyses(upstream, corpus, props, settings, cache_dir, scores, records) -> None:
    utterances = segments.list_utterances(
        corpus, settings.split, settings.alignments, need_alignments=any(p != "mel" for p in props)
    )
    base = {
        "upstream": upstream.identity,
        "state_rate": settings.state_rate,
        "corpus": str(corpus.resolve()),
        "split": settings.split,
        "seed": settings.seed,
        "sampling": asdict(settings.sampling),
    }
    spans: dict[str, Sequence[segments.Segment]] = {}
    set_rows: dict[str, list[np.ndarray]] = {}  # span -> each sample set's rows of spans[span]
    word_order: list[str] = []  # the sampled words in rank order
    ranking_source = None
    n_sets = settings.sample_sets
    if any(p in PHONE_BASED for p in props):
        phones = segments.read_segments(utterances, "phones")
        spans["phone"], set_rows["phone"] = _sample_sets(
            n_sets, settings.seed, 1, lambda rng: segments.sample_phones(phones, rng, settings.sampling.max_per_phone)
        )
        if not spans["phone"]:
            raise AnalysisError(f"the alignments of split {settings.split!r} hold no labelled phones")
    if any(p in WORD_BASED for p in props):  # the ranking (training alignments) only when words are analysed
        ranking, ranking_source = _word_ranking(corpus, settings)
        words = segments.read_segments(utterances, "words")
        spans["word"], set_rows["word"] = _sample_sets(
            n_sets,
            settings.seed,
            2,
            lambda rng: segments.sample_words(
                words, rng, settings.sampling.n_words, settings.sampling.max_per_word, ranking
            ),
        )
        if not spans["word"]:
            raise AnalysisError(f"split {settings.split!r} holds none of the ranked words ({ranking_source})")
        sampled = {s.label for s in spans["word"]}
        word_order = [w for w in (ranking or segments.rank_words(s.label for s in words)) if w in sampled]
    chosen: list[int] = []
    chosen_sets: list[np.ndarray] = []
    if "mel" in props:
        chosen_sets = [
            segments.sample_utterances(len(utterances), _set_rng(settings.seed, 3, s), settings.sampling.n_utterances)
            for s in range(n_sets)
        ]
        chosen = sorted(set(np.concatenate(chosen_sets).tolist()))
    cnn = upstream.cnn if "mel" in props and settings.cnn_layers else None
    read = sorted({s.utterance for kind in spans.values() for s in kind} | set(chosen))
    base["files"] = extraction.corpus_fingerprint(utterances, corpus, read)
    description = {
        **base,
        "kind": "analysis",
        "word_ranking": ranking_source,
        "spans": sorted(spans),
        "frames": bool(chosen),
        "cnn": cnn is not None,
        **({"sample_sets": n_sets} if n_sets > 1 else {}),
    }
    cached = extraction.extract_layers(
        cache_dir,
        description,
        upstream.states,
        utterances,
        spans=spans,
        frame_utterances=chosen,
        cnn=cnn,
        progress=settings.progress,
        description=f"extracting {settings.split}",
    )
    layer_names = _chosen_layers(cached.layer_names, settings.layers)
    fingerprint = base["files"]
    shared = {
        "corpus": base["corpus"],
        "split": settings.split,
        "corpus_fingerprint": fingerprint,
        "cache_entry": str(cached.folder),
        "word_ranking": ranking_source,
        "layer_strides": dict(zip(cached.layer_names, cached.meta["strides"], strict=True)),
    }

    frame_sets = _frame_sets(cached, utterances, chosen, chosen_sets) if chosen else None
    for prop in (p for p in props if p in CCA_PROPERTIES):
        views = _cca_views(prop, cached, settings, set_rows, frame_sets)
        names = (cached.cnn_names if prop == "mel" else []) + layer_names
        layer_scores, samples, trials, null = {}, {}, {}, {}
        for name in progress_bar(names, settings.progress, f"CCA {prop}", "layer"):
            trials[name], samples[name] = cca_sample_set_scores(views, name, settings)
            layer_scores[name] = float(np.mean([np.mean(t) for t in trials[name]]))
            null[name] = cca_chance_scores(views, name, settings)
        scores[output_name(prop)] = layer_scores
        records[output_name(prop)] = {
            **shared,
            "property": prop,
            "samples_per_layer": samples,
            "embeddings": str(settings.embeddings[prop]) if prop in settings.embeddings else None,
            **_uncertainty_record({k: [float(np.mean(t)) for t in v] for k, v in trials.items()}, null, n_sets),
            "trial_scores": trials,
            "chance_method": uncertainty.CCA_CHANCE,
        }

    mi_props = [p for p in props if p in MI_PROPERTIES]
    if mi_props:
        _mi_analyses(
            upstream,
            corpus,
            mi_props,
            cached,
            layer_names,
            settings,
            cache_dir,
            shared,
            scores,
            records,
            set_rows,
            word_order,
        )


def _word_ranking(corpus: Path, settings: AnalysisSettings) -> tuple[list[str] | None, str]:
    """The ranked vocabulary the word sample draws from, and where it came from (for the provenance)."""
    if settings.word_list is not None:
        return segments.read_word_list(settings.word_list), f"word list {settings.word_list}"
    if settings.word_counts_split is None:
        return None, f"counts in {settings.split}"
    splits = segments.resolve_splits(corpus, settings.word_counts_split, settings.alignments)
    labels: list[str] = []
    for split in splits:
        labels += segments.read_alignment_labels(segments.alignment_folder(corpus, split, settings.alignments), "words")
    return segments.rank_words(labels), f"counts in {'+'.join(splits)}"


def _set_rng(seed: int, stream: int, sample_set: int) -> np.random.Generator:
    """The generator of one draw: sample set 0 keeps the single-set stream (``[seed, stream]``), so that one
    sample set reproduces the numbers written before sample sets existed."""
    return np.random.default_rng([seed, stream] if sample_set == 0 else [seed, stream, sample_set])


def _sample_sets(
    n_sets: int, seed: int, stream: int, draw: Callable[[np.random.Generator], list[segments.Segment]]
) -> tuple[list[segments.Segment], list[np.ndarray]]:
    """``n_sets`` independent draws, as one list of distinct segments (in the samplers' order) and each draw's
    rows of it: the union is extracted once, each sample set reads its rows from the cache."""
    return _union([draw(_set_rng(seed, stream, s)) for s in range(n_sets)])


def _union(draws: list[list[segments.Segment]]) -> tuple[list[segments.Segment], list[np.ndarray]]:
    """The distinct segments of several draws (in the samplers' order) and each draw's rows of them."""
    if len(draws) == 1:
        return draws[0], [np.arange(len(draws[0]))]
    union = sorted(set().union(*draws), key=lambda s: (s.utterance, s.start, s.label, s.end))
    row = {segment: index for index, segment in enumerate(union)}
    return union, [np.array([row[segment] for segment in chosen], dtype=np.int64) for chosen in draws]


def _frame_sets(
    cached: extraction.CachedLayers,
    utterances: Sequence[segments.Utterance],
    chosen: list[int],
    chosen_sets: list[np.ndarray],
) -> Callable[[np.ndarray, int], np.ndarray | None] | None:
    """Which cached frames belong to a sample set: ``rows(mel_index, s)`` gives the set's rows of a layer from the
    layer's mel rows (None: every row, with one set). The cache keeps the union's mel frames utterance after
    utterance (in index order), ``1 + samples // 160`` each."""
    if len(chosen_sets) == 1:
        return None
    import soundfile

    lengths = [1 + soundfile.info(str(utterances[i].audio)).frames // HOP for i in chosen]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    if offsets[-1] != cached.array("mel").shape[0]:
        raise AnalysisError(
            f"cache entry {cached.folder} holds {cached.array('mel').shape[0]} mel frames, the audio {offsets[-1]}: "
            "delete the entry and run again"
        )
    position = {utterance: index for index, utterance in enumerate(chosen)}
    members = []
    for chosen_set in chosen_sets:
        mask = np.zeros(len(chosen), dtype=bool)
        mask[[position[int(u)] for u in chosen_set]] = True
        members.append(mask)

    def rows(mel_index: np.ndarray, sample_set: int) -> np.ndarray:
        owner = np.searchsorted(offsets, np.asarray(mel_index), side="right") - 1
        return np.flatnonzero(members[sample_set][owner])

    return rows


def cca_sample_set_scores(views: Callable, name: str, settings: AnalysisSettings) -> tuple[list[list[float]], int]:
    """Each sample set's CCA test scores (one per test split) for one layer, and the samples of set 0."""
    trials, samples = [], 0
    for sample_set in range(settings.sample_sets):
        x, y, labels = views(name, sample_set)
        result = cca_protocol(
            x,
            y,
            labels,
            seed=settings.seed if sample_set == 0 else [settings.seed, sample_set],  # type: ignore[arg-type]
            stable=settings.stable,
            sign_convention=settings.sign_convention,
        )
        trials.append([float(t.test_score) for t in result.trials])
        samples = samples or int(x.shape[0])
    return trials, samples


def cca_chance_scores(views: Callable, name: str, settings: AnalysisSettings) -> list[float]:
    """CCA scores with one view's rows permuted across the sample (the view with fewer dimensions: the labels or
    embeddings, or the mel features), ``settings.chance_permutations`` times, taking the sample sets in turn."""
    scores = []
    for permutation in range(settings.chance_permutations):
        x, y, labels = views(name, permutation % settings.sample_sets)
        order = np.random.default_rng([settings.seed, 5, permutation]).permutation(x.shape[0])
        if y.shape[1] <= x.shape[1]:
            y = np.asarray(y)[order]
            labels = labels[order] if labels is not None else None
        else:
            x = np.asarray(x)[order]
        seed: Any = [settings.seed, 6, permutation]
        scores.append(cca_score(x, y, labels, seed, stable=settings.stable, sign_convention=settings.sign_convention))
    return scores


def _uncertainty_record(set_scores: dict[str, list[float]], null: dict[str, list[float]], n_sets: int) -> dict:
    """The spread and chance fields of an output's provenance, from each layer's sample-set scores and null
    scores."""
    record: dict[str, Any] = {
        "sample_sets": n_sets,
        "sample_set_scores": set_scores,
        "score_interval": uncertainty.SCORE_INTERVAL,
        "spread": {name: _without_mean(uncertainty.summarise(values)) for name, values in set_scores.items()},
    }
    if any(null.values()):
        record["chance"] = {name: uncertainty.chance_summary(values, n_sets) for name, values in null.items()}
    return record


def _without_mean(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "mean"}


def _cca_views(
    prop: str,
    cached: extraction.CachedLayers,
    settings: AnalysisSettings,
    set_rows: dict[str, list[np.ndarray]],
    frame_sets: Callable[[np.ndarray, int], np.ndarray | None] | None,
) -> Callable:
    """``views(layer name, sample set) -> (x, y, labels)`` of one property."""
    if prop == "mel":
        mel = cached.array("mel")

        def frame_views(name: str, sample_set: int):
            cnn = name in cached.cnn_names
            index = cached.cnn_layer(name, "mel_index_") if cnn else cached.layer(name, "mel_index_")
            states = cached.cnn_layer(name) if cnn else cached.layer(name)
            if frame_sets is None:
                return np.asarray(mel[index]), states, None
            rows = frame_sets(index, sample_set)
            return np.asarray(mel[np.asarray(index)[rows]]), np.asarray(states[rows]), None

        return frame_views
    kind = "phone" if prop == "phone" else "word"
    labels = np.asarray(cached.meta["labels"][kind])
    if prop in ("phone", "word"):
        y = None  # one-hot of each sample set's own labels
        rows = np.arange(len(labels))
    else:
        vectors = read_embeddings(settings.embeddings[prop], set(labels.tolist()))
        rows = np.flatnonzero([label in vectors for label in labels])
        if len(rows) == 0:
            raise AnalysisError(
                f"none of the {len(set(labels.tolist()))} sampled words is in {settings.embeddings[prop]}"
            )
        y = np.stack([vectors[label] for label in labels[rows]])

    def segment_views(name: str, sample_set: int):
        chosen = np.flatnonzero(np.isin(rows, set_rows[kind][sample_set]))
        x = np.asarray(cached.layer(name, f"{kind}_"))
        chosen_labels = labels[rows[chosen]]
        return x[rows[chosen]], one_hot(chosen_labels) if y is None else y[chosen], chosen_labels

    return segment_views


# --------------------------------------------------------------------------------------------- MI


def _mi_analyses(
    upstream, corpus, mi_props, cached, layer_names, settings, cache_dir, shared, scores, records, set_rows, word_order
):
    train_splits = segments.resolve_splits(corpus, settings.mi_train_split, settings.alignments)
    train_utterances: list[segments.Utterance] = []
    for split in train_splits:
        train_utterances += segments.list_utterances(corpus, split, settings.alignments)
    presets = {}
    available = {}
    for prop in mi_props:
        span = prop.removeprefix("mi_")
        preset = mutual_info.clustering_for(span)
        low, high = settings.mi_train_per_label.get(span, preset.train_per_label)
        preset = mutual_info.ClusteringSettings(
            settings.mi_clusters.get(span, preset.n_clusters),
            preset.batch_size,
            preset.max_iter,
            settings.mi_n_init or preset.n_init,
            (low, high),
        )
        presets[span] = preset
        available[span] = segments.read_segments(train_utterances, "phones" if span == "phone" else "words")
    draws: dict[str, list[list[segments.Segment]]] = {span: [] for span in presets}
    for sample_set in range(settings.sample_sets):  # one generator per set, the spans drawn in turn from it
        rng = _set_rng(settings.seed, 4, sample_set)
        for span, preset in presets.items():
            present = set(np.asarray(cached.meta["labels"][span])[set_rows[span][sample_set]].tolist())
            # phones in sorted order (the reference's phone.lst order is not published), words in rank order
            labels = sorted(present) if span == "phone" else [w for w in word_order if w in present]
            low, high = preset.train_per_label
            draws[span].append(
                segments.sample_training_segments(
                    available[span], labels, rng, low, high, running_bounds=settings.mi_running_bounds
                )
            )
    spans: dict[str, Sequence[segments.Segment]] = {}
    train_rows: dict[str, list[np.ndarray]] = {}
    for span, chosen_sets in draws.items():
        spans[span], train_rows[span] = _union(chosen_sets)
    description = {
        "upstream": upstream.identity,
        "state_rate": settings.state_rate,
        "corpus": str(corpus.resolve()),
        "splits": train_splits,
        "seed": settings.seed,
        "files": extraction.corpus_fingerprint(
            train_utterances, corpus, sorted({s.utterance for chosen in spans.values() for s in chosen})
        ),
        "spans": {
            span: _digest([(s.utterance, s.start, s.end, s.label) for s in chosen]) for span, chosen in spans.items()
        },
        "kind": "mi-train",
    }
    train = extraction.extract_layers(
        cache_dir,
        description,
        upstream.states,
        train_utterances,
        spans=spans,
        progress=settings.progress,
        description=f"extracting {'+'.join(train_splits)}",
    )
    for prop in mi_props:
        span = prop.removeprefix("mi_")
        preset = presets[span]
        all_labels = np.asarray(cached.meta["labels"][span])
        eval_labels = [all_labels[rows] for rows in set_rows[span]]
        layer_scores, set_scores, chance, adjusted = {}, {}, {}, {}
        for name in progress_bar(layer_names, settings.progress, f"MI {span}", "layer"):
            train_reps, eval_reps = (
                np.asarray(train.layer(name, f"{span}_")),
                np.asarray(cached.layer(name, f"{span}_")),
            )
            clusters = []
            for sample_set, labels in enumerate(eval_labels):
                train_set, eval_set = train_reps[train_rows[span][sample_set]], eval_reps[set_rows[span][sample_set]]
                try:
                    seed = _kmeans_seed(settings.seed, sample_set)
                    clusters.append(mutual_info.assign_clusters(preset, train_set, eval_set, labels, seed))
                except mutual_info.MutualInfoInputError as error:
                    raise AnalysisError(f"MI {span}: {error} (small corpora: --mi-clusters {span}=K)") from None
            set_scores[name] = [
                mutual_info.normalised_mutual_information(c, labels)
                for c, labels in zip(clusters, eval_labels, strict=True)
            ]
            layer_scores[name] = float(np.mean(set_scores[name]))
            chance[name] = uncertainty.mi_chance(
                clusters, eval_labels, np.random.default_rng([settings.seed, 8]), MI_CHANCE_PERMUTATIONS
            )
            adjusted[name] = uncertainty.adjusted_score(layer_scores[name], chance[name]["mean"])
        scores[prop] = layer_scores
        records[prop] = {
            **shared,
            "property": prop,
            "train_splits": train_splits,
            "train_cache_entry": str(train.folder),
            "clustering": asdict(preset),
            "train_samples": [len(rows) for rows in train_rows[span]],
            "train_bounds": "running minimum (the reference's)" if settings.mi_running_bounds else "per label",
            "eval_samples": [len(labels) for labels in eval_labels],
            **_uncertainty_record(set_scores, {}, settings.sample_sets),
            "chance": chance,
            "chance_method": uncertainty.MI_CHANCE,
            "adjusted": adjusted,
            "adjusted_definition": "(MI - chance) / (1 - chance); the raw MI (scores) is the reference's number",
        }


def _kmeans_seed(seed: int, sample_set: int) -> int:
    """The k-means seed of a sample set (set 0: ``seed`` itself, as before sample sets existed)."""
    return seed if sample_set == 0 else int(np.random.SeedSequence([seed, 7, sample_set]).generate_state(1)[0])


# --------------------------------------------------------------------------------------------- STS


def _sts_analysis(upstream, sts_root: Path, settings, cache_dir, scores, records) -> None:
    import soundfile
    from scipy.stats import spearmanr

    pairs = read_spoken_sts(sts_root)
    audio = list(dict.fromkeys(p for pair in pairs for p in (*pair.audio_a, *pair.audio_b)))
    utterances = [segments.Utterance(str(path.relative_to(sts_root)), path, None) for path in audio]
    whole = [
        segments.Segment(i, 0.0, soundfile.info(str(u.audio)).frames / SAMPLE_RATE, u.utt_id)
        for i, u in enumerate(utterances)
    ]
    description = {
        "upstream": upstream.identity,
        "state_rate": settings.state_rate,
        "corpus": str(sts_root.resolve()),
        "files": extraction.corpus_fingerprint(utterances, sts_root),
        "kind": "utterances",
    }
    cached = extraction.extract_layers(
        cache_dir,
        description,
        upstream.states,
        utterances,
        spans={"utterance": whole},
        middle_third=(),
        progress=settings.progress,
        description="extracting spoken STS",
    )
    layer_names = _chosen_layers(cached.layer_names, settings.layers)
    layer_scores, spread, chance = {}, {}, {}
    for name in progress_bar(layer_names, settings.progress, "STS", "layer"):
        vectors = np.asarray(cached.layer(name, "utterance_"))
        similarities, judgements = pair_similarities(dict(zip(audio, vectors, strict=True)), pairs)
        layer_scores[name] = float(spearmanr(similarities, judgements).statistic)
        spread[name], chance[name] = uncertainty.sts_uncertainty(
            similarities, judgements, np.random.default_rng([settings.seed, 9]), STS_RESAMPLES
        )
    scores["sts"] = layer_scores
    records["sts"] = {
        "property": "sts",
        "corpus": str(sts_root.resolve()),
        "corpus_fingerprint": description["files"],
        "pairs": len(pairs),
        "recordings": len(audio),
        "combinations_per_pair": sorted({len(p.audio_a) * len(p.audio_b) for p in pairs}),
        "cache_entry": str(cached.folder),
        "spread": spread,
        "score_interval": uncertainty.STS_INTERVAL,
        "chance": chance,
        "chance_method": uncertainty.STS_CHANCE,
    }


# --------------------------------------------------------------------------------------------- helpers


def one_hot(labels: np.ndarray) -> np.ndarray:
    """``(samples, classes)`` one-hot matrix, classes in sorted order."""
    classes, codes = np.unique(labels, return_inverse=True)
    matrix = np.zeros((len(labels), len(classes)))
    matrix[np.arange(len(labels)), codes] = 1.0
    return matrix


def _chosen_layers(available: list[str], requested: Sequence[str] | None) -> list[str]:
    if not requested:
        return available
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise AnalysisError(f"unknown layer(s) {unknown}; this upstream's layers: {', '.join(available)}")
    return list(requested)


def _digest(value: Any) -> str:
    import hashlib

    return hashlib.sha256(repr(value).encode("utf-8")).hexdigest()


def _label(identity: dict[str, Any]) -> str:
    return str(identity.get("identity") or identity.get("name", ""))


def _common_provenance(upstream: UpstreamFeatures, settings: AnalysisSettings) -> dict[str, Any]:
    return {
        "schema": ANALYSIS_SCHEMA,
        "upstream": upstream.identity,
        "seed": settings.seed,
        "sign_convention": settings.sign_convention,
        "stable": settings.stable,
        "state_rate": settings.state_rate,
        "sampling": asdict(settings.sampling),
        "versions": provenance.package_versions(ANALYSIS_PACKAGES),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def build_upstream_features(
    name: str, ckpt: str | None = None, model_config: str | None = None, state_rate: str = DEFAULT_STATE_RATE
) -> UpstreamFeatures:
    """An upstream by name (our entry points first, then s3prl's hub), its extractors and its identity."""
    if name in hub.ENTRY_POINTS:
        upstream = hub.ENTRY_POINTS[name](ckpt=ckpt, model_config=model_config)
        checkpoint = Path(upstream.checkpoint_path) if upstream.checkpoint_path else None
    else:
        upstream = build_hub_upstream(name, ckpt, model_config)
        checkpoint = Path(ckpt) if ckpt and Path(ckpt).is_file() else None
    identity = {
        "name": name,
        "identity": upstream_identity(name, str(checkpoint) if checkpoint else ckpt),
        "checkpoint": str(checkpoint.resolve()) if checkpoint else ckpt,
        "checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None,
        "model_config": str(model_config) if model_config else None,
        "model_config_sha256": file_sha256(Path(model_config))
        if model_config and Path(model_config).is_file()
        else None,
        "include_block_outputs": bool(getattr(upstream, "include_block_outputs", False)),
        "pre_residual": bool(getattr(upstream, "pre_residual", False)),
        "precision": str(getattr(upstream, "precision", "fp32")),
        "cnn_segment_frames": getattr(getattr(upstream, "model", None), "cnn_segment_frames", None),
    }
    return UpstreamFeatures(
        extraction.upstream_extractor(upstream, state_rate), extraction.cnn_extractor(upstream), identity
    )


@dataclass
class CCARun:
    """One CCA property's scores, its files and its provenance (``mrsuperb cca``)."""

    scores: dict[str, float]
    json_path: Path
    plot_path: Path
    provenance: dict[str, Any]


def check_cca_settings(settings: AnalysisSettings) -> None:
    """:func:`check_settings` for ``mrsuperb cca``: exactly one of ``CCA_PROPERTIES``."""
    if len(settings.properties) != 1 or settings.properties[0] not in CCA_PROPERTIES:
        shown = ",".join(settings.properties)
        raise AnalysisError(f"unknown property {shown!r}; choose one of {', '.join(CCA_PROPERTIES)}")
    check_settings(settings)


def run_cca(
    upstream: UpstreamFeatures | extraction.Extractor,
    corpus: str | Path,
    out_dir: str | Path,
    settings: AnalysisSettings,
    upstream_id: dict[str, Any] | None = None,
) -> CCARun:
    """:func:`run_analysis` of one CCA property (``settings.properties``, exactly one of ``CCA_PROPERTIES``), plus
    its layer curve ``cca_<property>.png`` instead of the Fig. 3 page.

    ``upstream`` is an :class:`UpstreamFeatures`, or a bare extractor of the states with its identity (name,
    checkpoint digest, ...: cache key and provenance) in ``upstream_id``.
    """
    check_cca_settings(settings)
    if not isinstance(upstream, UpstreamFeatures):
        upstream = UpstreamFeatures(upstream, None, dict(upstream_id or {}))
    prop = settings.properties[0]
    result = run_analysis(upstream, corpus, out_dir, settings, figure=False)
    name = output_name(prop)
    label = str(upstream.identity.get("identity") or upstream.identity.get("name", ""))
    bands, chance = figure_uncertainty({name: result.provenance[name]})
    plot_path = save_figure(
        plot_cca_curves(
            {label: result.scores[name]}, prop, bands={label: bands.get(name, {})}, chance={label: chance.get(name, {})}
        ),
        Path(out_dir) / f"{name}.png",
    )
    return CCARun(result.scores[name], result.paths[name], plot_path, result.provenance[name])
