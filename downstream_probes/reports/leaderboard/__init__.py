"""A SUPERB leaderboard (the paper's Table 2) from ``results.json`` files, as Markdown, CSV or one HTML page.

Rows are upstreams, columns the metrics of arXiv 2410.23955 Table 2 (ASR WER, SF slot-type F1 and slot-value CER,
SE STOI and PESQ, IC and KS accuracy, SD DER, plus SD frame accuracy, the "SD Acc" the paper prints). Every header
carries the direction of better (↑/↓); the best value of each column is marked; a missing (upstream, task) cell is
shown as "—"; every cell names the ``results.json`` it came from.

A ``protocol.json`` of ``mrsuperb superb`` (a SUPERB learning-rate x seed grid) fills its (upstream, task) cell
first: the test metric of the learning rate chosen on dev, shown as mean ± sd (n seeds) with the grid points still
missing or diverged; the grid's own results.json are summarised there, not candidates. Every source says which
rule filled its cells.

Choosing among several other runs of one (upstream, task), deterministically:
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

from downstream_probes.reports.leaderboard.figures import Figure, collect_figures
from downstream_probes.reports.leaderboard.reading import (
    PAPER_ROW_ORDER,
    TABLE2_COLUMNS,
    Cell,
    Column,
    Leaderboard,
    LeaderboardError,
    RunRecord,
    build_leaderboard,
    choose_run,
    discover_protocols,
    discover_results,
    load_leaderboard,
    load_run,
    row_label,
)
from downstream_probes.reports.leaderboard.render import (
    DEFAULT_TITLE,
    FORMATS,
    MISSING,
    render_csv,
    render_html,
    render_markdown,
    write_leaderboard,
)

__all__ = [
    "DEFAULT_TITLE",
    "FORMATS",
    "MISSING",
    "PAPER_ROW_ORDER",
    "TABLE2_COLUMNS",
    "Cell",
    "Column",
    "Figure",
    "Leaderboard",
    "LeaderboardError",
    "RunRecord",
    "build_leaderboard",
    "choose_run",
    "collect_figures",
    "discover_protocols",
    "discover_results",
    "load_leaderboard",
    "load_run",
    "render_csv",
    "render_html",
    "render_markdown",
    "row_label",
    "write_leaderboard",
]
