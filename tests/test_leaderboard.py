"""The leaderboard: row order, best per column by direction, missing cells, run choice, traceability, the HTML
page as a browser renders it, and the efficiency profile's consistency with the architecture."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import shutil
import statistics
import subprocess
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest

from downstream_probes.cli import main as mrsuperb
from downstream_probes.reports import leaderboard as lb

# --------------------------------------------------------------------------------------------------------------
# Fixtures: results.json files in the shared schema


def write_results(
    root: Path,
    upstream: str,
    task: str,
    metrics: dict[str, float],
    *,
    mode: str = "weighted_sum",
    layer: str = "T7",
    created: str = "2024-05-01T10:00:00+00:00",
    name: str | None = None,
) -> Path:
    test_split = {"asr": "test-clean", "sd": "test", "se": "test", "sf": "test", "ic": "test", "ks": "test"}[task]
    folder = root / (name or f"{upstream}_{task}_{mode}")
    folder.mkdir(parents=True, exist_ok=True)
    selection = {"mode": "weighted_sum"} if mode == "weighted_sum" else {"mode": "single", "layer": layer, "index": 7}
    payload = {
        "schema": "mrsuperb.results/1",
        "task": task,
        "upstream": upstream,
        "layer_selection": selection,
        "metrics": {"dev": dict(metrics.items()), test_split: metrics},
        "test_split": test_split,
        "best_step": 10,
        "config": {},
        "seed": 0,
        "versions": {},
        "expdir": str(folder),
        "created": created,
    }
    path = folder / "results.json"
    path.write_text(json.dumps(payload))
    return path


PAPER_TABLE2 = {
    # upstream: (asr wer %, sf f1, sf cer, stoi, pesq, ic acc, ks acc, sd der)
    "mrhubert_mono_base": (5.85, 0.89, 0.24, 0.94, 2.53, 0.986, 0.957, 0.052),
    "mrhubert_b4a": (6.35, 0.89, 0.24, 0.94, 2.53, 0.981, 0.967, 0.049),
    "mrhubert_b5a": (5.82, 0.88, 0.26, 0.94, 2.55, 0.983, 0.963, 0.051),
}


def write_paper_runs(root: Path, skip: set[tuple[str, str]] = frozenset()) -> None:
    for upstream, (wer, f1, cer, stoi, pesq, ic, ks, der) in PAPER_TABLE2.items():
        per_task = {
            "asr": {"wer": wer, "cer": 2.0},
            "sf": {"slot_type_f1": f1, "slot_value_cer": cer},
            "se": {"stoi": stoi, "pesq": pesq, "si_sdr": 10.0},
            "ic": {"acc": ic},
            "ks": {"acc": ks},
            "sd": {"der": der, "frame_acc": 1 - der},
        }
        for task, metrics in per_task.items():
            if (upstream, task) not in skip:
                write_results(root, upstream, task, metrics)


def column(key: str) -> lb.Column:
    return next(c for c in lb.TABLE2_COLUMNS if c.key == key)


# --------------------------------------------------------------------------------------------------------------
# The table


def test_rows_follow_the_paper_then_sort_by_a_column(tmp_path: Path) -> None:
    write_paper_runs(tmp_path)
    write_results(tmp_path, "zz_other_upstream", "asr", {"wer": 9.0})
    write_results(tmp_path, "hubert_base_ls960", "asr", {"wer": 6.34})
    board = lb.load_leaderboard([tmp_path])
    assert board.rows == [
        "hubert_base_ls960",
        "mrhubert_mono_base",
        "mrhubert_b4a",
        "mrhubert_b5a",
        "zz_other_upstream",
    ]
    by_wer = lb.load_leaderboard([tmp_path], sort_by="asr_wer")
    assert by_wer.rows == [
        "mrhubert_b5a",
        "mrhubert_mono_base",
        "hubert_base_ls960",
        "mrhubert_b4a",
        "zz_other_upstream",
    ]
    by_ks = lb.load_leaderboard([tmp_path], sort_by="ks_acc")  # higher is better; rows without KS last
    assert by_ks.rows[:3] == ["mrhubert_b4a", "mrhubert_b5a", "mrhubert_mono_base"]
    assert set(by_ks.rows[3:]) == {"hubert_base_ls960", "zz_other_upstream"}


def test_best_is_marked_per_column_in_the_direction_of_better(tmp_path: Path) -> None:
    write_paper_runs(tmp_path)
    board = lb.load_leaderboard([tmp_path])
    best = {c.key: sorted(r for r in board.rows if board.cell(r, c) and board.cell(r, c).best) for c in board.columns}
    assert best["asr_wer"] == ["mrhubert_b5a"]  # lowest WER
    assert best["sf_cer"] == ["mrhubert_b4a", "mrhubert_mono_base"]  # lowest CER, a tie: both marked
    assert best["sf_f1"] == ["mrhubert_b4a", "mrhubert_mono_base"]  # highest F1, tied
    assert best["ic_acc"] == ["mrhubert_mono_base"]  # highest accuracy
    assert best["ks_acc"] == ["mrhubert_b4a"]
    assert best["sd_der"] == ["mrhubert_b4a"]  # lowest DER
    assert best["se_pesq"] == ["mrhubert_b5a"]
    md = lb.render_markdown(board)
    b5a_line = next(line for line in md.splitlines() if line.startswith("| mrhubert_b5a"))
    assert "**5.82** [" in b5a_line and "**2.55** [" in b5a_line and "**" not in b5a_line.split("|")[7]
    header = md.splitlines()[2]
    assert "ASR WER (%) ↓" in header and "KS Acc (%) ↑" in header and "SE STOI ↑" in header


def test_missing_cells_are_shown_as_missing(tmp_path: Path) -> None:
    write_paper_runs(tmp_path, skip={("mrhubert_b4a", "se"), ("mrhubert_b5a", "sd")})
    board = lb.load_leaderboard([tmp_path])
    assert board.cell("mrhubert_b4a", column("se_stoi")) is None
    md_line = next(line for line in lb.render_markdown(board).splitlines() if line.startswith("| mrhubert_b4a"))
    cells = [c.strip() for c in md_line.strip("|").split("|")]
    assert cells[4] == lb.MISSING and cells[5] == lb.MISSING and cells[1] != lb.MISSING
    rows = {r["upstream"]: r for r in csv.DictReader(io.StringIO(lb.render_csv(board)))}
    assert rows["mrhubert_b5a"]["sd_der ↓"] == "" and rows["mrhubert_b5a"]["sd_der_source"] == ""
    assert rows["mrhubert_b4a"]["sd_der ↓"] == "4.90" and rows["mrhubert_b4a"]["sd_der_best"] == "1"


def test_units_follow_each_metric_not_its_value(tmp_path: Path) -> None:
    # ASR WER is stored in percent by s3prl (0.8 means 0.8 %); SF CER is a fraction that may exceed 1.
    write_results(tmp_path, "mrhubert_b4a", "asr", {"wer": 0.8})
    write_results(tmp_path, "mrhubert_b4a", "sf", {"slot_type_f1": 0.5, "slot_value_cer": 1.2})
    board = lb.load_leaderboard([tmp_path])
    assert column("asr_wer").format(board.cell("mrhubert_b4a", column("asr_wer")).value) == "0.80"
    assert column("sf_cer").format(board.cell("mrhubert_b4a", column("sf_cer")).value) == "120.00"
    assert column("sf_f1").format(board.cell("mrhubert_b4a", column("sf_f1")).value) == "50.00"


def test_run_choice_prefers_weighted_sum_then_newest(tmp_path: Path) -> None:
    old = write_results(tmp_path, "mrhubert_b4a", "asr", {"wer": 7.0}, created="2024-01-01T00:00:00Z", name="old")
    new = write_results(tmp_path, "mrhubert_b4a", "asr", {"wer": 8.0}, created="2024-02-01T00:00:00Z", name="new")
    write_results(
        tmp_path, "mrhubert_b4a", "asr", {"wer": 3.0}, mode="single", created="2024-03-01T00:00:00Z", name="probe"
    )
    probe_only = write_results(
        tmp_path, "mrhubert_b5a", "asr", {"wer": 4.0}, mode="single", layer="T9", name="probe_b5a"
    )
    board = lb.load_leaderboard([tmp_path])
    chosen = board.cell("mrhubert_b4a", column("asr_wer"))
    assert chosen.run.path == new.resolve() and chosen.value == 8.0  # newest weighted sum, not the better old one
    assert {r.path for r in board.ignored} == {old.resolve(), (tmp_path / "probe" / "results.json").resolve()}
    assert board.cell("mrhubert_b5a", column("asr_wer")).run.path == probe_only.resolve()
    md = lb.render_markdown(board)
    assert "4.00 (T9)" in md  # a single-layer cell says which layer


def test_every_cell_is_traceable_to_its_results_file(tmp_path: Path) -> None:
    runs, out_dir = tmp_path / "runs", tmp_path / "report"
    write_paper_runs(runs)
    out = out_dir / "leaderboard.md"
    text = lb.write_leaderboard([runs], "md", out=out)
    assert out.read_text() == text
    sources = {}
    for line in text.split("## Sources", 1)[1].splitlines():
        if line[:1].isdigit():
            number, rest = line.split(". ", 1)
            sources[int(number)] = (out_dir / rest.split("`")[1]).resolve()
    table = [line for line in text.splitlines() if line.startswith("| mrhubert_")]
    for line in table:
        upstream = line.split("|")[1].strip()
        for index, cell in enumerate(c.strip() for c in line.strip("|").split("|")[1:]):
            ref = int(cell.rsplit("[", 1)[1].rstrip("]"))
            data = json.loads(sources[ref].read_text())
            col = lb.TABLE2_COLUMNS[index]
            assert data["upstream"] == upstream and data["task"] == col.task
            assert cell.replace("*", "").startswith(col.format(data["metrics"][data["test_split"]][col.metric]))

    csv_out = out_dir / "leaderboard.csv"
    lb.write_leaderboard([runs], "csv", out=csv_out)
    for row in csv.DictReader(csv_out.open()):
        data = json.loads((out_dir / row["ic_acc_source"]).read_text())
        assert data["upstream"] == row["upstream"] and data["task"] == "ic"
        assert row["ic_acc ↑"] == f"{100 * data['metrics']['test']['acc']:.2f}"


def test_bad_input_gives_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x" / "results.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"schema": "something/else"}))
    with pytest.raises(lb.LeaderboardError, match=str(bad)):
        lb.load_leaderboard([tmp_path])
    assert mrsuperb(["leaderboard", str(tmp_path / "nowhere")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert mrsuperb(["leaderboard", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "no results.json found" in err and "Traceback" not in err


def test_cli_writes_atomically_and_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_paper_runs(tmp_path / "runs")
    out = tmp_path / "board.csv"
    assert mrsuperb(["leaderboard", str(tmp_path / "runs"), "--format", "csv", "--out", str(out)]) == 0
    assert capsys.readouterr().out == out.read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


# --------------------------------------------------------------------------------------------------------------
# The HTML page in a real browser


def chromium_binary() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class _PageReader(HTMLParser):
    """Collects what a reader sees of the leaderboard table, the images and the render-check report."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], dict] = {}
        self.row: str | None = None
        self._stack: list[tuple[str, dict]] = []
        self._text: list[str] = []
        self.report: str = ""
        self.in_report = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag in ("td", "th"):
            self._text = []
        if tag == "td":
            self._current = {
                "class": attributes.get("class", ""),
                "title": attributes.get("title", ""),
                "key": attributes.get("data-key"),
                "strong": False,
                "href": None,
            }
        if tag == "strong" and getattr(self, "_current", None):
            self._current["strong"] = True
        if tag == "a" and getattr(self, "_current", None):
            self._current["href"] = attributes.get("href")
        if tag == "pre" and attributes.get("id") == "render-check":
            self.in_report = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "th" and self._text is not None:
            self.row = "".join(self._text).strip()
        if tag == "td" and getattr(self, "_current", None):
            self._current["text"] = "".join(self._text).strip()
            self.cells[(self.row, self._current["key"])] = self._current
            self._current = None
        if tag == "pre":
            self.in_report = False

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        if self.in_report:
            self.report += data


