"""``mrsuperb cca``: PWCCA of every layer of an upstream against one property of a speech corpus.

Properties (Pasad et al. 2023; arXiv 2410.23955 App. A):

=========  =====================================  ==============================================  ===========
property   view x                                 view y                                          stratified
=========  =====================================  ==============================================  ===========
mel        80 log-mel features, frame by frame    the layer's frames (500 utterances)             no
phone      the layer, mean over the middle third  one-hot phone labels (<= 200 per phone)         by phone
word       the layer, mean over each word         one-hot labels of the 500 commonest words (<=15) by word
glove      the layer, mean over each word         the word's vector from a GloVe text file         by word
agwe       the layer, mean over each word         the word's vector from an AGWE text file         by word
=========  =====================================  ==============================================  ===========

(``mel`` keeps the reference's order: the mel features are view x.) Words missing from an embedding file are
dropped, as in the reference. Everything random is drawn from ``seed``. Writes ``cca_<property>.json``
(``{layer name: score}``), ``cca_<property>.png`` and ``provenance_cca_<property>.json`` (what was run, on what).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from downstream_probes.analysis import extraction, segments
from downstream_probes.analysis.pwcca import cca_score
from downstream_probes.atomic_io import write_json_atomic

PROPERTIES = ("mel", "phone", "word", "glove", "agwe")
EMBEDDING_PROPERTIES = ("glove", "agwe")
SCHEMA = "mrsuperb.cca/1"


class CCARunError(ValueError):
    """A CCA run that cannot go ahead as asked (unknown property or layer, missing file)."""


@dataclass
class CCARunSettings:
    """Everything of a run besides the upstream and the corpus."""

    prop: str
    split: str = "dev-clean"
    seed: int = 0
    sampling: segments.SamplingSettings = field(default_factory=segments.SamplingSettings)
    embeddings: Path | None = None
    alignments: Path | None = None
    layers: Sequence[str] | None = None
    stable: bool = False
    sign_convention: str = "canonical"
    cache_dir: Path | None = None
    progress: bool = True


@dataclass
class CCARun:
    scores: dict[str, float]
    json_path: Path
    plot_path: Path
    provenance: dict[str, Any]


def check_property(prop: str, embeddings: Path | None) -> None:
    if prop not in PROPERTIES:
        raise CCARunError(f"unknown property {prop!r}; choose one of {', '.join(PROPERTIES)}")
    if prop in EMBEDDING_PROPERTIES and embeddings is None:
        raise CCARunError(f"--property {prop} needs --embeddings FILE (a text file of 'word v1 v2 ...' lines)")


def run_cca(
    extract: extraction.Extractor,
    upstream_id: dict[str, Any],
    corpus: str | Path,
    out_dir: str | Path,
    settings: CCARunSettings,
) -> CCARun:
    """Score every layer (or ``settings.layers``) and write the outputs into ``out_dir``.

    ``extract`` maps a waveform to the upstream's states (see :func:`extraction.upstream_extractor`);
    ``upstream_id`` identifies the upstream in the cache key and the provenance (name, checkpoint digest, ...).
    """
    check_property(settings.prop, settings.embeddings)
    corpus = Path(corpus)
    utterances = segments.list_utterances(
        corpus, settings.split, settings.alignments, need_alignments=settings.prop != "mel"
    )
    cache_dir = settings.cache_dir or extraction.default_cache_dir()
    description = {
        "upstream": upstream_id, "corpus": str(corpus.resolve()), "split": settings.split,
        "files": extraction.corpus_fingerprint(utterances), "seed": settings.seed,
        "sampling": asdict(settings.sampling),
    }  # fmt: skip
    if settings.prop == "mel":
        cached, views = _frame_views(extract, utterances, cache_dir, description, settings)
    else:
        cached, views = _segment_views(extract, utterances, cache_dir, description, settings)
    layer_names = _chosen_layers(cached.layer_names, settings.layers)

    scores: dict[str, float] = {}
    samples = {}
    for name in extraction._progress(layer_names, settings.progress, f"CCA {settings.prop}"):
        x, y, labels = views(name)
        scores[name] = cca_score(
            x, y, labels, seed=settings.seed, stable=settings.stable, sign_convention=settings.sign_convention
        )
        samples[name] = int(x.shape[0])

    out_dir = Path(out_dir)
    json_path = write_json_atomic(out_dir / f"cca_{settings.prop}.json", scores)
    from downstream_probes.analysis.plots import plot_cca_curves, save_figure

    label = str(upstream_id.get("name", ""))
    plot_path = save_figure(plot_cca_curves({label: scores}, settings.prop), out_dir / f"cca_{settings.prop}.png")
    provenance = {
        "schema": SCHEMA, "property": settings.prop, "upstream": upstream_id, "corpus": str(corpus.resolve()),
        "split": settings.split, "seed": settings.seed, "sampling": asdict(settings.sampling),
        "embeddings": str(settings.embeddings) if settings.embeddings else None, "stable": settings.stable,
        "sign_convention": settings.sign_convention, "samples_per_layer": samples,
        "layer_strides": dict(zip(cached.layer_names, cached.meta["strides"], strict=False)), "cache_entry": str(cached.folder),
        "scores": scores, "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }  # fmt: skip
    write_json_atomic(out_dir / f"provenance_cca_{settings.prop}.json", provenance)
    return CCARun(scores, json_path, plot_path, provenance)


def _frame_views(extract, utterances, cache_dir, description, settings):
    rng = np.random.default_rng([settings.seed, 3])
    chosen = segments.sample_utterances(len(utterances), rng, settings.sampling.n_utterances)
    key = extraction.cache_key({**description, "kind": "frames"})
    cached = extraction.load_or_build(
        cache_dir, key,
        lambda folder: extraction.build_frame_layers(extract, utterances, chosen, folder, progress=settings.progress),
    )  # fmt: skip
    mel = cached.array("mel")

    def views(name: str):
        rows = cached.layer(name, "mel_index_")
        return np.asarray(mel[rows]), cached.layer(name), None

    return cached, views


def _segment_views(extract, utterances, cache_dir, description, settings):
    sampling = settings.sampling
    phones = segments.sample_phones(
        segments.read_segments(utterances, "phones"), np.random.default_rng([settings.seed, 1]), sampling.max_per_phone
    )
    words = segments.sample_words(
        segments.read_segments(utterances, "words"), np.random.default_rng([settings.seed, 2]),
        sampling.n_words, sampling.max_per_word,
    )  # fmt: skip
    if not phones or not words:
        raise CCARunError(f"the alignments of split {settings.split!r} hold no labelled phones or words")
    key = extraction.cache_key({**description, "kind": "segments"})
    cached = extraction.load_or_build(
        cache_dir, key,
        lambda folder: extraction.build_segment_layers(
            extract, utterances, {"phone": phones, "word": words}, folder, progress=settings.progress
        ),
    )  # fmt: skip
    kind = "phone" if settings.prop == "phone" else "word"
    labels = np.asarray(cached.meta["labels"][kind])
    if settings.prop in ("phone", "word"):
        y = one_hot(labels)
        rows = np.arange(len(labels))
    else:
        from downstream_probes.analysis.embeddings import read_embeddings

        vectors = read_embeddings(settings.embeddings, set(labels.tolist()))
        rows = np.flatnonzero([label in vectors for label in labels])
        if len(rows) == 0:
            raise CCARunError(f"none of the {len(set(labels.tolist()))} sampled words is in {settings.embeddings}")
        y = np.stack([vectors[label] for label in labels[rows]])

    def views(name: str):
        x = np.asarray(cached.layer(name, f"{kind}_"))
        return x[rows], y, labels[rows]

    return cached, views


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
        raise CCARunError(f"unknown layer(s) {unknown}; this upstream's layers: {', '.join(available)}")
    return list(requested)


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for package in ("mrsuperb", "numpy", "scipy", "torch", "s3prl"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


# --------------------------------------------------------------------------------------------- upstreams


def build_extractor(
    name: str, ckpt: str | None = None, model_config: str | None = None
) -> tuple[extraction.Extractor, dict[str, Any]]:
    """An extractor for upstream ``name`` (our entry points first, then s3prl's hub) and its identity."""
    from upstream_mrhubert import hub as our_hub

    if name in our_hub.ENTRY_POINTS:
        upstream = our_hub.ENTRY_POINTS[name](ckpt=ckpt, model_config=model_config)
        checkpoint = Path(upstream.checkpoint_path) if upstream.checkpoint_path else None
    else:
        from downstream_probes.plugins import build_hub_upstream

        upstream = build_hub_upstream(name, ckpt, model_config)
        checkpoint = Path(ckpt) if ckpt and Path(ckpt).is_file() else None
    identity = {
        "name": name,
        "checkpoint": str(checkpoint.resolve()) if checkpoint else ckpt,
        "checkpoint_sha256": extraction.file_digest(checkpoint) if checkpoint else None,
        "model_config": str(model_config) if model_config else None,
        "include_block_outputs": bool(getattr(upstream, "include_block_outputs", False)),
        "pre_residual": bool(getattr(upstream, "pre_residual", False)),
    }
    return extraction.upstream_extractor(upstream), identity
