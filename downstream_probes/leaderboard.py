"""A SUPERB leaderboard (the paper's Table 2) from ``results.json`` files, as Markdown, CSV or one HTML page.

Rows are upstreams, columns the metrics of arXiv 2410.23955 Table 2 (ASR WER, SF slot-type F1 and slot-value CER,
SE STOI and PESQ, IC and KS accuracy, SD DER, plus SD frame accuracy, the "SD Acc" the paper prints). Every header
carries the direction of better (↑/↓); the best value of each column is marked; a missing (upstream, task) cell is
shown as "—"; every cell names the ``results.json`` it came from.

Choosing among several runs of one (upstream, task), deterministically:
  1. a weighted-sum run (the SUPERB protocol) beats a single-layer probe;
  2. then the most recent ``created`` timestamp;
  3. then the lexicographically largest path (only to break exact ties).
A cell filled from a single-layer probe shows the layer, e.g. ``5.85 (T7)``. Runs are never chosen by their test
score: picking the best of several runs on the test split would overstate the result.

Units: results.json stores every metric as s3prl's expert computes it: ASR WER in percent (s3prl's asr expert
multiplies by 100), SF F1 and CER, IC and KS accuracy, SD DER and frame accuracy as fractions. Error rates, F1 and
accuracies are shown in percent (``Column.stored_scale`` says how, per column: never guessed from the value, since a
CER may exceed 1); STOI (0..1) and PESQ (-0.5..4.5) are shown as stored.

Traceability, per format:
  * Markdown: each cell ends with a numbered reference ``[n]``; the "Sources" list under the table maps n to the path
    of the results.json (relative to the output file's folder), the layer selection and the run's ``created`` time.
  * CSV: one row per upstream; for every column ``<key>`` also ``<key>_best`` (1 for the column's best, else 0) and
    ``<key>_source`` (the results.json path). A missing cell is an empty field (read as NaN by pandas and R).
  * HTML: each value links to its results.json and carries the path in its ``title`` attribute; best cells are bold.
    The page is self-contained: CSS inline, figures (learnt layer weights found as ``layer_weights.json`` next to the
    chosen runs, CCA curves from ``cca_*.json`` files under the given folders) inline as base64 PNG.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from downstream_probes.atomic_io import write_text_atomic

RESULTS_SCHEMA = "mrsuperb.results/1"
RESULTS_FILENAME = "results.json"
LAYER_WEIGHTS_FILENAME = "layer_weights.json"
MISSING = "—"
DEFAULT_TITLE = "SUPERB leaderboard"
FORMATS = ("md", "csv", "html")


class LeaderboardError(ValueError):
    """A results file or option the leaderboard cannot use; the message names it and says what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Columns


@dataclass(frozen=True)
class Column:
    """One metric column: which task and metric fill it, and which direction is better."""

    key: str
    task: str
    metric: str
    label: str
    lower_is_better: bool
    percent: bool  # shown in percent
    digits: int
    stored_scale: float = 1.0  # display = stored * stored_scale (100 for metrics stored as fractions)

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_is_better else "↑"

    @property
    def header(self) -> str:
        unit = " (%)" if self.percent else ""
        return f"{self.label}{unit} {self.arrow}"

    def display_value(self, stored: float) -> float:
        return float(stored) * self.stored_scale

    def format(self, stored: float) -> str:
        return f"{self.display_value(stored):.{self.digits}f}"

    def is_better(self, a: float, b: float) -> bool:
        return a < b if self.lower_is_better else a > b


TABLE2_COLUMNS: tuple[Column, ...] = (
    Column("asr_wer", "asr", "wer", "ASR WER", True, True, 2),  # stored in percent by s3prl's asr expert
    Column("sf_f1", "sf", "slot_type_f1", "SF F1", False, True, 2, 100.0),
    Column("sf_cer", "sf", "slot_value_cer", "SF CER", True, True, 2, 100.0),
    Column("se_stoi", "se", "stoi", "SE STOI", False, False, 3),
    Column("se_pesq", "se", "pesq", "SE PESQ", False, False, 2),
    Column("ic_acc", "ic", "acc", "IC Acc", False, True, 2, 100.0),
    Column("ks_acc", "ks", "acc", "KS Acc", False, True, 2, 100.0),
    Column("sd_der", "sd", "der", "SD DER", True, True, 2, 100.0),
    Column("sd_acc", "sd", "frame_acc", "SD Acc", False, True, 2, 100.0),
)
TASKS: tuple[str, ...] = ("asr", "sf", "se", "ic", "ks", "sd")
TASK_TITLES = {"asr": "ASR", "sf": "SF", "se": "SE", "ic": "IC", "ks": "KS", "sd": "SD"}