@pytest.fixture
def browser() -> str:
    """Headless Chromium's binary; the test is skipped without it (and fails in CI, which installs it)."""
    found = chromium_binary()
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is required in CI (.ci/run installs the Debian package `chromium`)")
        pytest.skip("no chromium binary (/usr/bin/chromium); install the Debian package `chromium` to run this check")
    return found


def _dump_dom(browser: str, url: str, profile: Path, *extra: str) -> str:
    """The DOM headless Chromium ends with after loading ``url`` (its scripts run)."""
    completed = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *extra,
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def test_html_page_as_a_browser_renders_it(tmp_path: Path, browser: str) -> None:
    runs = tmp_path / "runs"
    write_paper_runs(runs, skip={("mrhubert_b4a", "se")})
    names = ["T0", "T1", "T2", "T3", "T4", "D0", "T5", "T6", "T7", "T8", "U0", "T9", "T10", "T11", "T12"]
    for task in ("asr", "sf", "ks"):
        folder = runs / f"mrhubert_b5a_{task}_weighted_sum"
        weights = [1.0 / (1 + abs(i - 8)) for i in range(len(names))]
        total = sum(weights)
        (folder / "layer_weights.json").write_text(
            json.dumps(
                {
                    "upstream": "mrhubert_b5a",
                    "task": task,
                    "checkpoint": str(folder / "dev-best.ckpt"),
                    "step": 10,
                    "layers": [
                        {"name": n, "weight": w / total, "raw": w} for n, w in zip(names, weights, strict=False)
                    ],
                }
            )
        )
    for upstream in ("mrhubert_b5a", "mrhubert_mono_base"):
        folder = runs / "analysis" / f"out_{upstream}"  # the model comes from the provenance, not the folder
        folder.mkdir(parents=True)
        for output in ("cca_phone", "mi_word"):
            (folder / f"{output}.json").write_text(json.dumps({n: 0.05 * i for i, n in enumerate(names)}))
            provenance = {"upstream": {"name": upstream, "checkpoint": None}}
            (folder / f"provenance_{output}.json").write_text(json.dumps(provenance))
    comparison = {"model": "mrhubert_b5a", "task": "asr", "a": "weights:asr", "b": "cca:phone", "layers": 15}
    comparison |= {"spearman": 0.5, "kendall": 0.4, "top_k": 3, "top_k_overlap": 0.667}
    comparison |= {"spearman_ci95": [0.1, 0.8], "p_value": 0.04, "top_k_chance": 0.2}
    (runs / "analysis" / "compare.json").write_text(
        json.dumps({"schema": "mrsuperb.compare/2", "comparisons": [comparison]})
    )
    page = tmp_path / "site" / "leaderboard.html"
    lb.write_leaderboard([runs], "html", out=page)

    dom = _dump_dom(browser, f"{page.as_uri()}#render-check", tmp_path / "profile")
    reader = _PageReader()
    reader.feed(dom)
    assert reader.report, "the page's render check did not run: " + dom[-500:]
    report = json.loads(reader.report)

    # Two figures (a heatmap for b5a, the Fig. 3-style analysis of both models), decoded with a real size.
    assert len(report["images"]) == 2
    assert all(img["complete"] and img["width"] > 100 and img["height"] > 100 for img in report["images"])
    alts = sorted(img["alt"] for img in report["images"])
    assert alts[0].startswith("Layer-wise analysis in the layout of arXiv 2410.23955 Fig. 3")
    assert alts[1] == "Learnt layer weights (softmax), mrhubert_b5a"
    # The comparison table: one row, naming its model.
    table = dom[dom.index('<table id="comparisons">') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr data-source=") == 1 and "mrhubert_b5a" in table and "0.500" in table
    assert "[0.10, 0.80]" in table and "0.04" in table and "0.200" in table  # interval, p, top-k chance (issue 21)
    # What a reader sees in the table.
    assert reader.cells[("mrhubert_b5a", "asr_wer")]["text"] == "5.82"
    assert reader.cells[("mrhubert_b5a", "asr_wer")]["strong"]
    assert "best" in reader.cells[("mrhubert_b5a", "asr_wer")]["class"]
    assert not reader.cells[("mrhubert_b4a", "asr_wer")]["strong"]
    assert reader.cells[("mrhubert_b4a", "se_stoi")]["text"] == lb.MISSING
    assert (
        reader.cells[("mrhubert_b4a", "ks_acc")]["text"] == "96.70"
        and reader.cells[("mrhubert_b4a", "ks_acc")]["strong"]
    )
    # Every value links to its results.json, whose content matches the cell.
    for (row, key), cell in reader.cells.items():
        if key is None or cell["text"] == lb.MISSING:  # cells of other tables (the comparisons) carry no key
            continue
        source = (page.parent / urllib.parse.unquote(cell["href"])).resolve()
        assert source.name == "results.json" and urllib.parse.unquote(cell["href"]) in cell["title"]
        data = json.loads(source.read_text())
        col = column(key)
        assert data["upstream"] == row and col.format(data["metrics"][data["test_split"]][col.metric]) == cell["text"]


def test_results_of_other_tools_under_a_folder_are_skipped(tmp_path: Path) -> None:
    """A pre-training run's results.json (schema mrsuperb.pretrain/1) is not a downstream run; a folder holding both
    gives the board of the downstream runs. Given explicitly, it is refused."""
    runs = tmp_path / "runs"
    write_paper_runs(runs)
    pretrain = runs / "pretrain" / "toy"
    pretrain.mkdir(parents=True)
    (pretrain / "results.json").write_text(json.dumps({"schema": "mrsuperb.pretrain/1", "history": []}))
    board = lb.load_leaderboard([runs])
    assert all("pretrain" not in str(run.path) for run in board.chosen.values()) and board.rows
    with pytest.raises(lb.LeaderboardError, match="mrsuperb.pretrain/1"):
        lb.load_leaderboard([pretrain / "results.json"])


def test_analysis_figure_reads_intervals_and_chance_from_the_provenance(tmp_path: Path) -> None:
    """The leaderboard's Fig. 3 panel shades each score's interval and draws its chance level (issue 21)."""
    from downstream_probes.reports.leaderboard.figures import collect_analysis, collect_uncertainty

    folder = tmp_path / "analysis"
    folder.mkdir()
    (folder / "cca_phone.json").write_text(json.dumps({"T0": 0.2, "T1": 0.4}))
    provenance = {
        "upstream": {"name": "mrhubert_b5a", "checkpoint": None},
        "spread": {"T0": {"sd": 0.01, "ci95": [0.18, 0.22], "n": 3}, "T1": {"sd": 0.02, "ci95": [0.36, 0.44], "n": 3}},
        "chance": {"T0": {"mean": 0.05, "ci95": [0.03, 0.07]}, "T1": {"mean": 0.05, "ci95": [0.03, 0.07]}},
    }
    (folder / "provenance_cca_phone.json").write_text(json.dumps(provenance))
    results, files = collect_analysis([tmp_path])
    bands, chance = collect_uncertainty(files)
    assert results == {"mrhubert_b5a": {"cca_phone": {"T0": 0.2, "T1": 0.4}}}
    assert bands == {"mrhubert_b5a": {"cca_phone": {"T0": (0.18, 0.22), "T1": (0.36, 0.44)}}}
    assert chance["mrhubert_b5a"]["cca_phone"]["T1"] == (0.05, 0.03, 0.07)


# With ``#click-N``, clicks link N of the page once it has loaded (and reports every link). A click on a link to a
# file is kept from navigating away (the page must stay to be dumped); any other link is left to the browser, so a
# live ``javascript:`` link runs and a ``data:`` link replaces the page.
_CLICK_LINK_JS = """
<script>
window.addEventListener("load", function () {
  var report = {links: []};
  var chosen = window.location.hash.startsWith("#click-") ? Number(window.location.hash.slice(7)) : -1;
  document.querySelectorAll("a").forEach(function (a, index) {
    report.links.push({href: a.getAttribute("href"), protocol: a.protocol});
    a.addEventListener("click", function (event) {
      if (a.protocol === "file:" || a.protocol === "http:" || a.protocol === "https:") { event.preventDefault(); }
    });
    if (index === chosen) { a.click(); }
  });
  var out = document.createElement("pre");
  out.id = "click-check";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
});
</script>
"""

HOSTILE_FOLDERS = (
    "javascript:document.body.setAttribute('data-pwned','1')",
    "JaVaScRiPt:document.body.setAttribute('data-pwned','2')",
    "data:text",
    "x?y#javascript:z",
    "vbscript:msgbox(1)",
)


def test_hostile_folder_names_are_never_live_links(tmp_path: Path, browser: str) -> None:
    """Issue 24 item 2: a run folder named ``javascript:...`` was linked as a live ``javascript:`` href (clicked in
    Chromium, it ran). Every link is now a relative or ``file:`` reference to its results.json, and clicking each
    (one page load per link) runs nothing and leaves the page."""
    runs = tmp_path / "runs"
    for index, name in enumerate(HOSTILE_FOLDERS):
        write_results(runs, f"model_{index}", "ic", {"acc": 0.5 + index / 100}, name=name)
    page = runs / "board.html"  # in the runs' folder: every link is relative and starts with the hostile name
    lb.write_leaderboard([runs], "html", out=page)
    page.write_text(page.read_text().replace("</body>", _CLICK_LINK_JS + "</body>"))
    for index in range(len(HOSTILE_FOLDERS)):
        dom = _dump_dom(browser, f"{page.as_uri()}#click-{index}", tmp_path / "profile", "--virtual-time-budget=3000")
        assert '<table id="leaderboard">' in dom, f"clicking link {index} left the page: {dom[:300]}"
        body = dom[dom.index("<body") : dom.index(">", dom.index("<body"))]
        assert "data-pwned" not in body, f"clicking link {index}, a hostile folder name ran as script: {body}"
    report_start = dom.index('<pre id="click-check">') + len('<pre id="click-check">')
    report = json.loads(html.unescape(dom[report_start : dom.index("</pre>", report_start)]))
    assert len(report["links"]) == len(HOSTILE_FOLDERS)
    for link in report["links"]:
        assert link["protocol"] == "file:", link
        target = (runs / urllib.parse.unquote(link["href"])).resolve()
        assert target.name == "results.json" and target.parent.name in HOSTILE_FOLDERS, link


# --------------------------------------------------------------------------------------------------------------
# SUPERB protocols (protocol.json of mrsuperb superb)


def write_protocol(root: Path, upstream: str, cells: list[tuple[float, int, str, float | None]], **extra) -> Path:
    """A grid folder: each cell's results.json and a protocol.json choosing lr 1e-4 (test acc per seed)."""
    folder = root / upstream / "ic"
    entries = []
    for lr, seed, status, acc in cells:
        expdir = folder / f"lr{lr}_seed{seed}"
        if acc is not None:
            write_results(folder, extra.get("cell_upstream", upstream), "ic", {"acc": acc}, name=expdir.name,
                          created="2030-01-01T00:00:00+00:00")  # fmt: skip
        test = {"acc": acc} if status == "finished" else {}
        entries.append({"lr": lr, "seed": seed, "expdir": str(expdir), "status": status, "dev": test, "test": test})
    chosen = [e for e in entries if e["lr"] == 1e-4 and e["status"] == "finished"]
    values = [e["test"]["acc"] for e in chosen]
    document = {
        "schema": "mrsuperb.superb_protocol/1", "upstream": upstream, "upstream_ckpt": None,
        "upstream_identity": upstream, "task": "ic", "dev_split": "dev", "test_split": "test",
        "primary_metric": "acc", "lower_is_better": False, "rule": "...", "lrs": sorted({c[0] for c in cells}),
        "seeds": sorted({c[1] for c in cells}), "cells": entries,
        "selection": {"lr": 1e-4, "lr_name": "1e-4", "per_seed": chosen,
                      "test": {"acc": {"mean": statistics.fmean(values), "sd": statistics.stdev(values), "n": 2}}},
        "complete": False,
        "missing": [{"lr": c[0], "seed": c[1], "status": c[2]} for c in cells if c[2] not in ("finished", "diverged")],
        "diverged": [{"lr": c[0], "seed": c[1], "status": c[2]} for c in cells if c[2] == "diverged"],
        "created": "2029-01-01T00:00:00+00:00",
    }  # fmt: skip
    (folder / "protocol.json").write_text(json.dumps(document))
    return folder / "protocol.json"


GRID = [(1e-4, 0, "finished", 0.5), (1e-4, 1, "finished", 0.7), (1e-3, 0, "diverged", 0.25), (1e-3, 1, "pending", None)]


def test_a_protocol_cell_shows_the_dev_selected_mean_not_the_newest_run(tmp_path: Path) -> None:
    write_protocol(tmp_path / "grid", "mrhubert_b4a", GRID)
    write_results(tmp_path / "adhoc", "mrhubert_b4a", "ic", {"acc": 0.99}, created="2031-01-01T00:00:00+00:00")
    write_results(tmp_path / "adhoc", "mrhubert_b5a", "ic", {"acc": 0.9})
    board = lb.load_leaderboard([tmp_path])
    cell = board.cell("mrhubert_b4a", column("ic_acc"))
    assert cell.run.protocol and cell.value == pytest.approx(0.6)  # not the newer run's 0.99, nor a cell's own
    assert len(board.ignored) == 1  # the ad-hoc run; the grid's cells are summarised, not candidates

    md = lb.render_markdown(board)
    assert "60.00 ± 14.14 (n=2; 1 missing, 1 diverged)" in md
    assert "SUPERB protocol: lr 1e-4 chosen on dev from a grid of 2 lr x 2 seeds (1 missing, 1 diverged)" in md
    assert "one run (weighted sum before single layer, then newest)" in md  # the b5a cell states its rule too
    rows = {r["upstream"]: r for r in csv.DictReader(io.StringIO(lb.render_csv(board)))}
    assert rows["mrhubert_b4a"]["ic_acc_sd"] == "14.14" and rows["mrhubert_b4a"]["ic_acc_n"] == "2"
    assert rows["mrhubert_b4a"]["ic_acc_source"].endswith("protocol.json")
    assert rows["mrhubert_b5a"]["ic_acc_rule"].startswith("one run") and rows["mrhubert_b5a"]["ic_acc_n"] == "1"
    page = lb.render_html(board)
    assert 'data-rule="protocol"' in page and 'data-rule="single-run"' in page


def test_a_protocol_never_mixes_two_models(tmp_path: Path) -> None:
    write_protocol(tmp_path, "mrhubert_b4a", GRID, cell_upstream="mrhubert_b5a")
    with pytest.raises(lb.LeaderboardError, match="mrhubert_b5a, not of mrhubert_b4a"):
        lb.load_leaderboard([tmp_path])


def test_markdown_sources_keep_a_folder_name_with_backticks_in_one_code_span(tmp_path: Path) -> None:
    """A backtick in a run folder's name closed the source's code span early (the rest rendered as Markdown)."""
    from markdown_it import MarkdownIt

    runs = tmp_path / "runs"
    name = "odd`name ``x"
    write_results(runs, "mrhubert_b4a", "ic", {"acc": 0.5}, name=name)
    out = runs / "board.md"
    lb.write_leaderboard([runs], "md", out=out)
    spans = [
        child.content
        for token in MarkdownIt().parse(out.read_text(encoding="utf-8"))
        if token.type == "inline"
        for child in token.children or []
        if child.type == "code_inline"
    ]
    assert f"{name}/results.json" in spans
