"""Figures of the layer-wise analysis (matplotlib, Agg backend), saved atomically as PNG.

* :func:`plot_cca_curves`: CCA score per layer, one line per model, each point above its own layer's name;
* :func:`plot_analysis_figure`: every analysis of one run or several models, in the panels of arXiv 2410.23955
  Fig. 3 (and Fig. 4's frame-level CCA);
* :func:`figure_uncertainty`: the score intervals and chance levels of provenance records, as that figure
  draws them;
* :func:`plot_layer_weight_heatmap`: learnt SUPERB layer weights, layers by tasks (Fig. 2b / 6 style);
* :func:`plot_layer_rankings`: one model's weights, CCA and probes per layer side by side, with their rank
  agreements (``mrsuperb compare``).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from upstream_mrhubert.atomic_io import write_bytes_atomic
from upstream_mrhubert.errors import UsageError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def merged_layer_order(name_lists: Sequence[Sequence[str]]) -> list[str] | None:
    """One order of every layer name that keeps each model's own order (names first seen earlier go first), or
    None when two models order some names differently (MR-HuBERT-base's ``T4, D0`` against B2-a's ``D0, T4``)."""
    names = list(dict.fromkeys(name for names in name_lists for name in names))
    rank = {name: index for index, name in enumerate(names)}
    after: dict[str, set[str]] = {name: set() for name in names}
    before_count = dict.fromkeys(names, 0)
    for sequence in name_lists:
        for earlier, later in itertools.pairwise(sequence):
            if later not in after[earlier]:
                after[earlier].add(later)
                before_count[later] += 1
    ready = sorted((n for n in names if before_count[n] == 0), key=rank.__getitem__)
    order: list[str] = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for later in after[name]:
            before_count[later] -= 1
            if before_count[later] == 0:
                ready.append(later)
        ready.sort(key=rank.__getitem__)
    return order if len(order) == len(names) else None


def draw_layer_curves(
    axis: Any,
    curves: Mapping[str, Mapping[str, float]],
    ylabel: str,
    colours: Mapping[str, str] | None = None,
    *,
    bands: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    chance: Mapping[str, Mapping[str, tuple[float, float | None, float | None]]] | None = None,
) -> None:
    """One line per model (``colours``: a colour per model, default matplotlib's cycle), every point above its
    own layer's name.

    Layers are placed by name on one axis when an order of all names exists that every model keeps (a model
    without some layer leaves a gap); otherwise by position, with one row of tick labels per model, in its colour.
    """
    models = list(curves)
    order = merged_layer_order([list(scores) for scores in curves.values()])
    colour_of = dict(colours or {model: f"C{index}" for index, model in enumerate(models)})
    for model in models:
        colour = colour_of[model]
        names = list(curves[model])
        xs = [order.index(name) for name in names] if order is not None else list(range(len(names)))
        axis.plot(xs, [curves[model][n] for n in names], marker="o", markersize=3.5, label=model, color=colour)
        _draw_uncertainty(axis, xs, names, colour, (bands or {}).get(model), (chance or {}).get(model))
    if order is not None:
        axis.set_xticks(range(len(order)), order, rotation=90 if len(order) > 20 else 0, fontsize=7)
    else:
        from matplotlib.transforms import blended_transform_factory

        longest = max(len(scores) for scores in curves.values())
        axis.set_xticks(range(longest), [""] * longest)
        transform = blended_transform_factory(axis.transData, axis.transAxes)
        for row, model in enumerate(models):
            for x, name in enumerate(curves[model]):
                axis.text(
                    x,
                    -0.03 - 0.07 * row,
                    name,
                    transform=transform,
                    ha="center",
                    va="top",
                    fontsize=6.5,
                    color=colour_of[model],
                    clip_on=False,
                )
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    if len(models) > 1 or models[0] != "":
        axis.legend(fontsize="x-small", loc="best")


def _draw_uncertainty(axis: Any, xs: list[int], names: list[str], colour: str, band, chance) -> None:
    """A model's 95 % score interval as a shaded band, and its chance level as a dashed line with the chance
    interval lightly hatched (where given)."""
    if band:
        points = [(x, *band[n]) for x, n in zip(xs, names, strict=True) if n in band]
        if points:
            px, low, high = zip(*points, strict=True)
            axis.fill_between(px, low, high, color=colour, alpha=0.22, linewidth=0)
    if chance:
        points = [(x, *chance[n]) for x, n in zip(xs, names, strict=True) if n in chance]
        if points:
            px, mean, low, high = zip(*points, strict=True)
            axis.plot(px, mean, linestyle="--", linewidth=1.0, color=colour, alpha=0.8)
            if all(v is not None for v in low + high):
                axis.fill_between(px, low, high, color="grey", alpha=0.15, linewidth=0, hatch="..")


def plot_cca_curves(
    curves: Mapping[str, Mapping[str, float]],
    prop: str,
    *,
    bands: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
    chance: Mapping[str, Mapping[str, tuple[float, float | None, float | None]]] | None = None,
) -> Any:
    """CCA score (y) per layer (x) for each model, points placed by layer name (:func:`draw_layer_curves`, with
    its ``bands`` and ``chance``); returns the Figure."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * max(len(c) for c in curves.values())), 3.6))
    draw_layer_curves(axis, curves, f"CCA ({prop})", bands=bands, chance=chance)
    axis.set_xlabel("layer")
    axis.set_title(f"CCA similarity with {prop} per layer")
    figure.tight_layout()
    return figure


# (output name, panel title) in the order of arXiv 2410.23955 Fig. 3 (A-F), then Fig. 4's frame-level panel
ANALYSIS_PANELS: tuple[tuple[str, str], ...] = (
    ("mi_word", "MI word"),
    ("mi_phone", "MI phone"),
    ("cca_phone", "CCA phone"),
    ("cca_agwe", "CCA AGWE"),
    ("cca_glove", "CCA GloVe"),
    ("sts", "spoken STS (Spearman)"),
    ("cca_mel", "CCA mel (frame level)"),
    ("cca_word", "CCA word"),
)


def figure_uncertainty(records: dict[str, dict[str, Any]]) -> tuple[dict, dict]:
    """From provenance records (output name -> record): each output's score interval ``{layer: (lo, hi)}`` and
    chance level ``{layer: (mean, lo, hi)}``, as :func:`plot_analysis_figure` draws them."""
    bands: dict[str, dict[str, tuple[float, float]]] = {}
    chance: dict[str, dict[str, tuple[float, float | None, float | None]]] = {}
    for name, record in records.items():
        spread = {k: v["ci95"] for k, v in (record.get("spread") or {}).items() if v.get("ci95")}
        if spread:
            bands[name] = {k: (float(lo), float(hi)) for k, (lo, hi) in spread.items()}
        levels = record.get("chance") or {}
        if levels:
            chance[name] = {
                k: (float(v["mean"]), *(v["ci95"] if v.get("ci95") else (None, None))) for k, v in levels.items()
            }
    return bands, chance


def plot_analysis_figure(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    bands: Mapping[str, Mapping[str, Mapping[str, tuple[float, float]]]] | None = None,
    chance: Mapping[str, Mapping[str, Mapping[str, tuple[float, float | None, float | None]]]] | None = None,
) -> Any:
    """The layer-wise analysis in the layout of arXiv 2410.23955 Fig. 3 (MI word, MI phone, CCA phone, CCA AGWE,
    CCA GloVe, STS) followed by Fig. 4's frame-level CCA (C1..C7 before the transformer layers) and CCA word.

    ``results`` maps a model to ``{output name: {layer: score}}`` (output names as :data:`ANALYSIS_PANELS`); a
    panel is drawn when some model has it, one curve per model. ``bands`` and ``chance`` (model -> output name
    -> layer -> interval / (chance mean, low, high)) add each score's 95 % interval (shaded) and its chance level
    (dashed, its interval dotted grey), as :func:`figure_uncertainty` reads them from the provenance.
    Returns the Figure.
    """
    plt = _pyplot()
    panels = [(key, title) for key, title in ANALYSIS_PANELS if any(key in r for r in results.values())]
    if not panels:
        raise UsageError("no analysis results to plot")
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    width = max(len(scores) for r in results.values() for scores in r.values())
    figure, axes = plt.subplots(rows, columns, figsize=(columns * max(4.2, 0.3 * width), rows * 3.3), squeeze=False)
    colours = {model: f"C{index}" for index, model in enumerate(results)}  # one colour per model in every panel
    for axis, (key, title) in zip(axes.flat, panels, strict=False):
        draw_layer_curves(
            axis,
            {model: r[key] for model, r in results.items() if key in r},
            "score",
            colours,
            bands={model: b[key] for model, b in (bands or {}).items() if key in b},
            chance={model: c[key] for model, c in (chance or {}).items() if key in c},
        )
        axis.set_title(title, fontsize=10)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    if bands or chance:
        figure.text(
            0.5,
            0.0,
            "shaded: 95 % interval of the score over sample sets (STS: over pairs); dashed: chance level; "
            "dotted grey: its 95 % interval",
            ha="center",
            va="top",
            fontsize=8,
        )
    figure.tight_layout()
    return figure


def plot_layer_weight_heatmap(weights_by_task: Mapping[str, tuple[Sequence[str], Sequence[float]]], title: str) -> Any:
    """Layers (rows, first layer at the bottom) by tasks (columns); colour and text are the softmax weights."""
    import numpy as np

    plt = _pyplot()
    tasks = list(weights_by_task)
    layers: list[str] = []
    for names, _ in weights_by_task.values():
        layers += [name for name in names if name not in layers]
    grid = np.full((len(layers), len(tasks)), np.nan)
    for column, task in enumerate(tasks):
        names, weights = weights_by_task[task]
        for name, weight in zip(names, weights, strict=False):
            grid[layers.index(name), column] = weight
    figure, axis = plt.subplots(figsize=(1.2 + 0.9 * len(tasks), 0.9 + 0.32 * len(layers)))
    image = axis.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=0.0)
    axis.set_xticks(range(len(tasks)), [task.upper() for task in tasks])
    axis.set_yticks(range(len(layers)), layers)
    threshold = np.nanmax(grid) * 0.6 if np.isfinite(grid).any() else 0.0
    for row in range(len(layers)):
        for column in range(len(tasks)):
            if np.isfinite(grid[row, column]):
                colour = "black" if grid[row, column] > threshold else "white"
                axis.text(column, row, f"{grid[row, column]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    axis.set_title(title)
    figure.colorbar(image, ax=axis, label="softmax weight")
    figure.tight_layout()
    return figure


def plot_layer_rankings(
    model: str,
    panels: Mapping[str, Mapping[str, Mapping[str, float]]],
    notes: Sequence[str] = (),
    *,
    bands: Mapping[str, Mapping[str, Mapping[str, tuple[float, float]]]] | None = None,
) -> Any:
    """One model's layer scores side by side, a panel per kind of source (``panels``: panel title -> curve label
    -> ``{layer: score}``, e.g. ``{"CCA": {"phone": {...}}}``), points placed by layer name
    (:func:`draw_layer_curves`); ``notes`` (the rank agreements, Spearman's rho first) are written under the
    panels; ``bands`` (panel title -> curve label -> layer -> 95 % interval) are shaded. Returns the Figure."""
    plt = _pyplot()
    if not panels:
        raise UsageError(f"no layer scores of {model} to plot")
    widest = max(len(scores) for curves in panels.values() for scores in curves.values())
    width = max(4.0, 0.32 * widest + 1.5)
    figure, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.4 + 0.17 * len(notes)), squeeze=False)
    for axis, (title, curves) in zip(axes[0], panels.items(), strict=True):
        draw_layer_curves(axis, curves, title, bands=(bands or {}).get(title))
        axis.set_title(title, fontsize="medium")
        axis.set_xlabel("layer")
    figure.suptitle(model)
    bottom = min(0.45, 0.06 + 0.045 * len(notes)) if notes else 0.0
    figure.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    for row, note in enumerate(notes):
        figure.text(0.01, bottom - 0.02 - row * (bottom - 0.02) / max(len(notes), 1), note, fontsize=8, va="top")
    return figure


def save_figure(figure: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``figure`` as a PNG (atomically) and close it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return write_bytes_atomic(path, buffer.getvalue())
