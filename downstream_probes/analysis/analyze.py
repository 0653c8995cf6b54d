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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from downstream_probes.analysis import extraction, segments
from downstream_probes.analysis.protocol import (
    CCA_PROPERTIES,
    DEFAULT_MI_TRAIN_SPLIT,
    DEFAULT_SPLIT,
    DEFAULT_STATE_RATE,
    DEFAULT_WORD_COUNTS_SPLIT,
    EMBEDDING_PROPERTIES,
    MI_PROPERTIES,
    PROPERTIES,
    STATE_RATES,
)
from downstream_probes.analysis.pwcca import cca_score
from downstream_probes.tasks import upstream_identity
from upstream_mrhubert.atomic_io import write_json_atomic
from upstream_mrhubert.errors import MrsuperbError

SCHEMA = "mrsuperb.analysis/1"
PHONE_BASED = ("phone", "mi_phone")
WORD_BASED = ("word", "glove", "agwe", "mi_word")
FIGURE = "analysis.png"


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
    sts_corpus: Path | None = None
    cnn_layers: bool = True
    cache_dir: Path | None = None
    progress: bool = True


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
                f"property {prop} needs --embeddings {prop}=FILE (a text file of 'word v1 v2 ...' lines)"
            )
    if "sts" in settings.properties and settings.sts_corpus is None:
        raise AnalysisError("property sts needs --sts-corpus DIR (a spoken STS corpus: `mrsuperb corpus sts`)")
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
        from downstream_probes.analysis.plots import plot_analysis_figure, save_figure

        figure_path = save_figure(plot_analysis_figure({_label(upstream.identity): scores}), out_dir / FIGURE)
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
        "upstream": upstream.identity, "state_rate": settings.state_rate, "corpus": str(corpus.resolve()),
        "split": settings.split, "seed": settings.seed, "sampling": asdict(settings.sampling),
    }  # fmt: skip
    spans: dict[str, list[segments.Segment]] = {}
    ranking_source = None
    if any(p in PHONE_BASED for p in props):
        spans["phone"] = segments.sample_phones(
            segments.read_segments(utterances, "phones"), np.random.default_rng([settings.seed, 1]),
            settings.sampling.max_per_phone,
        )  # fmt: skip
        if not spans["phone"]:
            raise AnalysisError(f"the alignments of split {settings.split!r} hold no labelled phones")
    if any(p in WORD_BASED for p in props):  # the ranking (training alignments) only when words are analysed
        ranking, ranking_source = _word_ranking(corpus, settings)
        spans["word"] = segments.sample_words(
            segments.read_segments(utterances, "words"), np.random.default_rng([settings.seed, 2]),
            settings.sampling.n_words, settings.sampling.max_per_word, ranking,
        )  # fmt: skip
        if not spans["word"]:
            raise AnalysisError(f"split {settings.split!r} holds none of the ranked words ({ranking_source})")
    chosen: list[int] = []
    if "mel" in props:
        rng = np.random.default_rng([settings.seed, 3])
        chosen = segments.sample_utterances(len(utterances), rng, settings.sampling.n_utterances).tolist()
    cnn = upstream.cnn if "mel" in props and settings.cnn_layers else None
    read = sorted({s.utterance for kind in spans.values() for s in kind} | set(chosen))
    base["files"] = extraction.corpus_fingerprint(utterances, corpus, read)
    description = {
        **base, "kind": "analysis", "word_ranking": ranking_source, "spans": sorted(spans),
        "frames": bool(chosen), "cnn": cnn is not None,
    }  # fmt: skip
    cached = extraction.load_or_build(
        cache_dir, extraction.cache_key(description),
        lambda folder: extraction.build_layers(
            upstream.states, utterances, folder, spans=spans, frame_utterances=chosen, cnn=cnn,
            progress=settings.progress, description=f"extracting {settings.split}",
        ),
    )  # fmt: skip
    layer_names = _chosen_layers(cached.layer_names, settings.layers)
    fingerprint = base["files"]
    shared = {"corpus": base["corpus"], "split": settings.split, "corpus_fingerprint": fingerprint,
              "cache_entry": str(cached.folder), "word_ranking": ranking_source,
              "layer_strides": dict(zip(cached.layer_names, cached.meta["strides"], strict=True))}  # fmt: skip

    for prop in (p for p in props if p in CCA_PROPERTIES):
        views = _cca_views(prop, cached, settings)
        names = (cached.cnn_names if prop == "mel" else []) + layer_names
        layer_scores, samples = {}, {}
        for name in extraction._progress(names, settings.progress, f"CCA {prop}"):
            x, y, labels = views(name)
            layer_scores[name] = cca_score(
                x, y, labels, seed=settings.seed, stable=settings.stable, sign_convention=settings.sign_convention
            )
            samples[name] = int(x.shape[0])
        scores[output_name(prop)] = layer_scores
        records[output_name(prop)] = {
            **shared, "property": prop, "samples_per_layer": samples,
            "embeddings": str(settings.embeddings[prop]) if prop in settings.embeddings else None,
        }  # fmt: skip

    mi_props = [p for p in props if p in MI_PROPERTIES]
    if mi_props:
        _mi_analyses(upstream, corpus, mi_props, cached, layer_names, settings, cache_dir, shared, scores, records)


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


