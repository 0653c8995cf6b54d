"""Figures of the HTML leaderboard: learnt layer-weight heatmaps next to the chosen runs and CCA curves found under
the given folders, rendered by ``downstream_probes.analysis.plots`` as PNG bytes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from downstream_probes.reports.leaderboard.reading import Leaderboard, LeaderboardError
from downstream_probes.tasks import LAYER_WEIGHTS_FILE, TASK_NAMES


@dataclass(frozen=True)
class Figure:
    title: str
    png: bytes
    sources: tuple[Path, ...]


def _layer_weight_files(board: Leaderboard) -> dict[str, dict[str, Path]]:
    """row -> task -> layer_weights.json next to the chosen weighted-sum run (same folder or its subfolders)."""
    found: dict[str, dict[str, Path]] = {}
    for (row, task), run in sorted(board.chosen.items()):
        if not run.is_weighted_sum:
            continue
        candidates = sorted(run.path.parent.rglob(LAYER_WEIGHTS_FILE))
        if candidates:
            found.setdefault(row, {})[task] = candidates[0]
    return found


def _read_layer_weights(path: Path) -> tuple[list[str], list[float]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        layers = data["layers"]
        return [str(layer["name"]) for layer in layers], [float(layer["weight"]) for layer in layers]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LeaderboardError(
            f"{path} is not a layer_weights.json ({error}); re-run mrsuperb export-weights"
        ) from None


def _cca_files(roots: Iterable[Path]) -> list[Path]:
    found: set[Path] = set()
    for root in roots:
        if root.is_dir():
            found.update(p.resolve() for p in root.rglob("cca_*.json") if p.is_file())
    return sorted(found)


def _read_cca(path: Path) -> tuple[str, str, dict[str, float]]:
    """(upstream, property, {layer: score}) from a cca_<property>.json; upstream from the file or its folder."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LeaderboardError(f"{path} is not readable JSON ({error})") from None
    prop = path.stem[len("cca_") :]
    upstream = path.parent.name
    scores: Any = data
    if isinstance(data, Mapping) and isinstance(data.get("scores"), Mapping):
        scores = data["scores"]
        upstream = str(data.get("upstream") or upstream)
        prop = str(data.get("property") or prop)
    if not isinstance(scores, Mapping) or not all(isinstance(v, (int, float)) for v in scores.values()):
        raise LeaderboardError(f"{path} does not map layer names to CCA scores")
    return upstream, prop, {str(k): float(v) for k, v in scores.items()}


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def collect_figures(board: Leaderboard, search_roots: Iterable[Path]) -> list[Figure]:
    """Layer-weight heatmaps per upstream and CCA curves per property, as PNG bytes (the analysis plots)."""
    from downstream_probes.analysis.plots import plot_cca_curves, plot_layer_weight_heatmap

    figures: list[Figure] = []
    for row, files in _layer_weight_files(board).items():
        weights = {task: _read_layer_weights(files[task]) for task in TASK_NAMES if task in files}
        figures.append(
            Figure(
                f"Learnt layer weights (softmax), {row}",
                _png(plot_layer_weight_heatmap(weights, row)),
                tuple(files[t] for t in weights),
            )
        )
    by_property: dict[str, dict[str, dict[str, float]]] = {}
    sources: dict[str, list[Path]] = {}
    for path in _cca_files(search_roots):
        upstream, prop, scores = _read_cca(path)
        by_property.setdefault(prop, {})[upstream] = scores
        sources.setdefault(prop, []).append(path)
    for prop in sorted(by_property):
        figures.append(
            Figure(f"CCA with {prop} per layer", _png(plot_cca_curves(by_property[prop], prop)), tuple(sources[prop]))
        )
    return figures
