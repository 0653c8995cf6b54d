"""Installs ``recipes/`` (task configs, vocabularies, pre-training recipes) as data files under
``share/mrsuperb/recipes``, so ``run_downstream.py -d TASK`` finds its config outside a checkout. Every other piece of
metadata is in setup.cfg; the recipe files are listed from the folder itself, so nothing has to be kept in step."""

from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
RECIPES = ROOT / "recipes"
SEPARATE = ("plugins",)  # distributions of their own (installed by their own packaging)


def recipe_data_files() -> list[tuple[str, list[str]]]:
    by_folder: dict[str, list[str]] = {}
    for path in sorted(RECIPES.rglob("*")):
        relative = path.relative_to(ROOT)
        if not path.is_file() or relative.parts[1] in SEPARATE or "__pycache__" in relative.parts:
            continue
        by_folder.setdefault(str(Path("share", "mrsuperb", *relative.parent.parts)), []).append(str(relative))
    return sorted(by_folder.items())


setup(data_files=recipe_data_files())
