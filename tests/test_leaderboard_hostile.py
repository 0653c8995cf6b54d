"""``mrsuperb leaderboard`` on hostile results files and output paths (issue 14, the leaderboard errors).

Each bad input is exit status 2 and one message naming the file (or the --out path) and what to do; a name holding
``|`` stays one Markdown cell.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from downstream_probes.cli import main as cli_main
from downstream_probes.result_files import new_results, write_results


def _run(folder: Path, *, upstream: str = "mrhubert_b4a", metrics: Any = None, task: str = "ic") -> Path:
    results = new_results(
        task=task,
        upstream=upstream,
        layer_selection={"mode": "weighted_sum"},
        metrics={"test": {"acc": 0.5}} if metrics is None else {},
        test_split="test",
        best_step=2,
        config={},
        seed=1,
        expdir=folder,
    )
    if metrics is not None:
        results["metrics"] = metrics
    return write_results(folder, results)


@pytest.mark.parametrize(
    ("name", "metrics", "message"),
    [
        ("flat", {"test": 5}, r"metrics.*test.*5"),
        ("text", {"test": {"acc": "high"}}, r"acc.*'high'.*not a number"),
        ("list", [1, 2], r"metrics"),
        ("nan", {"test": {"acc": None}}, r"acc.*None.*not a number"),
    ],
)
def test_malformed_metrics_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, metrics: Any, message: str
) -> None:
    path = _run(tmp_path / name, metrics=metrics)
    assert cli_main(["leaderboard", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_out_onto_a_directory_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _run(tmp_path / "run")
    folder = tmp_path / "board"
    folder.mkdir()
    assert cli_main(["leaderboard", str(path), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "folder" in err
    assert list(folder.iterdir()) == []


def test_out_into_a_read_only_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _run(tmp_path / "run")
    out = Path("/proc") / f"board-{uuid.uuid4().hex}.md"  # /proc refuses new files, even to root
    assert cli_main(["leaderboard", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "cannot write" in err


def test_pipe_in_a_name_stays_one_markdown_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(tmp_path / "a", upstream="mrhubert|evil")
    _run(tmp_path / "b", upstream="hubert_base_ls960")
    assert cli_main(["leaderboard", str(tmp_path)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header_cells = table[0].count("|") - table[0].count("\\|")
    for line in table:
        assert line.count("|") - line.count("\\|") == header_cells, line
    assert any("mrhubert\\|evil" in line for line in table)


def test_results_file_that_is_not_json_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    path.write_text('{"schema": "mrsuperb.results/1", "task": ')
    assert cli_main(["leaderboard", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_out_with_a_name_too_long_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 300-character --out was an OSError traceback from is_dir (issue 24); a legal 245-character one is written."""
    path = _run(tmp_path / "run")
    too_long = tmp_path / ("x" * 300 + ".md")
    assert cli_main(["leaderboard", str(path), "--out", str(too_long)]) == 2
    err = capsys.readouterr().err
    assert "at most 255" in err and "Traceback" not in err
    legal = tmp_path / ("y" * 242 + ".md")
    assert cli_main(["leaderboard", str(path), "--out", str(legal)]) == 0
    assert legal.is_file()