def _cca_views(prop: str, cached: extraction.CachedLayers, settings: AnalysisSettings) -> Callable:
    if prop == "mel":
        mel = cached.array("mel")

        def frame_views(name: str):
            if name in cached.cnn_names:
                return np.asarray(mel[cached.cnn_layer(name, "mel_index_")]), cached.cnn_layer(name), None
            return np.asarray(mel[cached.layer(name, "mel_index_")]), cached.layer(name), None

        return frame_views
    kind = "phone" if prop == "phone" else "word"
    labels = np.asarray(cached.meta["labels"][kind])
    if prop in ("phone", "word"):
        y = one_hot(labels)
        rows = np.arange(len(labels))
    else:
        from downstream_probes.analysis.embeddings import read_embeddings

        vectors = read_embeddings(settings.embeddings[prop], set(labels.tolist()))
        rows = np.flatnonzero([label in vectors for label in labels])
        if len(rows) == 0:
            raise AnalysisError(
                f"none of the {len(set(labels.tolist()))} sampled words is in {settings.embeddings[prop]}"
            )
        y = np.stack([vectors[label] for label in labels[rows]])

    def segment_views(name: str):
        x = np.asarray(cached.layer(name, f"{kind}_"))
        return x[rows], y, labels[rows]

    return segment_views


# --------------------------------------------------------------------------------------------- MI


def _mi_analyses(upstream, corpus, mi_props, cached, layer_names, settings, cache_dir, shared, scores, records):
    from downstream_probes.analysis import mutual_info

    train_splits = segments.resolve_splits(corpus, settings.mi_train_split, settings.alignments)
    train_utterances: list[segments.Utterance] = []
    for split in train_splits:
        train_utterances += segments.list_utterances(corpus, split, settings.alignments)
    rng = np.random.default_rng([settings.seed, 4])
    spans = {}
    presets = {}
    for prop in mi_props:
        span = prop.removeprefix("mi_")
        preset = mutual_info.clustering_for(span)
        low, high = settings.mi_train_per_label.get(span, preset.train_per_label)
        if span in settings.mi_clusters:
            preset = mutual_info.ClusteringSettings(
                settings.mi_clusters[span], preset.batch_size, preset.max_iter, preset.n_init, (low, high)
            )
        presets[span] = preset
        labels = list(
            dict.fromkeys(sorted(cached.meta["labels"][span]) if span == "phone" else cached.meta["labels"][span])
        )
        tier = "phones" if span == "phone" else "words"
        spans[span] = segments.sample_training_segments(
            segments.read_segments(train_utterances, tier), labels, rng, low, high
        )
    description = {
        "upstream": upstream.identity, "state_rate": settings.state_rate, "corpus": str(corpus.resolve()),
        "splits": train_splits, "seed": settings.seed,
        "files": extraction.corpus_fingerprint(
            train_utterances, corpus, sorted({s.utterance for chosen in spans.values() for s in chosen})
        ),
        "spans": {span: _digest([(s.utterance, s.start, s.end, s.label) for s in chosen]) for span, chosen in spans.items()},
        "kind": "mi-train",
    }  # fmt: skip
    train = extraction.load_or_build(
        cache_dir, extraction.cache_key(description),
        lambda folder: extraction.build_layers(
            upstream.states, train_utterances, folder, spans=spans, progress=settings.progress,
            description=f"extracting {'+'.join(train_splits)}",
        ),
    )  # fmt: skip
    for prop in mi_props:
        span = prop.removeprefix("mi_")
        preset = presets[span]
        eval_labels = np.asarray(cached.meta["labels"][span])
        layer_scores = {}
        for name in extraction._progress(layer_names, settings.progress, f"MI {span}"):
            try:
                layer_scores[name] = mutual_info.score_with(
                    preset, np.asarray(train.layer(name, f"{span}_")), np.asarray(cached.layer(name, f"{span}_")),
                    eval_labels, seed=settings.seed,
                )  # fmt: skip
            except mutual_info.MutualInfoInputError as error:
                raise AnalysisError(f"MI {span}: {error} (small corpora: --mi-clusters {span}=K)") from None
        scores[prop] = layer_scores
        records[prop] = {
            **shared, "property": prop, "train_splits": train_splits, "train_cache_entry": str(train.folder),
            "clustering": asdict(preset), "train_samples": int(train.meta["segments"][span]),
            "eval_samples": len(eval_labels),
        }  # fmt: skip


