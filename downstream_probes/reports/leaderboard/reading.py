"""Reading runs into a leaderboard: the Table 2 columns, ``results.json`` files found and checked (through the schema
in ``downstream_probes.tasks``), one run chosen per (model, task), cells filled and the best of each column marked."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from downstream_probes.result_files import (
    PROTOCOL_FILE,
    RESULTS_FILE,
    RESULTS_SCHEMA,
    ResultsError,
    load_protocol_file,
    load_results_file,
)
from downstream_probes.tasks import TASK_NAMES, TASKS, ReportedMetric, lower_is_better, upstream_identity
from upstream_mrhubert.checkpoints.registry import RELEASED_CHECKPOINTS
from upstream_mrhubert.errors import MrsuperbError


class LeaderboardError(MrsuperbError, ValueError):
    """A results file or option the leaderboard cannot use; the message names it and says what to do."""


# ---------------------------------------------------------------------------------------------------------------
# Columns


@dataclass(frozen=True)
class Column:
    """One metric column: which task and metric fill it and how it is shown (``tasks.ReportedMetric``); its
    direction is the metric's (``tasks.METRICS``)."""

    task: str
    reported: ReportedMetric

    @property
    def key(self) -> str:
        return self.reported.key

    @property
    def metric(self) -> str:
        return self.reported.metric

    @property
    def label(self) -> str:
        return self.reported.label

    @property
    def percent(self) -> bool:
        return self.reported.percent

    @property
    def digits(self) -> int:
        return self.reported.digits

    @property
    def lower_is_better(self) -> bool:
        return lower_is_better(self.metric)

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_is_better else "↑"

    @property
    def header(self) -> str:
        unit = " (%)" if self.percent else ""
        return f"{self.label}{unit} {self.arrow}"

    def display_value(self, stored: float) -> float:
        return float(stored) * self.reported.stored_scale

    def format(self, stored: float) -> str:
        return f"{self.display_value(stored):.{self.digits}f}"

    def is_better(self, a: float, b: float) -> bool:
        return a < b if self.lower_is_better else a > b


TABLE2_COLUMNS: tuple[Column, ...] = tuple(
    Column(spec.task, reported) for spec in TASKS.values() for reported in spec.reported
)


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
    # set when the record stands for a SUPERB grid (protocol.json): ``metrics`` then hold the test means of the
    # dev-selected learning rate, ``raw`` the protocol document
    protocol: bool = False

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

    @property
    def rule(self) -> str:
        """Which rule filled a cell from this record, in words."""
        if not self.protocol:
            return "one run (weighted sum before single layer, then newest)"
        selection = self.raw.get("selection") or {}
        lrs, seeds = len(self.raw.get("lrs", [])), len(self.raw.get("seeds", []))
        return (
            f"SUPERB protocol: lr {selection.get('lr_name', '?')} chosen on {self.raw.get('dev_split', 'dev')} "
            f"from a grid of {lrs} lr x {_seeds_text(seeds)}"
        )

    def test_spread(self, metric: str) -> dict[str, Any] | None:
        """``{"mean", "sd", "n"}`` of a protocol's test metric over seeds; None for a single run."""
        if not self.protocol:
            return None
        return ((self.raw.get("selection") or {}).get("test") or {}).get(metric)

    @property
    def grid_gaps(self) -> str:
        """ "2 missing, 1 diverged" for a protocol whose grid is not whole; "" otherwise."""
        if not self.protocol:
            return ""
        parts = [f"{len(self.raw.get(key) or [])} {key}" for key in ("missing", "diverged") if self.raw.get(key)]
        return ", ".join(parts)


def _seeds_text(count: int) -> str:
    return f"{count} seed{'s' if count != 1 else ''}"