# The paper's Table 2 rows first (HuBERT, MR-HuBERT-base, B4-a, B5-a), then its other analysed ablations.
PAPER_ROW_ORDER: tuple[str, ...] = (
    "hubert_base_ls960",
    "mrhubert_mono_base",
    "mrhubert_b4a",
    "mrhubert_b5a",
    "mrhubert_b2a",
    "mrhubert_b2b",
)


# ---------------------------------------------------------------------------------------------------------------
# Reading runs


@dataclass(frozen=True)
class RunRecord:
    """One downstream run, as read from its results.json."""

    path: Path
    task: str
    upstream: str
    row: str  # the leaderboard row it belongs to
    layer_selection: Mapping[str, Any]
    metrics: Mapping[str, Mapping[str, float]]
    test_split: str
    created: datetime
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def is_weighted_sum(self) -> bool:
        return self.layer_selection.get("mode") == "weighted_sum"

    @property
    def selection_text(self) -> str:
        if self.is_weighted_sum:
            return "weighted sum"
        return f"single layer {self.layer_selection.get('layer', self.layer_selection.get('index', '?'))}"

    def test_metric(self, metric: str) -> float | None:
        value = self.metrics.get(self.test_split, {}).get(metric)
        return None if value is None else float(value)


def discover_results(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """results.json files: given files as they are, folders searched recursively; sorted, without duplicates."""
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass results.json files or folders holding them")
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob(RESULTS_FILENAME) if p.is_file())
        else:
            found.add(path.resolve())
    if not found:
        raise LeaderboardError(
            f"no {RESULTS_FILENAME} found under {', '.join(map(str, paths))}; run run_downstream.py first "
            "(every run writes one into its experiment folder)"
        )
    return sorted(found)


def _parse_created(value: Any, path: Path) -> datetime:
    try:
        created = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise LeaderboardError(f"{path}: 'created' is {value!r}, not an ISO-8601 time") from None
    return created if created.tzinfo else created.replace(tzinfo=timezone.utc)


def row_label(results: Mapping[str, Any]) -> str:
    """The row a run belongs to: its upstream name, plus the checkpoint's file stem for local-file upstreams.

    ``mrhubert_local -k tiny_b4a.pt`` and ``mrhubert_local -k tiny_b5a.pt`` are different models; without the
    checkpoint they would share one row.
    """
    upstream = str(results["upstream"])
    config = results.get("config") or {}
    checkpoint = results.get("upstream_ckpt") or (config.get("upstream_ckpt") if isinstance(config, Mapping) else None)
    if checkpoint and upstream.endswith("_local"):
        return f"{upstream}:{Path(str(checkpoint)).stem}"
    return upstream


