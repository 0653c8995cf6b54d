"""A non-editable install carries the recipes: ``-d TASK`` without ``-c`` finds its config (issue 23)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_wheel_finds_its_recipes(tmp_path: Path) -> None:
    wheels, prefix = tmp_path / "wheels", tmp_path / "prefix"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = wheels.glob("mrsuperb-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--prefix", str(prefix), str(wheel)], check=True,
                   timeout=600)  # fmt: skip
    site = next(prefix.glob("lib/python*/site-packages"))
    probe = (
        "import downstream_probes, json; from downstream_probes.s3prl.run_downstream import resolve_task_and_config; "
        "print(json.dumps([downstream_probes.__file__, resolve_task_and_config(['-d', 'ic'])]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "MRSUPERB_RECIPES"} | {"PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300,
                          cwd=tmp_path, env=env)  # fmt: skip
    imported, argv = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert imported.startswith(str(site))  # the installed copy, not this checkout
    config = Path(argv[argv.index("-c") + 1])
    assert config == prefix / "share" / "mrsuperb" / "recipes" / "superb" / "ic" / "config.yaml" and config.is_file()
    assert (config.parent.parent / "sf" / "vocab" / "character.txt").is_file()