def _other_schema(path: Path) -> bool:
    """A results.json another tool of ours wrote (e.g. a pre-training run, ``mrsuperb.pretrain/1``)."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8")).get("schema")
    except (OSError, ValueError, AttributeError):
        return False  # unreadable: load_run names it
    return isinstance(schema, str) and schema.startswith("mrsuperb.") and schema != RESULTS_SCHEMA


def discover_results(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """results.json files: given files as they are, folders searched recursively (skipping the results.json of our
    other tools, such as pre-training runs); sorted, without duplicates."""
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass results.json files or folders holding them")
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob(RESULTS_FILE) if p.is_file() and not _other_schema(p))
        else:
            found.add(path.resolve())
    if not found:
        raise LeaderboardError(
            f"no {RESULTS_FILE} found under {', '.join(map(str, paths))}; run run_downstream.py first "
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
    config = results.get("config") or {}
    checkpoint = results.get("upstream_ckpt") or (config.get("upstream_ckpt") if isinstance(config, Mapping) else None)
    return upstream_identity(str(results["upstream"]), checkpoint)


def load_run(path: str | os.PathLike[str]) -> RunRecord:
    """Read and check one results.json."""
    path = Path(path)
    try:
        data = load_results_file(path)
    except ResultsError as error:
        raise LeaderboardError(str(error)) from None
    return RunRecord(
        path=path,
        task=str(data["task"]),
        upstream=str(data["upstream"]),
        row=row_label(data),
        layer_selection=dict(data["layer_selection"] or {}),
        metrics=_checked_metrics(data["metrics"], path),
        test_split=str(data["test_split"]),
        created=_parse_created(data["created"], path),
        raw=data,
    )


def _checked_metrics(metrics: Any, path: Path) -> dict[str, dict[str, float]]:
    """``metrics`` as ``{split: {metric: number}}``; anything else is an error naming the file and the entry."""
    if not isinstance(metrics, Mapping):
        raise LeaderboardError(f"{path}: 'metrics' is a {type(metrics).__name__}, not {{split: {{metric: value}}}}")
    checked: dict[str, dict[str, float]] = {}
    for split, values in metrics.items():
        if not isinstance(values, Mapping):
            raise LeaderboardError(
                f"{path}: metrics[{split!r}] is {values!r}, not a mapping of metric names to numbers; the file was "
                "not written by run_downstream.py: re-run the evaluation or fix the file"
            )
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise LeaderboardError(
                    f"{path}: metrics[{split!r}][{name!r}] is {value!r}, not a number; re-run the evaluation or fix "
                    "the file"
                )
        checked[str(split)] = {str(name): float(value) for name, value in values.items()}
    return checked


def choose_run(candidates: Sequence[RunRecord]) -> RunRecord:
    """The run that fills one (upstream, task) cell: a SUPERB protocol (protocol.json) first, then weighted sum,
    then newest, then largest path."""
    return max(candidates, key=lambda r: (r.protocol, r.is_weighted_sum, r.created, str(r.path)))


# ---------------------------------------------------------------------------------------------------------------
# SUPERB protocols (protocol.json of ``mrsuperb superb``)


def discover_protocols(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """protocol.json files under the given folders (or given directly), sorted."""
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.update(p.resolve() for p in path.rglob(PROTOCOL_FILE) if p.is_file())
        elif path.name == PROTOCOL_FILE and path.is_file():
            found.add(path.resolve())
    return sorted(found)


def load_protocol_run(path: str | os.PathLike[str]) -> RunRecord | None:
    """A protocol.json as one record (test means of the dev-selected lr); None while no cell has finished.

    Every cell's results.json must belong to the protocol's upstream identity: a cell never mixes two models.
    """
    path = Path(path)
    try:
        data = load_protocol_file(path)
    except ResultsError as error:
        raise LeaderboardError(str(error)) from None
    for cell in data["cells"]:
        results = Path(str(cell.get("expdir", ""))) / RESULTS_FILE
        if results.is_file() and row_label(load_run(results).raw) != data["upstream_identity"]:
            raise LeaderboardError(
                f"{path}: cell {results} is a run of {row_label(load_run(results).raw)}, not of "
                f"{data['upstream_identity']}; a grid holds one upstream: rerun mrsuperb superb into a clean -p"
            )
    selection = data.get("selection")
    if not selection:
        return None
    means = {name: summary["mean"] for name, summary in selection["test"].items() if summary.get("mean") is not None}
    return RunRecord(
        path=path,
        task=str(data["task"]),
        upstream=str(data["upstream"]),
        row=str(data["upstream_identity"]),
        layer_selection={"mode": "weighted_sum"},
        metrics={str(data["test_split"]): means},
        test_split=str(data["test_split"]),
        created=_parse_created(data.get("created"), path),
        raw=data,
        protocol=True,
    )


def protocol_cell_results(records: Iterable[RunRecord]) -> set[Path]:
    """The results.json of every cell of the given protocols (they are summarised there, not single runs)."""
    return {
        (Path(str(cell["expdir"])) / RESULTS_FILE).resolve()
        for record in records
        if record.protocol
        for cell in record.raw["cells"]
        if cell.get("expdir")
    }


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
        order = {task: i for i, task in enumerate(TASK_NAMES)}
        return [self.chosen[key] for key in sorted(self.chosen, key=lambda k: (self.rows.index(k[0]), order[k[1]]))]


def _row_sort_key(row: str) -> tuple[int, int, str]:
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
        sorting = next((c for c in columns if c.key == sort_by), None)
        if sorting is None:
            raise LeaderboardError(
                f"--sort {sort_by!r} is not a column; choose one of {', '.join(c.key for c in columns)}"
            )
        sign = 1.0 if sorting.lower_is_better else -1.0
        rows.sort(
            key=lambda r: (
                cells.get((r, sorting.key)) is None,
                sign * cells[(r, sorting.key)].value if (r, sorting.key) in cells else 0.0,
            )
        )
    return Leaderboard(rows=rows, columns=columns, cells=cells, chosen=chosen, ignored=ignored)


def load_leaderboard(paths: Iterable[str | os.PathLike[str]], sort_by: str | None = None) -> Leaderboard:
    """discover -> load -> build, in one call: SUPERB protocols (protocol.json) and single runs (results.json not
    part of a protocol's grid)."""
    paths = list(paths)
    protocols = [r for r in (load_protocol_run(p) for p in discover_protocols(paths)) if r is not None]
    summarised = protocol_cell_results(protocols)
    try:
        found = discover_results(paths)
    except LeaderboardError:
        if not protocols:
            raise
        found = []
    runs = [load_run(p) for p in found if p.resolve() not in summarised]
    return build_leaderboard([*protocols, *runs], sort_by=sort_by)
