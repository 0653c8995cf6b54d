"""Figures and analysis tables of the HTML leaderboard, from what lies under the given folders: learnt layer-weight
heatmaps next to the chosen runs, the layer-wise analysis (``mrsuperb analyze`` / ``cca`` outputs) as one figure in
the layout of arXiv 2410.23955 Fig. 3 with one curve per model, and the rank agreements of ``mrsuperb compare``
(``compare.json``). Plots are drawn by ``downstream_probes.analysis.plots`` and kept as PNG bytes."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from downstream_probes.analysis.layer_weights import LayerWeightsError, load_layer_weights_file
from downstream_probes.analysis.plots import figure_uncertainty, plot_analysis_figure, plot_layer_weight_heatmap
from downstream_probes.reports.leaderboard.reading import Leaderboard, LeaderboardError
from downstream_probes.result_files import LAYER_WEIGHTS_FILE
from downstream_probes.tasks import TASK_NAMES, upstream_identity


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
        layers = load_layer_weights_file(path)["layers"]
    except LayerWeightsError as error:
        raise LeaderboardError(str(error)) from None
    return [layer["name"] for layer in layers], [float(layer["weight"]) for layer in layers]


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


ANALYSIS_PATTERNS = ("cca_*.json", "mi_*.json", "sts.json")
COMPARE_FILE = "compare.json"
COMPARE_SCHEMA_PREFIX = "mrsuperb.compare/"


def _analysis_files(roots: Iterable[Path]) -> list[Path]:
    found: set[Path] = set()
    for root in roots:
        if root.is_dir():
            for pattern in ANALYSIS_PATTERNS:
                found.update(p.resolve() for p in root.rglob(pattern) if p.is_file())
    return sorted(found)


def _analysis_model(path: Path, data: Any) -> str:
    """The model an analysis output belongs to: from its provenance file (``upstream_identity`` of its name and
    checkpoint), else from the document itself, else its folder's name."""
    provenance = path.with_name(f"provenance_{path.stem}.json")
    if provenance.is_file():
        try:
            upstream = json.loads(provenance.read_text(encoding="utf-8"))["upstream"]
            return upstream_identity(str(upstream["name"]), upstream.get("checkpoint"))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise LeaderboardError(f"{provenance} is not a provenance file ({error})") from None
    if isinstance(data, Mapping) and data.get("upstream"):
        return str(data["upstream"])
    return path.parent.name


def collect_analysis(roots: Iterable[Path]) -> tuple[dict[str, dict[str, dict[str, float]]], list[Path]]:
    """``{model: {output name: {layer: score}}}`` of every analysis output under ``roots``, and the files read.

    Output names are the file stems (``cca_phone``, ``mi_word``, ``sts``), as the Fig. 3 panels name them.
    """
    results: dict[str, dict[str, dict[str, float]]] = {}
    files = _analysis_files(roots)
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LeaderboardError(f"{path} is not readable JSON ({error})") from None
        scores: Any = data.get("scores", data) if isinstance(data, Mapping) else data
        if not isinstance(scores, Mapping) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values()
        ):
            raise LeaderboardError(f"{path} does not map layer names to scores; write it again with mrsuperb analyze")
        results.setdefault(_analysis_model(path, data), {})[path.stem] = {str(k): float(v) for k, v in scores.items()}
    return results, files


def collect_uncertainty(files: Iterable[Path]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per model, each analysis output's score intervals and chance levels (``plots.figure_uncertainty``) from
    the provenance files beside the outputs; outputs without one (older runs) get neither."""
    records: dict[str, dict[str, dict[str, Any]]] = {}
    for path in files:
        provenance = path.with_name(f"provenance_{path.stem}.json")
        if not provenance.is_file():
            continue
        try:
            record = json.loads(provenance.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LeaderboardError(f"{provenance} is not readable JSON ({error})") from None
        if isinstance(record, Mapping):
            records.setdefault(_analysis_model(path, None), {})[path.stem] = dict(record)
    bands: dict[str, dict] = {}
    chance: dict[str, dict] = {}
    for model, by_output in records.items():
        try:
            bands[model], chance[model] = figure_uncertainty(by_output)
        except (KeyError, TypeError, ValueError) as error:
            raise LeaderboardError(
                f"the provenance of {model}'s analysis has a malformed spread or chance ({error})"
            ) from None
    return bands, chance


def collect_comparisons(roots: Iterable[Path]) -> list[tuple[Path, list[dict[str, Any]]]]:
    """The comparisons of every ``compare.json`` (``mrsuperb compare -o``) under ``roots``, per file."""
    found: set[Path] = set()
    for root in roots:
        if root.is_dir():
            found.update(p.resolve() for p in root.rglob(COMPARE_FILE) if p.is_file())
        elif root.name == COMPARE_FILE:
            found.add(root.resolve())
    documents = []
    for path in sorted(found):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LeaderboardError(f"{path} is not readable JSON ({error})") from None
        if not isinstance(data, Mapping) or not str(data.get("schema", "")).startswith(COMPARE_SCHEMA_PREFIX):
            raise LeaderboardError(
                f"{path} is not a comparison of mrsuperb compare; write it with `mrsuperb compare -o`"
            )
        documents.append((path, [dict(c) for c in data.get("comparisons", [])]))
    return documents


def collect_figures(board: Leaderboard, search_roots: Iterable[Path]) -> list[Figure]:
    """Layer-weight heatmaps per upstream and the layer-wise analysis (Fig. 3 layout, one curve per model), as PNG
    bytes."""
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
    results, analysis_files = collect_analysis(search_roots)
    if results:
        bands, chance = collect_uncertainty(analysis_files)
        figures.append(
            Figure(
                "Layer-wise analysis in the layout of arXiv 2410.23955 Fig. 3 (and Fig. 4's frame-level CCA), "
                "one curve per model, points above their own layer names; shaded: 95 % interval over sample sets, "
                "dashed: chance level",
                _png(plot_analysis_figure(results, bands=bands, chance=chance)),
                tuple(analysis_files),
            )
        )
    return figures
