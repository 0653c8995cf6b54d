"""The one progress bar of the tools: tqdm, counting what it counts (utterances, layers, splits), off on request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def progress_bar(items: Iterable[Any], enabled: bool, description: str, unit: str = "utt") -> Iterable[Any]:
    """``items`` with a tqdm bar counting ``unit`` when ``enabled``; ``items`` itself otherwise."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, unit=unit, leave=False)