def load_run(path: str | os.PathLike[str]) -> RunRecord:
    """Read and check one results.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LeaderboardError(f"{path} is not readable JSON ({error}); delete it or re-run that experiment") from None
    if not isinstance(data, Mapping) or data.get("schema") != RESULTS_SCHEMA:
        found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
        raise LeaderboardError(f"{path} is not a results file of schema {RESULTS_SCHEMA} (found {found!r})")
    missing = [
        key for key in ("task", "upstream", "layer_selection", "metrics", "test_split", "created") if key not in data
    ]
    if missing:
        raise LeaderboardError(f"{path} lacks {', '.join(missing)}; it was not written by run_downstream.py")
    if data["task"] not in TASKS:
        raise LeaderboardError(f"{path}: unknown task {data['task']!r} (expected one of {', '.join(TASKS)})")
    if not isinstance(data["metrics"], Mapping):
        raise LeaderboardError(f"{path}: 'metrics' must map split -> {{metric: value}}")
    return RunRecord(
        path=path,
        task=str(data["task"]),
        upstream=str(data["upstream"]),
        row=row_label(data),
        layer_selection=dict(data["layer_selection"] or {}),
        metrics={str(split): dict(values) for split, values in data["metrics"].items()},
        test_split=str(data["test_split"]),
        created=_parse_created(data["created"], path),
        raw=data,
    )


def choose_run(candidates: Sequence[RunRecord]) -> RunRecord:
    """The run that fills one (upstream, task) cell: weighted sum first, then newest, then largest path."""
    return max(candidates, key=lambda r: (r.is_weighted_sum, r.created, str(r.path)))


# ---------------------------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True)
class Cell:
    value: float  # as stored in results.json
    run: RunRecord
    best: bool


@dataclass
class Leaderboard:
    """Rows (upstreams, in display order), columns, and the filled cells keyed by (row, column key)."""

    rows: list[str]
    columns: tuple[Column, ...]
    cells: dict[tuple[str, str], Cell]
    chosen: dict[tuple[str, str], RunRecord]  # (row, task) -> run
    ignored: list[RunRecord]  # runs that lost the choice, for the record

    def cell(self, row: str, column: Column) -> Cell | None:
        return self.cells.get((row, column.key))

    def sources(self) -> list[RunRecord]:
        """The chosen runs in reading order (row by row, task by task): the numbering of Markdown references."""
        order = {task: i for i, task in enumerate(TASKS)}
        return [self.chosen[key] for key in sorted(self.chosen, key=lambda k: (self.rows.index(k[0]), order[k[1]]))]


def _row_sort_key(row: str) -> tuple[int, int, str]:
    from upstream_mrhubert.registry import RELEASED_CHECKPOINTS

    upstream = row.split(":", 1)[0]
    if upstream in PAPER_ROW_ORDER:
        return (0, PAPER_ROW_ORDER.index(upstream), row)
    registry_order = [c.name for c in RELEASED_CHECKPOINTS]
    if upstream in registry_order:
        return (1, registry_order.index(upstream), row)
    return (2, 0, row)


def build_leaderboard(
    runs: Sequence[RunRecord], columns: Sequence[Column] = TABLE2_COLUMNS, sort_by: str | None = None
) -> Leaderboard:
    """Choose one run per (row, task), fill the cells and mark the best of each column.

    Rows follow the paper (HuBERT, MR-HuBERT-base, B4-a, B5-a, B2-a, B2-b), then the registry, then names
    alphabetically; ``sort_by`` (a column key) orders rows best first instead, rows missing that cell last.
    Ties for best are all marked.
    """
    columns = tuple(columns)
    grouped: dict[tuple[str, str], list[RunRecord]] = {}
    for run in runs:
        grouped.setdefault((run.row, run.task), []).append(run)
    chosen = {key: choose_run(candidates) for key, candidates in grouped.items()}
    ignored = [run for key, candidates in grouped.items() for run in candidates if run is not chosen[key]]

    values: dict[tuple[str, str], tuple[float, RunRecord]] = {}
    for (row, task), run in chosen.items():
        for column in columns:
            if column.task == task and (value := run.test_metric(column.metric)) is not None:
                values[(row, column.key)] = (value, run)

    cells: dict[tuple[str, str], Cell] = {}
    for column in columns:
        present = [(key, value) for key, (value, _) in values.items() if key[1] == column.key]
        if not present:
            continue
        best = min(v for _, v in present) if column.lower_is_better else max(v for _, v in present)
        for key, value in present:
            cells[key] = Cell(value=value, run=values[key][1], best=value == best)

    rows = sorted({row for row, _ in chosen}, key=_row_sort_key)
    if sort_by is not None:
        column = next((c for c in columns if c.key == sort_by), None)
        if column is None:
            raise LeaderboardError(
                f"--sort {sort_by!r} is not a column; choose one of {', '.join(c.key for c in columns)}"
            )
        sign = 1.0 if column.lower_is_better else -1.0
        rows.sort(
            key=lambda r: (
                cells.get((r, column.key)) is None,
                sign * cells[(r, column.key)].value if (r, column.key) in cells else 0.0,
            )
        )
    return Leaderboard(rows=rows, columns=columns, cells=cells, chosen=chosen, ignored=ignored)


def load_leaderboard(paths: Iterable[str | os.PathLike[str]], sort_by: str | None = None) -> Leaderboard:
    """discover -> load -> build, in one call."""
    return build_leaderboard([load_run(p) for p in discover_results(paths)], sort_by=sort_by)


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def _relative_path(path: Path, base_dir: Path | None) -> str:
    """A path as seen from the output file's folder (so links work when the page moves with the runs);
    absolute when there is no such folder."""
    if base_dir is None:
        return str(path)
    try:
        return Path(os.path.relpath(path, base_dir.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def _cell_text(cell: Cell, column: Column) -> str:
    text = column.format(cell.value)
    if not cell.run.is_weighted_sum:
        text += f" ({cell.run.layer_selection.get('layer', cell.run.layer_selection.get('index', '?'))})"
    return text


def render_markdown(
    board: Leaderboard,
    base_dir: Path | None = None,
    profile_markdown: str | None = None,
    title: str = DEFAULT_TITLE,
    note: str | None = None,
) -> str:
    """The table as GitHub Markdown: best bold, "—" for missing cells, ``[n]`` references to a Sources list.

    ``note`` (e.g. "random-init models") is printed in bold under the title."""
    sources = board.sources()
    number = {id(run): i + 1 for i, run in enumerate(sources)}
    lines = [f"# {title}", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines.append("| upstream | " + " | ".join(c.header for c in board.columns) + " |")
    lines.append("|---|" + "|".join("---:" for _ in board.columns) + "|")
    for row in board.rows:
        texts = []
        for column in board.columns:
            cell = board.cell(row, column)
            if cell is None:
                texts.append(MISSING)
                continue
            text = _cell_text(cell, column)
            texts.append(f"**{text}** [{number[id(cell.run)]}]" if cell.best else f"{text} [{number[id(cell.run)]}]")
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    lines += [
        "",
        f"Bold: best of its column (↑ higher is better, ↓ lower is better). {MISSING}: no run. "
        "One run per upstream and task: weighted-sum runs before single-layer probes "
        "(shown with their layer), then the newest.",
        "",
        "## Sources",
        "",
    ]
    for i, run in enumerate(sources, start=1):
        lines.append(
            f"{i}. `{_relative_path(run.path, base_dir)}`: {TASK_TITLES[run.task]}, {run.row}, "
            f"{run.selection_text}, test split {run.test_split}, created {run.created.isoformat()}"
        )
    if board.ignored:
        lines += ["", f"{len(board.ignored)} other run(s) of the same upstream and task were not used."]
    if profile_markdown:
        lines += ["", profile_markdown.strip()]
    return "\n".join(lines) + "\n"


def render_csv(board: Leaderboard, base_dir: Path | None = None) -> str:
    """One row per upstream; per column its value (display units), a best flag and the source path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["upstream"]
    for column in board.columns:
        header += [f"{column.key} {column.arrow}", f"{column.key}_best", f"{column.key}_source"]
    writer.writerow(header)
    for row in board.rows:
        record: list[str] = [row]
        for column in board.columns:
            cell = board.cell(row, column)
            if cell is None:
                record += ["", "", ""]
            else:
                record += [
                    column.format(cell.value),
                    "1" if cell.best else "0",
                    _relative_path(cell.run.path, base_dir),
                ]
        writer.writerow(record)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Figures for the HTML page


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
        candidates = sorted(run.path.parent.rglob(LAYER_WEIGHTS_FILENAME))
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
        weights = {task: _read_layer_weights(files[task]) for task in TASKS if task in files}
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


