"""Rendering a leaderboard as Markdown, CSV or one self-contained HTML page, and ``write_leaderboard``, the one call
the command line and the pipelines make."""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from downstream_probes.reports.leaderboard.figures import Figure, collect_comparisons, collect_figures
from downstream_probes.reports.leaderboard.reading import (
    Cell,
    Column,
    Leaderboard,
    LeaderboardError,
    RunRecord,
    load_leaderboard,
)
from downstream_probes.tasks import TASKS
from upstream_mrhubert.atomic_io import write_text_atomic

MISSING = "—"
DEFAULT_TITLE = "SUPERB leaderboard"
FORMATS = ("md", "csv", "html")


# ---------------------------------------------------------------------------------------------------------------
# Rendering


def _code_span(text: str) -> str:
    """``text`` as one Markdown code span whatever backticks it holds (CommonMark: a fence longer than any run of
    backticks inside, padded when the text starts or ends with one); line breaks become spaces."""
    text = text.replace("\r", " ").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _relative_path(path: Path, base_dir: Path | None) -> str:
    """A path as seen from the output file's folder (so links work when the page moves with the runs);
    absolute when there is no such folder."""
    if base_dir is None:
        return str(path)
    try:
        return Path(os.path.relpath(path, base_dir.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def _href(path: str) -> str:
    """A link to a file path that a browser can only read as that file: every character but letters, digits,
    ``/`` and ``_.-~`` percent-encoded, so a folder named ``javascript:...`` (or ``data:``, ``?``, ``#``) never
    becomes a scheme, a query or a fragment; an absolute path becomes a ``file:`` URL."""
    quoted = urllib.parse.quote(Path(path).as_posix(), safe="/")
    return "file://" + quoted if quoted.startswith("/") else quoted


def _markdown_cell(text: str) -> str:
    """Text that stays inside one Markdown table cell: ``|`` escaped, line breaks as spaces."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cell_text(cell: Cell, column: Column) -> str:
    text = column.format(cell.value)
    spread = cell.run.test_spread(column.metric)
    if spread is not None:  # a SUPERB protocol: mean ± sd over seeds of the dev-selected lr, and the grid's gaps
        sd = spread.get("sd")
        text += f" ± {column.display_value(sd):.{column.digits}f}" if sd is not None else ""
        gaps = cell.run.grid_gaps
        return text + f" (n={spread.get('n', 0)}{'; ' + gaps if gaps else ''})"
    if not cell.run.is_weighted_sum:
        text += f" ({cell.run.layer_selection.get('layer', cell.run.layer_selection.get('index', '?'))})"
    return text


RULES_NOTE = (
    "A cell with ± comes from a SUPERB grid (protocol.json of mrsuperb superb): the test metric of the learning "
    "rate chosen on dev, mean ± sd over n seeds, with the grid points still missing or diverged; any other cell is "
    "one run: weighted-sum runs before single-layer probes (shown with their layer), then the newest."
)


def _rule_text(run: RunRecord) -> str:
    """The rule that filled a source's cells; for a protocol also its chosen lr and its grid's gaps."""
    gaps = run.grid_gaps
    return run.rule + (f" ({gaps})" if gaps else "")


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
            text = _markdown_cell(_cell_text(cell, column))
            texts.append(f"**{text}** [{number[id(cell.run)]}]" if cell.best else f"{text} [{number[id(cell.run)]}]")
        lines.append(f"| {_markdown_cell(row)} | " + " | ".join(texts) + " |")
    lines += [
        "",
        (
            f"Bold: best of its column (↑ higher is better, ↓ lower is better). {MISSING}: no run. "
            f"{RULES_NOTE} Each source says which rule filled its cells."
        ),
        "",
        "## Sources",
        "",
    ]
    for i, run in enumerate(sources, start=1):
        lines.append(
            f"{i}. {_code_span(_relative_path(run.path, base_dir))}: {TASKS[run.task].title}, {run.row}, "
            f"{run.selection_text}, test split {run.test_split}, created {run.created.isoformat()}; {_rule_text(run)}"
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
        header += [f"{column.key}_sd", f"{column.key}_n", f"{column.key}_rule"]
    writer.writerow(header)
    for row in board.rows:
        record: list[str] = [row]
        for column in board.columns:
            cell = board.cell(row, column)
            if cell is None:
                record += ["", "", "", "", "", ""]
            else:
                spread = cell.run.test_spread(column.metric) or {}
                sd = spread.get("sd")
                record += [
                    column.format(cell.value),
                    "1" if cell.best else "0",
                    _relative_path(cell.run.path, base_dir),
                    "" if sd is None else column.format(sd),
                    str(spread.get("n", 1)),
                    _rule_text(cell.run),
                ]
        writer.writerow(record)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1a1a1a; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.7em; }
th { background: #f2f4f7; }
td.value, td.stat { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; background: #e6f4ea; }
td.missing { color: #999; text-align: center; }
td a { color: inherit; text-decoration: none; border-bottom: 1px dotted #888; }
figure { display: inline-block; margin: 0.8em; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; }
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


def _comparison_table(documents: Sequence[tuple[Path, list[dict[str, Any]]]], base_dir: Path | None) -> str:
    """One table of ``mrsuperb compare``'s rank agreements: a row per (model, task, pair of sources)."""
    esc = html.escape

    def number(value: Any, digits: int = 3) -> str:
        return MISSING if value is None else f"{float(value):.{digits}f}"

    def interval(value: Any) -> str:
        if not isinstance(value, (list, tuple)) or len(value) != 2 or None in value:
            return MISSING
        return f"[{float(value[0]):.2f}, {float(value[1]):.2f}]"

    rows = [
        (
            '<table id="comparisons"><thead><tr><th>model</th><th>task</th><th>ranking A</th><th>ranking B</th>'
            "<th>layers</th><th>Spearman ρ</th><th>ρ 95 % interval</th><th>p (no relation)</th><th>Kendall τ</th>"
            "<th>top-k overlap</th><th>top-k by chance</th></tr></thead><tbody>"
        )
    ]
    for path, comparisons in documents:
        source = esc(_relative_path(path, base_dir))
        for c in comparisons:
            rows.append(
                f'<tr data-source="{source}"><th scope="row">{esc(str(c.get("model", "")))}</th>'
                f"<td>{esc(str(c.get('task', '')))}</td><td>{esc(str(c.get('a', '')))}</td>"
                f'<td>{esc(str(c.get("b", "")))}</td><td class="stat">{esc(str(c.get("layers", "")))}</td>'
                f'<td class="stat">{number(c.get("spearman"))}</td>'
                f'<td class="stat">{interval(c.get("spearman_ci95"))}</td>'
                f'<td class="stat">{number(c.get("p_value"), 2)}</td><td class="stat">{number(c.get("kendall"))}</td>'
                f'<td class="stat">{number(c.get("top_k_overlap"))} (k={esc(str(c.get("top_k", "")))})</td>'
                f'<td class="stat">{number(c.get("top_k_chance"))}</td></tr>'
            )
    rows.append("</tbody></table>")
    files = ", ".join(esc(_relative_path(path, base_dir)) for path, _ in documents)
    rows.append(
        f'<p class="note">Rank agreement of one model\'s layer rankings (learnt weights, CCA, single-layer probes); '
        "a row never mixes two models. The interval resamples CCA sample sets and splits (and seeds where there are "
        "several); p is against no relation under smooth layer curves (phase-randomised surrogates), so neighbouring "
        f"layers' correlation is not counted as evidence. From: {files}</p>"
    )
    return "\n".join(rows)


def render_html(
    board: Leaderboard,
    base_dir: Path | None = None,
    figures: Sequence[Figure] = (),
    profile_html: str | None = None,
    title: str = DEFAULT_TITLE,
    note: str | None = None,
    comparisons: Sequence[tuple[Path, list[dict[str, Any]]]] = (),
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
            tooltip = (
                f"{source} ({cell.run.selection_text}, created {cell.run.created.isoformat()}; {_rule_text(cell.run)})"
            )
            css = "value best" if cell.best else "value"
            text = esc(_cell_text(cell, column))
            parts.append(
                f'<td class="{css}" data-key="{esc(column.key)}" data-source="{esc(source)}" '
                f'data-rule="{"protocol" if cell.run.protocol else "single-run"}" '
                f'title="{esc(tooltip)}"><a href="{esc(_href(source))}">'
                + (f"<strong>{text}</strong>" if cell.best else text)
                + "</a></td>"
            )
        parts.append("</tr>")
    parts.append("</tbody></table>")
    parts.append(
        f'<p class="note">Bold on green: best of its column (↑ higher is better, ↓ lower is better). '
        f"{MISSING}: no run for that upstream and task. Hover a value for the results.json it comes from; "
        f"click to open it. {esc(RULES_NOTE)}</p>"
    )
    if board.ignored:
        parts.append(
            f'<p class="note">{len(board.ignored)} other run(s) of the same upstream and task were not used.</p>'
        )
    if profile_html:
        parts += ["<h2>Efficiency profile</h2>", profile_html]
    if comparisons:
        parts += ["<h2>Layer rankings compared</h2>", _comparison_table(comparisons, base_dir)]
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
    if out is not None:
        _check_out(Path(out))
    board = load_leaderboard(paths, sort_by=sort_by)
    # Written files link relative to their own folder; printed tables show paths under the current folder
    # relative to it, others absolute.
    if out is not None:
        base_dir: Path | None = Path(out).resolve().parent
    else:
        cwd = Path.cwd().resolve()
        base_dir = cwd if all(r.path.is_relative_to(cwd) for r in board.chosen.values()) else None
    profile_section = None
    if profile is not None:
        # Imported with --profile only: the profile package measures with torch, which a leaderboard does not need.
        from downstream_probes.reports.profile import profile_html, profile_markdown, read_profile

        profile_data = read_profile(profile)
        if profile_data:
            profile_section = profile_markdown(profile_data) if fmt == "md" else profile_html(profile_data)
    if fmt == "md":
        text = render_markdown(board, base_dir, profile_section, title=title, note=note)
    elif fmt == "csv":
        text = render_csv(board, base_dir)
    else:
        roots = [Path(p).resolve() for p in paths if Path(p).is_dir()] or [r.path.parent for r in board.chosen.values()]
        text = render_html(
            board,
            base_dir,
            collect_figures(board, roots),
            profile_section,
            title=title,
            note=note,
            comparisons=collect_comparisons(roots),
        )
    if out is not None:
        _write_out(Path(out), text)
    return text


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot be written before anything is read: a folder, a name too long for the file
    system (which ``is_dir`` itself reports as an OSError)."""
    if len(out.name.encode("utf-8")) > 255:
        raise LeaderboardError(
            f"--out {out}: the file name is {len(out.name.encode())} bytes long; at most 255 are allowed"
        )
    try:
        is_dir = out.is_dir()
    except OSError as error:
        raise LeaderboardError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    if is_dir:
        raise LeaderboardError(f"--out {out} is a folder; give a file name, e.g. {out / 'leaderboard.md'}")


def _write_out(out: Path, text: str) -> None:
    """Write the rendered board to ``out``; a folder or an unwritable place is one clear error."""
    _check_out(out)
    try:
        write_text_atomic(out, text)
    except OSError as error:
        raise LeaderboardError(
            f"--out {out}: cannot write there ({error.strerror or error}); choose a writable folder"
        ) from None
