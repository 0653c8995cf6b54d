"""``profile.json`` (schema ``mrsuperb.profile/1``): written atomically with its Markdown table beside it, read back
with its schema checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from downstream_probes.reports.profile.render import profile_markdown
from upstream_mrhubert.atomic_io import read_json_record, write_json_atomic, write_text_atomic
from upstream_mrhubert.errors import MrsuperbError

PROFILE_SCHEMA = "mrsuperb.profile/1"


class ProfileError(MrsuperbError, ValueError):
    """An upstream or profile file the profiler cannot use; the message says which and what to do."""


def write_profile(profile: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """profile.json and its Markdown table next to it (same stem, ``.md``), both atomically."""
    path = Path(path)
    write_json_atomic(path, profile)
    write_text_atomic(path.with_suffix(".md"), profile_markdown(profile))
    return path


def read_profile(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"profile {path} not found; write one with `mrsuperb profile -u NAME --out {path}`")
    return read_json_record(path, PROFILE_SCHEMA, ProfileError, "write it again with mrsuperb profile")
