"""benchmarks/differential_s3prl.py against checkouts of s3prl and s3prl/LibriMix, when they are given.

The originals are not in the s3prl wheel and nothing of them is copied into the project, so this runs only with
``MRSUPERB_S3PRL_CHECKOUT`` and ``MRSUPERB_LIBRIMIX_CHECKOUT`` set to local checkouts (docs/tasks.md quotes a run).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from downstream_probes.paths import PROJECT_ROOT

CHECKOUTS = ("MRSUPERB_S3PRL_CHECKOUT", "MRSUPERB_LIBRIMIX_CHECKOUT")


@pytest.mark.slow
@pytest.mark.skipif(
    not all(os.environ.get(name) for name in CHECKOUTS),
    reason="no checkout given: set MRSUPERB_S3PRL_CHECKOUT (github.com/s3prl/s3prl) and MRSUPERB_LIBRIMIX_CHECKOUT "
    "(github.com/s3prl/LibriMix) to run s3prl's own preparation code beside ours",
)
def test_preparation_matches_s3prl_and_librimix(tmp_path: Path, capsys) -> None:
    script = PROJECT_ROOT / "benchmarks" / "differential_s3prl.py"
    spec = importlib.util.spec_from_file_location("differential_s3prl", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    s3prl, librimix = (os.environ[name] for name in CHECKOUTS)
    status = module.main(["--s3prl", s3prl, "--librimix", librimix, "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert printed.count("PASS ") == len(module.CHECKS)
