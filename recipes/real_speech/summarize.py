"""Summarise the real-speech runs of recipes/real_speech/run.sh: per model and layer, the mean and standard deviation
over seeds of phone CCA and MI, and each model's IC/KS test accuracy; writes summary.json beside the runs.

Usage: python recipes/real_speech/summarize.py RUNS_DIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from upstream_mrhubert.atomic_io import write_json_atomic


def _analysis(root: Path) -> dict:
    out: dict = {}
    for folder in sorted((root / "analysis").glob("*-s*")):
        model, _, seed = folder.name.rpartition("-s")
        for name in ("cca_phone", "mi_phone"):
            path = folder / f"{name}.json"
            if path.is_file():
                for layer, score in json.loads(path.read_text()).items():
                    out.setdefault(model, {}).setdefault(name, {}).setdefault(layer, {})[seed] = score
    summary: dict = {}
    for model, properties in out.items():
        for name, layers in properties.items():
            rows = {}
            for layer, by_seed in layers.items():
                values = list(by_seed.values())
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                rows[layer] = {"mean": statistics.fmean(values), "sd": spread, "seeds": len(values)}
            best = max(rows, key=lambda layer: rows[layer]["mean"])
            summary.setdefault(model, {})[name] = {"layers": rows, "best_layer": best}
    return summary


def _tasks(root: Path) -> dict:
    out: dict = {}
    for path in sorted((root / "train").glob("*/*/results.json")):
        record = json.loads(path.read_text())
        out.setdefault(path.parent.parent.name, {})[record["task"]] = {
            split: metrics.get("acc") for split, metrics in record["metrics"].items()
        } | {"best_step": record.get("best_step")}
    return out


def _plot(summary: dict, path: Path) -> None:
    """Phone CCA and MI per layer, mean +- sd over seeds, each trained model beside its random-init twin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [("whisper_tiny_en", "whisper_tiny_en_random"), ("whisper_base", "whisper_base_random")]
    pairs += [("toy_pretrained", "toy_random-init")]
    pairs = [pair for pair in pairs if pair[0] in summary]
    figure, axes = plt.subplots(len(pairs), 2, figsize=(10, 3.4 * len(pairs)), squeeze=False)
    for row, pair in enumerate(pairs):
        for column, name in enumerate(("cca_phone", "mi_phone")):
            axis = axes[row][column]
            for model, style in zip(pair, ("-o", "--s"), strict=True):
                if name not in summary.get(model, {}):
                    continue
                layers = summary[model][name]["layers"]
                means = [v["mean"] for v in layers.values()]
                spreads = [v["sd"] for v in layers.values()]
                axis.errorbar(range(len(layers)), means, yerr=spreads, fmt=style, capsize=3, label=model)
                axis.set_xticks(range(len(layers)), list(layers), fontsize=8)
            seeds = max(v["seeds"] for v in summary[pair[0]][name]["layers"].values())
            spread = f"mean ± sd over {seeds} seeds" if seeds > 1 else "1 seed"
            axis.set_title(f"{name.replace('_', ' ')} on real speech ({spread})", fontsize=10)
            axis.set_ylabel("score")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    summary = {"analysis": _analysis(root), "tasks": _tasks(root)}
    write_json_atomic(root / "summary.json", summary)
    _plot(summary["analysis"], root / "real_speech.png")
    for model, properties in summary["analysis"].items():
        for name, result in properties.items():
            cells = "  ".join(f"{k} {v['mean']:.3f}±{v['sd']:.3f}" for k, v in result["layers"].items())
            print(f"{model:28s} {name:10s} {cells}")
    for model, tasks in summary["tasks"].items():
        print(model, json.dumps(tasks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
