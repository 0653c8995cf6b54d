"""Do the learnt SUPERB layer weights, CCA scores and single-layer probes rank one model's layers alike?

Three sources of a per-layer score, found under given folders (or given as files):

* ``layer_weights.json`` (``mrsuperb export-weights``): softmax weight per layer, per model and task;
* ``cca_<property>.json`` (``mrsuperb cca`` / ``mrsuperb analyze``): CCA score per layer, per model (the model
  from the ``provenance_cca_<property>.json`` beside it);
* ``sweep.json`` (``mrsuperb probe-sweep``): each single-layer probe's primary metric on the test split (dev when
  there is no test result), per model and task; lower-is-better metrics are negated so higher is better.

A model is an upstream name plus its checkpoint (:func:`downstream_probes.tasks.upstream_identity`, as the
leaderboard names its rows: ``mrhubert_local -k b2a.pt`` is ``mrhubert_local:b2a``), read from the fields every
source records (``upstream`` and ``upstream_ckpt``; ``upstream.name`` and ``upstream.checkpoint`` in a CCA
provenance). For each model and task, every pair of its sources that apply (the task's weights and probes, every
CCA property) is compared: Spearman's rho, Kendall's tau and the overlap of their top-k layers, each with its
uncertainty (:mod:`downstream_probes.analysis.uncertainty`): a bootstrap 95 % interval of rho and tau that
resamples the CCA sample sets and their test splits (``trial_scores`` in the provenance) and the downstream seeds
(several files of one source with different ``seed`` fields are one source with replicates), a p-value against
"no relation" from phase-randomised surrogates (which respect the correlation of neighbouring layers), and the
top-k overlap expected by chance. Sources of one model with different layer sets are refused unless
``common_layers`` is asked for; sources that differ in state rate, or two of one kind that differ in split, are
refused with the reason.

Pasad et al. (2023) compare the CCA scores and the learnt weights with single-layer task performance: their 0.90
and 0.66 are MEANS over ten (task, model) pairs of Spearman's rho against each single-layer probe's score, not one
CCA-word vs ASR number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from downstream_probes.analysis import uncertainty
from downstream_probes.analysis.layer_weights import LayerWeightsError, load_layer_weights_file
from downstream_probes.analysis.plots import (
    plot_cca_curves,
    plot_layer_rankings,
    plot_layer_weight_heatmap,
    save_figure,
)
from downstream_probes.result_files import LAYER_WEIGHTS_FILE, SWEEP_FILE, ResultsError, load_sweep_file
from downstream_probes.tasks import upstream_identity
from upstream_mrhubert.atomic_io import read_strict_json
from upstream_mrhubert.errors import MrsuperbError

COMPARE_SCHEMA = "mrsuperb.compare/3"
STATE_RATE_OF_WEIGHTS = "20ms"  # s3prl's featurizer (and a single-layer probe) reads hidden_states at 20 ms
KINDS = ("weights", "cca", "probe")
KIND_TITLES = {"weights": "learnt layer weights", "cca": "CCA", "probe": "single-layer probes"}


class CompareInputError(MrsuperbError, ValueError):
    """A file given to ``mrsuperb compare`` that is not what it claims to be, or two sources that cannot be ranked
    against each other."""


@dataclass(frozen=True)
class LayerScores:
    """One ranking source of one model.

    ``kind`` is weights | cca | probe; ``label`` e.g. ``cca:word`` or ``probe:asr`` (suffixed with the folder
    name when the model has several sources of that label); ``model`` is ``upstream_identity(upstream,
    checkpoint)``; ``scores`` maps layer names to scores in the model's layer order; ``source`` is the file.
    """

    kind: str
    model: str
    upstream: str
    checkpoint: str | None
    task: str | None
    label: str
    scores: dict[str, float]
    source: str
    # independent replicates (CCA sample sets, downstream seeds): each {layer: [one score per split or run]}
    replicates: tuple[dict[str, list[float]], ...] = ()
    # what makes two sources comparable: state rate (all kinds), split (within a kind)
    conditions: dict[str, str] = field(default_factory=dict)
    seed: int | None = None


@dataclass(frozen=True)
class Comparison:
    """Rank agreement of two sources (``a``, ``b``: labels; ``source_a``, ``source_b``: files) of one model."""

    model: str
    task: str
    a: str
    b: str
    source_a: str
    source_b: str
    layers: int
    spearman: float
    kendall: float
    top_k: int
    top_k_overlap: float
    spearman_ci95: list[float] | None = None
    kendall_ci95: list[float] | None = None
    p_value: float | None = None
    top_k_chance: float | None = None
    replicates_a: int = 1
    replicates_b: int = 1
    interval: str = uncertainty.AGREEMENT_INTERVAL
    test: str = uncertainty.AGREEMENT_TEST


# --------------------------------------------------------------------------------------------- reading


def find_sources(paths: Iterable[str | Path]) -> list[LayerScores]:
    """Every layer-weight, CCA and probe-sweep file in ``paths`` (files, or folders searched recursively)."""
    files: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file():
            files.add(path.resolve())
        elif path.is_dir():
            for pattern in (LAYER_WEIGHTS_FILE, "cca_*.json", SWEEP_FILE):
                files.update(p.resolve() for p in path.rglob(pattern) if p.is_file())
        else:
            raise FileNotFoundError(f"{path} does not exist")
    sources = merge_seeds([read_source(path) for path in sorted(files)])
    if not sources:
        raise CompareInputError(
            "no layer_weights.json, cca_*.json or sweep.json under the given paths: run mrsuperb export-weights, "
            "mrsuperb cca (or analyze) or mrsuperb probe-sweep first"
        )
    return _distinct_labels(sources)


def read_source(path: Path) -> LayerScores:
    """One source file (by its name: ``layer_weights.json``, ``sweep.json``, else ``cca_<property>.json``)."""
    try:
        if path.name == SWEEP_FILE:
            return _read_sweep(path)
        data = _read_json(path) if path.name != LAYER_WEIGHTS_FILE else None
        if path.name == LAYER_WEIGHTS_FILE:
            data = load_layer_weights_file(path)
            scores = {str(layer["name"]): float(layer["weight"]) for layer in data["layers"]}
            task = str(data["task"])
            source = _source("weights", path, str(data["upstream"]), data.get("upstream_ckpt"), task, scores)
            return _with(source, conditions={"state_rate": STATE_RATE_OF_WEIGHTS}, seed=_seed(data))
        return _read_cca(path, data)
    except KeyError as error:
        raise CompareInputError(f"{path} lacks the expected field {error}") from None
    except LayerWeightsError as error:
        raise CompareInputError(str(error)) from None
    except (TypeError, ValueError) as error:
        if isinstance(error, CompareInputError):
            raise
        raise CompareInputError(f"{path} holds a value of the wrong kind ({error})") from None


def _read_json(path: Path) -> Any:
    return read_strict_json(path, CompareInputError)


def _read_cca(path: Path, data: Any) -> LayerScores:
    prop = path.stem[len("cca_") :]
    if not isinstance(data, Mapping) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise CompareInputError(f"{path} does not map layer names to CCA scores")
    provenance_path = path.with_name(f"provenance_cca_{prop}.json")
    if not provenance_path.is_file():
        raise CompareInputError(
            f"{path} has no {provenance_path.name} beside it, so nothing says which model it belongs to: write "
            "it again with mrsuperb cca or mrsuperb analyze (they write both files)"
        )
    provenance = _read_json(provenance_path)
    upstream = provenance["upstream"]
    scores = {str(k): float(v) for k, v in data.items()}
    source = _source("cca", path, str(upstream["name"]), upstream.get("checkpoint"), None, scores, prop)
    conditions = {k: str(provenance[k]) for k in ("state_rate", "split") if provenance.get(k) is not None}
    return _with(source, replicates=_sample_sets(provenance.get("trial_scores"), scores), conditions=conditions)


def _sample_sets(trials: Any, scores: dict[str, float]) -> tuple[dict[str, list[float]], ...]:
    """The provenance's ``trial_scores`` (``{layer: [[test score per split] per sample set]}``) as one replicate
    per sample set; a layer-set with fewer successful splits is padded with its own mean (the mean unchanged)."""
    if not isinstance(trials, Mapping) or set(trials) != set(scores):
        return ()
    counts = {len(sets) for sets in trials.values()}
    if len(counts) != 1:
        return ()
    units = []
    for index in range(counts.pop()):
        width = max(len(trials[layer][index]) for layer in scores)
        units.append(
            {
                layer: [float(v) for v in trials[layer][index]]
                + [float(np.mean(trials[layer][index]))] * (width - len(trials[layer][index]))
                for layer in scores
            }
        )
    return tuple(units)


def _seed(data: Any) -> int | None:
    seed = data.get("seed") if isinstance(data, Mapping) else None
    return int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None


def _read_sweep(path: Path) -> LayerScores:
    try:
        data = load_sweep_file(path)
    except ResultsError as error:
        raise CompareInputError(str(error)) from None
    metric, sign = data["primary_metric"], -1.0 if data.get("lower_is_better") else 1.0
    scores = {}
    for layer in data["layers"]:
        metrics = layer.get("metrics", {})
        split = data.get("test_split") if data.get("test_split") in metrics else next(iter(metrics), None)
        if split is not None and metric in metrics[split]:
            scores[str(layer["name"])] = sign * float(metrics[split][metric])
    source = _source("probe", path, str(data["upstream"]), data.get("upstream_ckpt"), str(data["task"]), scores)
    conditions = {"state_rate": STATE_RATE_OF_WEIGHTS}
    if data.get("test_split"):
        conditions["split"] = str(data["test_split"])
    return _with(source, conditions=conditions, seed=_seed(data))


def _source(
    kind: str,
    path: Path,
    upstream: str,
    checkpoint: str | None,
    task: str | None,
    scores: dict[str, float],
    prop: str | None = None,
) -> LayerScores:
    """A source with its model; refuses a file whose upstream needs a checkpoint to be told apart but names none."""
    if not checkpoint and upstream_identity(upstream, "checkpoint") != upstream_identity(upstream, None):
        raise CompareInputError(
            f"{path} does not record the checkpoint of upstream {upstream}, so its model cannot be told apart from "
            f"other {upstream} checkpoints: write it again (mrsuperb export-weights, cca or probe-sweep record it)"
        )
    label = f"{kind}:{prop if kind == 'cca' else task}"
    return LayerScores(
        kind, upstream_identity(upstream, checkpoint), upstream, checkpoint, task, label, scores, str(path)
    )


def _distinct_labels(sources: list[LayerScores]) -> list[LayerScores]:
    """Suffix a label with its folder name where one model has several sources of that label."""
    counts = Counter((s.model, s.label) for s in sources)
    return [
        s if counts[(s.model, s.label)] == 1 else _relabelled(s, f"{s.label}@{Path(s.source).parent.name}")
        for s in sources
    ]


def _relabelled(source: LayerScores, label: str) -> LayerScores:
    return _with(source, label=label)


def _with(original: LayerScores, **changes: Any) -> LayerScores:
    from dataclasses import replace

    return replace(original, **changes)


def merge_seeds(sources: list[LayerScores]) -> list[LayerScores]:
    """Files of one model's source (same kind, task and label) that record different ``seed`` values are runs of
    one configuration: they become ONE source whose scores are the mean over the runs and whose replicates are
    the runs (what the bootstrap of :func:`compare_sources` resamples). They must score the same layers under the
    same conditions; otherwise the merge is refused with the files named."""
    groups: dict[tuple, list[LayerScores]] = {}
    for source in sources:
        key = (source.model, source.kind, source.task, source.label) if source.seed is not None else (id(source),)
        groups.setdefault(key, []).append(source)
    merged = []
    for group in groups.values():
        if len(group) == 1 or len({s.seed for s in group}) != len(group):
            merged.extend(group)
            continue
        first = group[0]
        for other in group[1:]:
            require_same_layers(first, other)
            if other.conditions != first.conditions:
                raise CompareInputError(
                    f"{first.source} and {other.source} are seeds of {first.label} of {first.model} but were run "
                    f"under different conditions ({first.conditions} vs {other.conditions}): merge only like runs"
                )
        mean = {layer: float(np.mean([s.scores[layer] for s in group])) for layer in first.scores}
        runs = tuple({layer: [s.scores[layer]] for layer in first.scores} for s in group)
        sources_text = ", ".join(s.source for s in group)
        merged.append(_with(first, scores=mean, replicates=runs, source=sources_text, seed=None))
    return merged


# --------------------------------------------------------------------------------------------- comparing


def rank_agreement(a: Mapping[str, float], b: Mapping[str, float], top_k: int) -> tuple[int, float, float, float]:
    """(common layers, Spearman's rho, Kendall's tau, top-k overlap) of two layer scorings, on their common
    layers (NaN with fewer than 3)."""
    from scipy.stats import kendalltau, spearmanr

    common = [name for name in a if name in b]
    if len(common) < 3:
        return len(common), float("nan"), float("nan"), float("nan")
    x, y = np.array([a[n] for n in common]), np.array([b[n] for n in common])
    k = min(top_k, len(common))
    top_a = {common[i] for i in np.argsort(-x, kind="stable")[:k]}
    top_b = {common[i] for i in np.argsort(-y, kind="stable")[:k]}
    return len(common), float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic), len(top_a & top_b) / k


def models(sources: Sequence[LayerScores]) -> list[str]:
    """The models the sources belong to, sorted."""
    return sorted({s.model for s in sources})


def compare_sources(
    sources: Sequence[LayerScores],
    top_k: int = 3,
    *,
    common_layers: bool = False,
    seed: int = 0,
    resamples: int = 2000,
    surrogates: int = 999,
) -> list[Comparison]:
    """Every pair of one model's rankings per task (that task's weights and probes, and all the model's CCA
    properties); never a pair across two models. Each carries its bootstrap intervals (``resamples``), its
    surrogate p-value (``surrogates``; both drawn from ``seed``) and the top-k overlap expected by chance.

    Raises :class:`CompareInputError` when two sources of a pair score different layers, unless
    ``common_layers`` (then they are compared on the layers they share), and when they differ in state rate (or,
    two of one kind, in split).
    """
    if top_k < 1:
        raise CompareInputError(f"top_k must be at least 1, got {top_k}")
    comparisons: list[Comparison] = []
    for model in models(sources):
        own = [s for s in sources if s.model == model]
        cca = sorted((s for s in own if s.kind == "cca"), key=lambda s: s.label)
        for task in sorted({s.task for s in own if s.task is not None}):
            group = sorted((s for s in own if s.task == task), key=lambda s: s.label) + cca
            for first, second in combinations(group, 2):
                if first.kind == second.kind == "cca":
                    continue
                if not common_layers:
                    require_same_layers(first, second)
                require_same_conditions(first, second)
                n, rho, tau, overlap = rank_agreement(first.scores, second.scores, top_k)
                extra = (
                    _uncertainty(first, second, np.random.default_rng([seed, len(comparisons)]), resamples, surrogates)
                    if n >= 3
                    else {}
                )
                chance = uncertainty.top_k_chance(top_k, n) if n else None
                pair = (first.label, second.label, first.source, second.source)
                comparisons.append(
                    Comparison(model, task, *pair, n, rho, tau, top_k, overlap, top_k_chance=chance, **extra)
                )
    return comparisons


def _replicate_arrays(source: LayerScores, layers: Sequence[str]) -> list[np.ndarray]:
    """One ``(splits or runs, layers)`` array per replicate (the scores themselves when there are none)."""
    if not source.replicates:
        return [np.array([[source.scores[name] for name in layers]])]
    return [np.array([unit[name] for name in layers]).T for unit in source.replicates]


def _uncertainty(first: LayerScores, second: LayerScores, rng: np.random.Generator, resamples: int, surrogates: int):
    layers = [name for name in first.scores if name in second.scores]
    a, b = _replicate_arrays(first, layers), _replicate_arrays(second, layers)
    result = uncertainty.agreement_uncertainty(a, b, rng, resamples=resamples, surrogates=surrogates)
    return {
        "spearman_ci95": result["spearman_ci95"],
        "kendall_ci95": result["kendall_ci95"],
        "p_value": result["p_value"],
        "replicates_a": len(a),
        "replicates_b": len(b),
    }


def require_same_conditions(first: LayerScores, second: LayerScores) -> None:
    """Refuse to rank two sources measured on different states (state rate) or, two of one kind, on different
    splits; the reason names both files and values."""
    keys = ["state_rate"] + (["split"] if first.kind == second.kind else [])
    for key in keys:
        a, b = first.conditions.get(key), second.conditions.get(key)
        if a is not None and b is not None and a != b:
            raise CompareInputError(
                f"{first.label} ({first.source}) and {second.label} ({second.source}) of model {first.model} differ "
                f"in {key.replace('_', ' ')}: {a} vs {b}; their layer rankings are not of the same states or data "
                "(run the analysis again with matching settings, e.g. mrsuperb analyze --state-rate 20ms)"
            )


def require_same_layers(first: LayerScores, second: LayerScores) -> None:
    """Refuse to rank two sources of ``first.model`` that score different layers (name the files and layers)."""
    only_first = [name for name in first.scores if name not in second.scores]
    only_second = [name for name in second.scores if name not in first.scores]
    if only_first or only_second:
        detail = "; ".join(
            f"only in {source.source}: {', '.join(names)}"
            for source, names in ((first, only_first), (second, only_second))
            if names
        )
        raise CompareInputError(
            f"{first.label} and {second.label} of model {first.model} score different layers ({detail}): "
            "compare sources of the same layers, or pass --common-layers to rank them on the layers they share"
        )


def comparison_document(sources: Sequence[LayerScores], comparisons: Sequence[Comparison], top_k: int) -> dict:
    """The JSON written by ``mrsuperb compare -o``: the sources (with their model) and every comparison."""
    return {
        "schema": COMPARE_SCHEMA,
        "top_k": top_k,
        "sources": [
            {
                "kind": s.kind,
                "model": s.model,
                "upstream": s.upstream,
                "checkpoint": s.checkpoint,
                "task": s.task,
                "label": s.label,
                "path": s.source,
                "replicates": max(len(s.replicates), 1),
                "conditions": s.conditions,
            }
            for s in sources
        ],
        "comparisons": [_finite(asdict(c)) for c in comparisons],
    }


def _finite(record: dict) -> dict:
    """JSON has no NaN: undefined correlations (fewer than 3 common layers, constant scores) become null."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in record.items()}


