"""Where the project's data files live."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RECIPES_ENV = "MRSUPERB_RECIPES"
DISTRIBUTION = "mrsuperb"
# where setup.py installs recipes/ (relative to the installation prefix)
INSTALLED_RECIPES = ("share", DISTRIBUTION, "recipes")


def installed_recipes() -> Path | None:
    """The recipes a non-editable install put under ``<prefix>/share/mrsuperb/recipes``, if any."""
    try:
        files = importlib.metadata.distribution(DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for record in files:
        parts = Path(record).parts
        for start in range(len(parts) - len(INSTALLED_RECIPES)):
            if parts[start : start + len(INSTALLED_RECIPES)] == INSTALLED_RECIPES:
                folder = Path(str(record.locate())).resolve()
                for _ in range(len(parts) - start - len(INSTALLED_RECIPES)):
                    folder = folder.parent
                return folder
    return None


def recipes_dir() -> Path:
    """The ``recipes/`` folder (task configs, dictionaries, end-to-end scripts): ``$MRSUPERB_RECIPES`` when set,
    else the checkout's ``recipes/``, else the copy a non-editable install holds (``share/mrsuperb/recipes``)."""
    override = os.environ.get(RECIPES_ENV)
    candidates = [Path(override)] if override else [PROJECT_ROOT / "recipes", installed_recipes()]
    for path in candidates:
        if path is not None and path.is_dir():
            return path
    raise FileNotFoundError(
        f"recipes folder not found at {candidates[0]}; set {RECIPES_ENV} to the recipes/ folder of a mrsuperb "
        "checkout, or reinstall mrsuperb (pip install mrsuperb installs them under share/mrsuperb/recipes)"
    )