# --------------------------------------------------------------------------------------------- STS


def _sts_analysis(upstream, sts_root: Path, settings, cache_dir, scores, records) -> None:
    import soundfile

    from downstream_probes.analysis.sts import read_spoken_sts, spoken_sts_pair_score

    pairs = read_spoken_sts(sts_root)
    audio = list(dict.fromkeys(p for pair in pairs for p in (*pair.audio_a, *pair.audio_b)))
    utterances = [segments.Utterance(str(path.relative_to(sts_root)), path, None) for path in audio]
    whole = [
        segments.Segment(i, 0.0, soundfile.info(str(u.audio)).frames / 16_000, u.utt_id)
        for i, u in enumerate(utterances)
    ]
    description = {
        "upstream": upstream.identity, "state_rate": settings.state_rate, "corpus": str(sts_root.resolve()),
        "files": extraction.corpus_fingerprint(utterances, sts_root), "kind": "utterances",
    }  # fmt: skip
    cached = extraction.load_or_build(
        cache_dir, extraction.cache_key(description),
        lambda folder: extraction.build_layers(
            upstream.states, utterances, folder, spans={"utterance": whole}, middle_third=(),
            progress=settings.progress, description="extracting spoken STS",
        ),
    )  # fmt: skip
    layer_names = _chosen_layers(cached.layer_names, settings.layers)
    layer_scores = {}
    for name in extraction._progress(layer_names, settings.progress, "STS"):
        vectors = np.asarray(cached.layer(name, "utterance_"))
        layer_scores[name] = spoken_sts_pair_score(dict(zip(audio, vectors, strict=True)), pairs)
    scores["sts"] = layer_scores
    records["sts"] = {
        "property": "sts", "corpus": str(sts_root.resolve()), "corpus_fingerprint": description["files"],
        "pairs": len(pairs), "recordings": len(audio),
        "combinations_per_pair": sorted({len(p.audio_a) * len(p.audio_b) for p in pairs}),
        "cache_entry": str(cached.folder),
    }  # fmt: skip


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
        "schema": SCHEMA, "upstream": upstream.identity, "seed": settings.seed,
        "sign_convention": settings.sign_convention, "stable": settings.stable, "state_rate": settings.state_rate,
        "sampling": asdict(settings.sampling), "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for package in ("mrsuperb", "numpy", "scipy", "scikit-learn", "torch", "s3prl"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def build_upstream_features(
    name: str, ckpt: str | None = None, model_config: str | None = None, state_rate: str = DEFAULT_STATE_RATE
) -> UpstreamFeatures:
    """An upstream by name (our entry points first, then s3prl's hub), its extractors and its identity."""
    from upstream_mrhubert import hub as our_hub

    if name in our_hub.ENTRY_POINTS:
        upstream = our_hub.ENTRY_POINTS[name](ckpt=ckpt, model_config=model_config)
        checkpoint = Path(upstream.checkpoint_path) if upstream.checkpoint_path else None
    else:
        from downstream_probes.s3prl.plugins import build_hub_upstream

        upstream = build_hub_upstream(name, ckpt, model_config)
        checkpoint = Path(ckpt) if ckpt and Path(ckpt).is_file() else None
    identity = {
        "name": name,
        "identity": upstream_identity(name, str(checkpoint) if checkpoint else ckpt),
        "checkpoint": str(checkpoint.resolve()) if checkpoint else ckpt,
        "checkpoint_sha256": extraction.file_digest(checkpoint) if checkpoint else None,
        "model_config": str(model_config) if model_config else None,
        "model_config_sha256": extraction.file_digest(Path(model_config))
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