# --------------------------------------------------------------------------------------------- figures


def write_plots(sources: Sequence[LayerScores], comparisons: Sequence[Comparison], plot_dir: Path) -> list[Path]:
    """Per model: its weights, CCA and probes per layer side by side, with the rank agreements (rho) shown, and a
    layer-weight heatmap (tasks as columns); per CCA property: one curve per model."""
    written = []
    for model in models(sources):
        own = [s for s in sources if s.model == model]
        panels = {
            KIND_TITLES[kind]: {s.label.split(":", 1)[1]: s.scores for s in own if s.kind == kind}
            for kind in KINDS
            if any(s.kind == kind for s in own)
        }
        bands = {
            KIND_TITLES[kind]: {
                s.label.split(":", 1)[1]: _score_band(s) for s in own if s.kind == kind and s.replicates
            }
            for kind in KINDS
        }
        notes = [_agreement_note(c) for c in comparisons if c.model == model]
        figure = plot_layer_rankings(model, panels, notes, bands=bands)
        written.append(save_figure(figure, plot_dir / f"rankings_{_safe(model)}.png"))
        weights = {  # a weights source always names its task: the check only tells the type checker
            s.task: (list(s.scores), list(s.scores.values())) for s in own if s.kind == "weights" and s.task is not None
        }
        if weights:
            heatmap = plot_layer_weight_heatmap(dict(sorted(weights.items())), f"learnt layer weights: {model}")
            written.append(save_figure(heatmap, plot_dir / f"layer_weights_{_safe(model)}.png"))
    for label in sorted({s.label for s in sources if s.kind == "cca"}):
        curves = {s.model: s.scores for s in sources if s.label == label}
        prop = label.split(":", 1)[1]
        written.append(save_figure(plot_cca_curves(curves, prop), plot_dir / f"cca_curves_{_safe(prop)}.png"))
    return written


def _score_band(source: LayerScores) -> dict[str, tuple[float, float]]:
    """Each layer's 95 % t-interval over the source's replicates (sample sets or seeds)."""
    band = {}
    for name in source.scores:
        summary = uncertainty.summarise([float(np.mean(unit[name])) for unit in source.replicates])
        if summary["ci95"]:
            band[name] = (summary["ci95"][0], summary["ci95"][1])
    return band


def _agreement_note(comparison: Comparison) -> str:
    c = comparison
    values = [(c.spearman, "rho"), (c.kendall, "tau"), (c.top_k_overlap, f"top-{c.top_k}")]
    text = ", ".join(f"{name} {value:.2f}" if np.isfinite(value) else f"{name} -" for value, name in values)
    if c.spearman_ci95:
        text = text.replace(
            f"rho {c.spearman:.2f}", f"rho {c.spearman:.2f} [{c.spearman_ci95[0]:.2f}, {c.spearman_ci95[1]:.2f}]"
        )
    if c.p_value is not None:
        text += f", p {c.p_value:.3f}"
    if c.top_k_chance is not None:
        text += f" (top-{c.top_k} by chance {c.top_k_chance:.2f})"
    return f"{c.task}: {c.a} vs {c.b} ({c.layers} layers): {text}"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
