"""Do the learnt SUPERB layer weights, CCA scores and single-layer probes rank the layers alike?

Three sources of a per-layer score, found under given folders (or given as files):

* ``layer_weights.json`` (``mrsuperb export-weights``): softmax weight per layer, per upstream and task;
* ``cca_<property>.json`` (``mrsuperb cca``): CCA score per layer, per upstream (from the
  ``provenance_cca_<property>.json`` beside it, else the folder's name);
* ``sweep.json`` (``mrsuperb probe-sweep``): each single-layer probe's primary metric on the test split (dev when
  there is no test result), per upstream and task; lower-is-better metrics are negated so higher is better.

For each upstream and task, every pair of sources that apply (the task's weights and probes, every CCA property)
is compared on their common layers: Spearman's rho, Kendall's tau and the overlap of their top-k layers.
Pasad et al. (2023) report rho 0.90 between CCA-word and single-layer ASR probes, but 0.66 for the weights.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from downstream_probes.tasks import SWEEP_SCHEMA

SCHEMA = "mrsuperb.compare/1"


class CompareInputError(ValueError):
    """A file given to ``mrsuperb compare`` that is not what it claims to be."""


@dataclass(frozen=True)
class LayerScores:
    """One ranking source: ``kind`` weights | cca | probe, ``label`` e.g. ``cca:word`` or ``probe:asr``."""

    kind: str
    upstream: str
    task: str | None
    label: str
    scores: dict[str, float]
    source: str


@dataclass(frozen=True)
class Comparison:
    upstream: str
    task: str
    a: str
    b: str
    layers: int
    spearman: float
    kendall: float
    top_k: int
    top_k_overlap: float


# --------------------------------------------------------------------------------------------- reading


def find_sources(paths: Iterable[str | Path]) -> list[LayerScores]:
    """Every layer-weight, CCA and probe-sweep file in ``paths`` (files, or folders searched recursively)."""
    files: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file():
            files.add(path.resolve())
        elif path.is_dir():
            for pattern in ("layer_weights.json", "cca_*.json", "sweep.json"):
                files.update(p.resolve() for p in path.rglob(pattern) if p.is_file())
        else:
            raise FileNotFoundError(f"{path} does not exist")
    sources = [read_source(path) for path in sorted(files)]
    if not sources:
        raise CompareInputError(
            "no layer_weights.json, cca_*.json or sweep.json under the given paths: run mrsuperb export-weights, "
            "mrsuperb cca or mrsuperb probe-sweep first"
        )
    return sources


def read_source(path: Path) -> LayerScores:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CompareInputError(f"{path} is not readable JSON ({error})") from None
    try:
        if path.name == "layer_weights.json":
            scores = {str(layer["name"]): float(layer["weight"]) for layer in data["layers"]}
            task = str(data["task"])
            return LayerScores("weights", str(data["upstream"]), task, f"weights:{task}", scores, str(path))
        if path.name == "sweep.json":
            return _read_sweep(path, data)
        prop = path.stem[len("cca_") :]
        if not isinstance(data, Mapping) or not all(isinstance(v, (int, float)) for v in data.values()):
            raise CompareInputError(f"{path} does not map layer names to CCA scores")
        provenance = path.with_name(f"provenance_cca_{prop}.json")
        upstream = path.parent.name
        if provenance.is_file():
            upstream = str(json.loads(provenance.read_text(encoding="utf-8"))["upstream"]["name"])
        return LayerScores("cca", upstream, None, f"cca:{prop}", {str(k): float(v) for k, v in data.items()}, str(path))
    except (KeyError, TypeError) as error:
        raise CompareInputError(f"{path} lacks the expected field {error}") from None


def _read_sweep(path: Path, data: Mapping) -> LayerScores:
    if data.get("schema") != SWEEP_SCHEMA:
        raise CompareInputError(f"{path} has schema {data.get('schema')!r}, expected {SWEEP_SCHEMA!r}")
    metric, sign = data["primary_metric"], -1.0 if data.get("lower_is_better") else 1.0
    scores = {}
    for layer in data["layers"]:
        metrics = layer.get("metrics", {})
        split = data.get("test_split") if data.get("test_split") in metrics else next(iter(metrics), None)
        if split is not None and metric in metrics[split]:
            scores[str(layer["name"])] = sign * float(metrics[split][metric])
    return LayerScores("probe", str(data["upstream"]), str(data["task"]), f"probe:{data['task']}", scores, str(path))


# --------------------------------------------------------------------------------------------- comparing


def rank_agreement(a: Mapping[str, float], b: Mapping[str, float], top_k: int) -> tuple[int, float, float, float]:
    """(common layers, Spearman's rho, Kendall's tau, top-k overlap) of two layer scorings."""
    from scipy.stats import kendalltau, spearmanr

    common = [name for name in a if name in b]
    if len(common) < 3:
        return len(common), float("nan"), float("nan"), float("nan")
    x, y = np.array([a[n] for n in common]), np.array([b[n] for n in common])
    k = min(top_k, len(common))
    top_a = {common[i] for i in np.argsort(-x, kind="stable")[:k]}
    top_b = {common[i] for i in np.argsort(-y, kind="stable")[:k]}
    return len(common), float(spearmanr(x, y).statistic), float(kendalltau(x, y).statistic), len(top_a & top_b) / k


def compare_sources(sources: Sequence[LayerScores], top_k: int = 3) -> list[Comparison]:
    """Every pair of rankings per (upstream, task): weights and probes of that task, and all CCA properties."""
    if top_k < 1:
        raise CompareInputError(f"top_k must be at least 1, got {top_k}")
    comparisons = []
    upstreams = sorted({s.upstream for s in sources})
    for upstream in upstreams:
        own = [s for s in sources if s.upstream == upstream]
        cca = sorted((s for s in own if s.kind == "cca"), key=lambda s: s.label)
        tasks = sorted({s.task for s in own if s.task is not None})
        for task in tasks:
            group = sorted((s for s in own if s.task == task), key=lambda s: s.label) + cca
            for first, second in combinations(group, 2):
                if first.kind == second.kind == "cca":
                    continue
                n, rho, tau, overlap = rank_agreement(first.scores, second.scores, top_k)
                comparisons.append(Comparison(upstream, task, first.label, second.label, n, rho, tau, top_k, overlap))
    return comparisons


def comparison_document(sources: Sequence[LayerScores], comparisons: Sequence[Comparison], top_k: int) -> dict:
    return {
        "schema": SCHEMA,
        "top_k": top_k,
        "sources": [
            {"kind": s.kind, "upstream": s.upstream, "task": s.task, "label": s.label, "path": s.source}
            for s in sources
        ],
        "comparisons": [_finite(asdict(c)) for c in comparisons],
    }


def _finite(record: dict) -> dict:
    """JSON has no NaN: undefined correlations (fewer than 3 common layers, constant scores) become null."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in record.items()}


def write_plots(sources: Sequence[LayerScores], plot_dir: Path) -> list[Path]:
    """Layer-weight heatmap per upstream (tasks as columns) and CCA curves per property (upstreams as lines)."""
    from downstream_probes.analysis.plots import plot_cca_curves, plot_layer_weight_heatmap, save_figure

    written = []
    for upstream in sorted({s.upstream for s in sources if s.kind == "weights"}):
        weights = {
            s.task: (list(s.scores), list(s.scores.values()))
            for s in sorted(sources, key=lambda s: s.task or "")
            if s.kind == "weights" and s.upstream == upstream
        }
        figure = plot_layer_weight_heatmap(weights, f"learnt layer weights: {upstream}")
        written.append(save_figure(figure, plot_dir / f"layer_weights_{_safe(upstream)}.png"))
    for label in sorted({s.label for s in sources if s.kind == "cca"}):
        curves = {s.upstream: s.scores for s in sources if s.label == label}
        prop = label.split(":", 1)[1]
        written.append(save_figure(plot_cca_curves(curves, prop), plot_dir / f"cca_curves_{_safe(prop)}.png"))
    return written


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
