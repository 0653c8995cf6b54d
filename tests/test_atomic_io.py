"""The one atomic writer (``upstream_mrhubert.atomic_io``): strict JSON, long names, nothing left behind."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from upstream_mrhubert.atomic_io import loads_strict_json, read_json_record, write_json_atomic, write_text_atomic


def test_json_is_strict(tmp_path: Path) -> None:
    """A diverged head's results.json held a bare Infinity, layer_weights.json a bare NaN (issue 24 item 9)."""
    path = write_json_atomic(tmp_path / "r.json", {"loss": math.inf, "acc": [math.nan, 0.5], "n": (1, -math.inf)})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert loads_strict_json(text) == {"loss": None, "acc": [None, 0.5], "n": [1, None]}
    with pytest.raises(ValueError, match="NaN is not a JSON value"):
        loads_strict_json('{"a": NaN}')
    assert json.loads(text)["acc"][1] == 0.5


class _RecordError(ValueError):
    pass


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", r"r\.json is not readable JSON \(Expecting .*\); write it again$"),
        (b'{"schema": "s/1", "x": NaN}', r"not readable JSON \(NaN is not a JSON value.*\); write it again$"),
        (b"\xff\xfe", r"not readable JSON \('utf-8' codec.*\); write it again$"),
        (b"[1]", r"r\.json has schema 'list', expected 's/1'; write it again$"),
        (b'{"schema": "s/2"}', r"r\.json has schema 's/2', expected 's/1'; write it again$"),
    ],
)
def test_a_json_record_is_an_object_of_its_schema(tmp_path: Path, content: bytes, message: str) -> None:
    """Anything else is the caller's error naming the file, never a raw JSONDecodeError or AttributeError."""
    path = tmp_path / "r.json"
    path.write_bytes(content)
    with pytest.raises(_RecordError, match=message):
        read_json_record(path, "s/1", _RecordError, "write it again")
    path.write_text('{"schema": "s/1", "x": 1}')
    assert read_json_record(path, "s/1", _RecordError, "write it again") == {"schema": "s/1", "x": 1}


def test_a_long_legal_name_is_written(tmp_path: Path) -> None:
    """A legal 245-character file name was refused: the temporary name beside it exceeded 255 bytes."""
    target = tmp_path / ("b" * 240 + ".html")
    write_text_atomic(target, "page")
    assert target.read_text() == "page" and [p.name for p in tmp_path.iterdir()] == [target.name]
    multibyte = tmp_path / ("é" * 120 + ".md")  # 245 bytes in UTF-8
    write_text_atomic(multibyte, "x")
    assert multibyte.read_text() == "x"