# ---------------------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1a1a1a; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.7em; }
th { background: #f2f4f7; }
td.value { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #e6f4ea; }
td.missing { color: #999; text-align: center; }
td a { color: inherit; text-decoration: none; border-bottom: 1px dotted #888; }
figure { display: inline-block; margin: 0.8em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #444; max-width: 40em; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
.banner { background: #fff4ce; border-left: 4px solid #e0a800; padding: 0.5em 0.8em; max-width: 60em; }
"""

# Runs only when the page is opened with ``#render-check``: records what the browser rendered (for tests).
_RENDER_CHECK_JS = """
window.addEventListener("load", function () {
  if (window.location.hash !== "#render-check") { return; }
  var report = {images: [], cells: document.querySelectorAll("td.value").length};
  document.querySelectorAll("img").forEach(function (img) {
    report.images.push({alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight});
  });
  var out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
"""


def render_html(
    board: Leaderboard,
    base_dir: Path | None = None,
    figures: Sequence[Figure] = (),
    profile_html: str | None = None,
    title: str = DEFAULT_TITLE,
    note: str | None = None,
) -> str:
    """One self-contained page: the table (links and titles to each results.json), figures inline, profile.

    ``note`` (e.g. "random-init models") is shown in a highlighted paragraph under the title."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_RENDER_CHECK_JS}</script>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if note:
        parts.append(f'<p class="banner" id="note">{esc(note)}</p>')
    parts += ['<table id="leaderboard">', "<thead><tr><th>upstream</th>"]
    parts += [
        f'<th data-key="{esc(c.key)}" title="{esc(c.task)}: {esc(c.metric)}, '
        f'{"lower" if c.lower_is_better else "higher"} is better">{esc(c.header)}</th>'
        for c in board.columns
    ]
    parts.append("</tr></thead><tbody>")
    for row in board.rows:
        parts.append(f'<tr><th scope="row">{esc(row)}</th>')
        for column in board.columns:
            cell = board.cell(row, column)
            if cell is None:
                parts.append(f'<td class="missing" data-key="{esc(column.key)}" title="no run">{MISSING}</td>')
                continue
            source = _relative_path(cell.run.path, base_dir)
            tooltip = f"{source} ({cell.run.selection_text}, created {cell.run.created.isoformat()})"
            css = "value best" if cell.best else "value"
            text = esc(_cell_text(cell, column))
            parts.append(
                f'<td class="{css}" data-key="{esc(column.key)}" data-source="{esc(source)}" '
                f'title="{esc(tooltip)}"><a href="{esc(source)}">'
                + (f"<strong>{text}</strong>" if cell.best else text)
                + "</a></td>"
            )
        parts.append("</tr>")
    parts.append("</tbody></table>")
    parts.append(
        f'<p class="note">Bold on green: best of its column (↑ higher is better, ↓ lower is better). '
        f"{MISSING}: no run for that upstream and task. Hover a value for the results.json it comes from; "
        "click to open it. One run per upstream and task: weighted-sum runs before single-layer probes "
        "(shown with their layer), then the newest.</p>"
    )
    if board.ignored:
        parts.append(
            f'<p class="note">{len(board.ignored)} other run(s) of the same upstream and task were not used.</p>'
        )
    if profile_html:
        parts += ["<h2>Efficiency profile</h2>", profile_html]
    if figures:
        parts.append("<h2>Figures</h2>")
    for figure in figures:
        data = base64.b64encode(figure.png).decode("ascii")
        source_list = ", ".join(_relative_path(p, base_dir) for p in figure.sources)
        parts.append(
            f'<figure><img alt="{esc(figure.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(figure.title)}. From: {esc(source_list)}</figcaption></figure>"
        )
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# One call for the command line and the demo


def write_leaderboard(
    paths: Sequence[str | os.PathLike[str]],
    fmt: str,
    out: str | os.PathLike[str] | None = None,
    profile: str | os.PathLike[str] | None = None,
    sort_by: str | None = None,
    title: str = DEFAULT_TITLE,
    note: str | None = None,
) -> str:
    """Render the leaderboard of the runs under ``paths`` and write it atomically to ``out`` (if given).

    Returns the rendered text. ``profile`` (a profile.json of ``mrsuperb profile``) adds its table to md and html;
    ``title`` and ``note`` head the md and html output (the demo notes its random-init models there).
    """
    if fmt not in FORMATS:
        raise LeaderboardError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if profile is not None and fmt == "csv":
        raise LeaderboardError(
            "--profile is shown in md and html output only; the profile's own JSON holds its numbers for CSV users"
        )
    board = load_leaderboard(paths, sort_by=sort_by)
    # Written files link relative to their own folder; printed tables show paths under the current folder
    # relative to it, others absolute.
    if out is not None:
        base_dir: Path | None = Path(out).resolve().parent
    else:
        cwd = Path.cwd().resolve()
        base_dir = cwd if all(r.path.is_relative_to(cwd) for r in board.chosen.values()) else None
    profile_data = None
    if profile is not None:
        from downstream_probes.profiling import read_profile

        profile_data = read_profile(profile)
    if fmt == "md":
        from downstream_probes.profiling import profile_markdown

        text = render_markdown(
            board, base_dir, profile_markdown(profile_data) if profile_data else None, title=title, note=note
        )
    elif fmt == "csv":
        text = render_csv(board, base_dir)
    else:
        from downstream_probes.profiling import profile_html

        roots = [Path(p).resolve() for p in paths if Path(p).is_dir()] or [r.path.parent for r in board.chosen.values()]
        text = render_html(
            board,
            base_dir,
            collect_figures(board, roots),
            profile_html(profile_data) if profile_data else None,
            title=title,
            note=note,
        )
    if out is not None:
        write_text_atomic(out, text)
    return text
