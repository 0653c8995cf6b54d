"""Figures of the layer-wise analysis (matplotlib, Agg backend), saved atomically as PNG.

* :func:`plot_cca_curves`: CCA score per layer, one line per model (arXiv 2410.23955 Fig. 3 style);
* :func:`plot_layer_weight_heatmap`: learnt SUPERB layer weights, layers by tasks (Fig. 2b / 6 style).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from downstream_probes.atomic_io import write_bytes_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cca_curves(curves: Mapping[str, Mapping[str, float]], prop: str) -> Any:
    """CCA score (y) per layer (x, in the models' own layer order) for each model; returns the Figure.

    Models with different layer lists share the x axis by position; the ticks name the longest model's layers.
    """
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * max(len(c) for c in curves.values())), 3.6))
    longest: Sequence[str] = ()
    for model, scores in curves.items():
        names = list(scores)
        longest = names if len(names) > len(longest) else longest
        axis.plot(range(len(names)), [scores[name] for name in names], marker="o", markersize=3.5, label=model)
    axis.set_xticks(range(len(longest)), list(longest), rotation=90 if len(longest) > 20 else 0)
    axis.set_xlabel("layer")
    axis.set_ylabel(f"CCA ({prop})")
    axis.set_title(f"CCA similarity with {prop} per layer")
    axis.grid(alpha=0.3)
    if len(curves) > 1 or next(iter(curves)) != "":
        axis.legend(fontsize="small", loc="best")
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


def save_figure(figure: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write ``figure`` as a PNG (atomically) and close it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return write_bytes_atomic(path, buffer.getvalue())
