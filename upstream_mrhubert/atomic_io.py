"""Atomic file writes, the one implementation every writer of the project uses: a reader never sees a half-written
checkpoint, table, page or JSON file.

Content goes to a temporary file in the target's folder (same file system) and is moved into place with
``os.replace``, which is atomic on POSIX and Windows. On any error the temporary file is removed. The result gets
the permissions a plain ``open()`` would give it (``mkstemp`` alone creates 0600 files).

Beside them, the strict JSON reading of what they wrote (``loads_strict_json``, ``read_strict_json``,
``read_json_record``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` when the ``with`` block ends without an error.

    Creates the parent folders. On an error (or interrupt) inside the block, ``path`` is left as it was and the
    temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name stays within the file system's 255 bytes whatever the target's (legal) name
    prefix = "." + path.name.encode("utf-8")[:200].decode("utf-8", "ignore") + "."
    handle, temp_name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating the parent folders."""
    with atomic_output(path) as stream:
        stream.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float (at any depth of dicts, lists and tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def write_json_atomic(path: str | os.PathLike[str], payload: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``payload`` as indented, strict JSON (UTF-8, trailing newline) atomically.

    JSON has no NaN or Infinity (Python's bare ``NaN`` breaks every strict reader), so a non-finite number is
    written as ``null``; whoever writes one records why next to it (e.g. ``status: diverged``). ``default`` turns
    other objects into JSON values (as ``json.dumps``'s).
    """
    text = json.dumps(finite_or_null(payload), indent=2, ensure_ascii=False, allow_nan=False, default=default)
    return write_text_atomic(path, text + "\n")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (strict JSON has no NaN or Infinity)")


def loads_strict_json(text: str) -> Any:
    """Parse JSON as strict readers do: a bare ``NaN``, ``Infinity`` or ``-Infinity`` (which Python's ``json``
    accepts by default) is a ValueError, like any other syntax error."""
    return json.loads(text, parse_constant=_refuse_constant)


def read_strict_json(path: Path, error: type[Exception], remedy: str = "") -> Any:
    """The strict JSON in ``path`` (:func:`loads_strict_json`).

    Raises:
        error: naming ``path`` when it cannot be read or is not strict JSON (the message ends with ``remedy``).
    """
    try:
        return loads_strict_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as caught:
        raise error(f"{path} is not readable JSON ({caught}){'; ' + remedy if remedy else ''}") from None


def read_json_record(path: Path, schema: str, error: type[Exception], remedy: str) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``"schema"`` is ``schema``, read as strict JSON.

    Raises:
        error: naming ``path`` when it cannot be read or is not strict JSON, or when it holds something other than
            an object of that schema (the message ends with ``remedy``).
    """
    record = read_strict_json(path, error, remedy)
    if not isinstance(record, dict) or record.get("schema") != schema:
        found = record.get("schema") if isinstance(record, dict) else type(record).__name__
        raise error(f"{path} has schema {found!r}, expected {schema!r}; {remedy}")
    return record
