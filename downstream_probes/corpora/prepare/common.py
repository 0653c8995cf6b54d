"""What every dataset preparation shares: its error, its result, finding a dataset under ``--raw``, naming a
missing file with the download it comes from, and atomic writes into ``--out``.

Every ``prepare_<corpus>(raw, out)`` reads the dataset as its official download unpacks (``raw``), writes only
into ``out`` (each file atomically: a reader never sees half a list), can be run again (same input, same bytes),
and returns a :class:`Prepared` whose ``overrides`` are the s3prl ``downstream_expert`` entries to use. The same
record is written to ``out/prepared.json``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upstream_mrhubert.atomic_io import write_json_atomic, write_text_atomic
from upstream_mrhubert.errors import MrsuperbError

Folder = str | os.PathLike[str]  # what every prepare function takes for its raw and out folders

PREPARED_SCHEMA = "mrsuperb.prepared/1"
RECORD = "prepared.json"


class PrepareError(MrsuperbError, FileNotFoundError):
    """A dataset that cannot be prepared: a missing or malformed file, named with the download it comes from."""


@dataclass(frozen=True)
class Prepared:
    """What a preparation found and wrote.

    ``overrides``: the ``downstream_expert`` config entries (absolute paths) that point s3prl at the prepared data;
    ``counts``: items per split (utterances, recordings); ``written``: the files written under ``out``.
    """

    task: str
    raw: Path
    out: Path
    overrides: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": PREPARED_SCHEMA,
            "task": self.task,
            "raw": str(self.raw),
            "out": str(self.out),
            "overrides": self.overrides,
            "counts": self.counts,
            "written": self.written,
        }


def folder(path: Folder, what: str) -> Path:
    """``path`` as an absolute folder that must exist."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_dir():
        raise PrepareError(f"{what} {resolved} is not a folder; pass the folder the download was unpacked into")
    return resolved


def out_folder(path: Folder, raw: Path) -> Path:
    """``--out`` as an absolute folder (created), which must not be the raw dataset itself."""
    resolved = Path(path).expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        raise PrepareError(f"--out {resolved} is a file; pass a folder")
    if resolved == raw:
        raise PrepareError(f"--out {resolved} is the raw dataset folder; write the prepared files beside it")
    if " " in str(resolved):
        raise PrepareError(
            f"--out {resolved} contains a space: s3prl's Kaldi lists split paths on whitespace; choose another folder"
        )
    resolved.mkdir(parents=True, exist_ok=True)
    return resolved


def find_root(raw: Path, names: Sequence[str], marker: str, download: str) -> Path:
    """The dataset folder: ``raw`` itself if it holds ``marker``, else ``raw/<name>`` for the first of ``names``
    that does. Raises naming what was looked for and the download."""
    for candidate in (raw, *(raw / name for name in names)):
        if (candidate / marker).exists():
            return candidate
    looked = ", ".join(str(raw / name / marker) for name in names)
    raise PrepareError(f"{raw}: no {marker} here nor in {looked}; it comes from {download}")


def require(path: Path, download: str) -> Path:
    """``path`` if it exists, else a :class:`PrepareError` naming it and ``download``."""
    if not path.exists():
        raise PrepareError(f"{path} not found; it comes from {download}")
    return path


def require_nonempty(paths: Iterable[Path], where: Path, pattern: str, download: str) -> list[Path]:
    found = sorted(paths)
    if not found:
        raise PrepareError(f"{where} holds no {pattern}; the folder comes from {download} (unpacked completely?)")
    return found


def write_lines(path: Path, lines: Iterable[str]) -> str:
    """Write ``lines`` (each with a line end) atomically; returns the path as text."""
    write_text_atomic(path, "".join(f"{line}\n" for line in lines))
    return str(path)


def write_record(prepared: Prepared) -> Prepared:
    write_json_atomic(prepared.out / RECORD, prepared.to_json())
    return prepared
