"""``mrsuperb cca``: PWCCA of every layer of an upstream against one property of a speech corpus.

The one-property form of :mod:`downstream_probes.analysis.analyze` (same sampling, cache and outputs):

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from downstream_probes.analysis import extraction, segments
from downstream_probes.analysis.analyze import (
    AnalysisError,
    AnalysisSettings,
    UpstreamFeatures,
    build_upstream_features,
    figure_uncertainty,
    one_hot,
    run_analysis,
)
from downstream_probes.analysis.protocol import (
    CCA_PROPERTIES,
    DEFAULT_CHANCE_PERMUTATIONS,
    DEFAULT_SAMPLE_SETS,
    DEFAULT_SPLIT,
    DEFAULT_STATE_RATE,
    DEFAULT_WORD_COUNTS_SPLIT,
    EMBEDDING_PROPERTIES,
)

PROPERTIES = CCA_PROPERTIES
CCARunError = AnalysisError

__all__ = ["PROPERTIES", "CCARun", "CCARunError", "CCARunSettings", "build_upstream_features", "check_property",
           "one_hot", "run_cca"]  # fmt: skip


@dataclass
class CCARunSettings:
    """Everything of a run besides the upstream and the corpus."""

    prop: str
    split: str = DEFAULT_SPLIT
    seed: int = 0
    sampling: segments.SamplingSettings = field(default_factory=segments.SamplingSettings)
    embeddings: Path | None = None
    alignments: Path | None = None
    layers: Sequence[str] | None = None
    stable: bool = False
    sign_convention: str = "canonical"
    state_rate: str = DEFAULT_STATE_RATE
    word_counts_split: str | None = DEFAULT_WORD_COUNTS_SPLIT
    word_list: Path | None = None
    cnn_layers: bool = True
    cache_dir: Path | None = None
    progress: bool = True
    sample_sets: int = DEFAULT_SAMPLE_SETS
    chance_permutations: int = DEFAULT_CHANCE_PERMUTATIONS

    def analysis_settings(self) -> AnalysisSettings:
        return AnalysisSettings(
            properties=(self.prop,), split=self.split, seed=self.seed, sampling=self.sampling,
            embeddings={self.prop: self.embeddings} if self.embeddings is not None else {},
            alignments=self.alignments, layers=self.layers, stable=self.stable,
            sign_convention=self.sign_convention, state_rate=self.state_rate,
            word_counts_split=self.word_counts_split, word_list=self.word_list, cnn_layers=self.cnn_layers,
            cache_dir=self.cache_dir, progress=self.progress, sample_sets=self.sample_sets,
            chance_permutations=self.chance_permutations,
        )  # fmt: skip


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
    upstream: UpstreamFeatures | extraction.Extractor,
    upstream_id: dict[str, Any] | None,
    corpus: str | Path,
    out_dir: str | Path,
    settings: CCARunSettings,
) -> CCARun:
    """Score every layer (or ``settings.layers``) for ``settings.prop`` and write the outputs into ``out_dir``.

    ``upstream`` is an :class:`UpstreamFeatures` (``upstream_id`` then unused) or a bare extractor of the states
    with its identity in ``upstream_id`` (name, checkpoint digest, ...: cache key and provenance).
    """
    check_property(settings.prop, settings.embeddings)
    if not isinstance(upstream, UpstreamFeatures):
        upstream = UpstreamFeatures(upstream, None, dict(upstream_id or {}))
    result = run_analysis(upstream, corpus, out_dir, settings.analysis_settings(), figure=False)
    name = f"cca_{settings.prop}"
    from downstream_probes.analysis.plots import plot_cca_curves, save_figure

    label = str(upstream.identity.get("identity") or upstream.identity.get("name", ""))
    bands, chance = figure_uncertainty({name: result.provenance[name]})
    plot_path = save_figure(
        plot_cca_curves({label: result.scores[name]}, settings.prop, bands={label: bands.get(name, {})},
                        chance={label: chance.get(name, {})}),
        Path(out_dir) / f"{name}.png",
    )  # fmt: skip
    return CCARun(result.scores[name], result.paths[name], plot_path, result.provenance[name])
