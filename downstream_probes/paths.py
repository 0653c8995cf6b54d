"""Where the project's data files live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def recipes_dir() -> Path:
    """The ``recipes/`` folder (task configs, dictionaries, end-to-end scripts).

    ``$MRSUPERB_RECIPES`` overrides it, for installs that are not editable checkouts.
    """
    override = os.environ.get("MRSUPERB_RECIPES")
    path = Path(override) if override else PROJECT_ROOT / "recipes"
    if not path.is_dir():
        raise FileNotFoundError(
            f"recipes folder not found at {path}; set MRSUPERB_RECIPES to the recipes/ folder of a mrsuperb checkout"
        )
    return path
