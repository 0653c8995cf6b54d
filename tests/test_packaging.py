"""A non-editable install carries the recipes: ``-d TASK`` without ``-c`` finds its config (issue 23)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_wheel_finds_its_recipes(tmp_path: Path) -> None:
    """Built as a wheel and installed into a separate environment (pip --python, so this environment's own install
    is left alone); that environment borrows this one's dependencies through a .pth line after its own packages."""
    wheels, env = tmp_path / "wheels", tmp_path / "env"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    litter = [path for path in (ROOT / "build", ROOT / "mrsuperb.egg-info") if not path.exists()]
    try:
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
            check=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
    finally:  # setuptools builds inside the source tree; leave it as it was
        for path in litter:
            shutil.rmtree(path, ignore_errors=True)
    (wheel,) = wheels.glob("mrsuperb-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-compile", str(wheel)], check=True,
                   timeout=600)  # fmt: skip
    site = next(env.glob("lib/python*/site-packages"))
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = (
        "import downstream_probes, json; from downstream_probes.s3prl.run_downstream import resolve_task_and_config; "
        "from downstream_probes.corpora.text import FLUENT_INTENTS; "
        "print(json.dumps([downstream_probes.__file__, resolve_task_and_config(['-d', 'ic']), len(FLUENT_INTENTS)]))"
    )
    environ = {k: v for k, v in os.environ.items() if k not in ("MRSUPERB_RECIPES", "PYTHONPATH")}
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True, timeout=300,
                          cwd=tmp_path, env=environ)  # fmt: skip
    imported, argv, intents = json.loads(done.stdout.strip().splitlines()[-1])
    assert intents == 31  # the package data (corpora/fluent_intents.tsv) is installed
    assert imported.startswith(str(site))  # the installed copy, not this checkout
    config = Path(argv[argv.index("-c") + 1])
    assert config == env / "share" / "mrsuperb" / "recipes" / "superb" / "ic" / "config.yaml" and config.is_file()
    assert (config.parent.parent / "sf" / "vocab" / "character.txt").is_file()
    assert (ROOT / "recipes").is_dir() and Path(sys.executable).parent.joinpath("mrsuperb").exists()
