"""``profile.json`` (schema ``mrsuperb.profile/1``): written atomically with its Markdown table beside it, read back
with its schema checked."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from downstream_probes.reports.profile.render import profile_markdown
from upstream_mrhubert.atomic_io import write_json_atomic, write_text_atomic
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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ProfileError(f"{path} is not readable JSON ({error}); write it again with mrsuperb profile") from None
    if not isinstance(data, dict) or data.get("schema") != PROFILE_SCHEMA:
        raise ProfileError(f"{path} is not a profile of schema {PROFILE_SCHEMA}; write it with mrsuperb profile")
    return data
