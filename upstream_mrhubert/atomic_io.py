"""Atomic file writes, the one implementation every writer of the project uses: a reader never sees a half-written
checkpoint, table, page or JSON file.

Content goes to a temporary file in the target's folder (same file system) and is moved into place with
``os.replace``, which is atomic on POSIX and Windows. On any error the temporary file is removed. The result gets
the permissions a plain ``open()`` would give it (``mkstemp`` alone creates 0600 files).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
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
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
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


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON (UTF-8, trailing newline) atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
