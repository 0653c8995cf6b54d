"""Importing the packages has no side effects: no transformers for the model, no patches before the runner starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_model_and_upstream_do_not_import_transformers() -> None:
    out = _run(
        """
        import sys
        import upstream_mrhubert.model, upstream_mrhubert.upstream
        print("transformers" in sys.modules)
        """
    )
    assert out.strip() == "False"


def test_importing_the_runner_patches_nothing_until_it_starts() -> None:
    out = _run(
        """
        import torch, torch.nn.parallel, torchaudio, numpy, huggingface_hub
        before = (torch.cuda.set_device, torch.nn.parallel.DistributedDataParallel, getattr(torchaudio, "load", None),
                  getattr(torchaudio, "set_audio_backend", None), getattr(numpy, "int", None),
                  getattr(huggingface_hub, "HfFolder", None), list(torch.serialization.get_safe_globals()))
        import sys
        import downstream_probes.s3prl, downstream_probes.s3prl.runner, downstream_probes.s3prl.plugins
        import downstream_probes.s3prl.run_downstream, downstream_probes.s3prl.sweep, downstream_probes.s3prl.compat
        import downstream_probes.cli
        after = (torch.cuda.set_device, torch.nn.parallel.DistributedDataParallel, getattr(torchaudio, "load", None),
                 getattr(torchaudio, "set_audio_backend", None), getattr(numpy, "int", None),
                 getattr(huggingface_hub, "HfFolder", None), list(torch.serialization.get_safe_globals()))
        print(before == after, "s3prl.hub" in sys.modules, "s3prl.downstream.runner" in sys.modules)
        from downstream_probes.s3prl.run_downstream import prepare_s3prl
        prepare_s3prl()
        started = (torch.cuda.set_device, torch.nn.parallel.DistributedDataParallel, getattr(torchaudio, "load", None))
        print(started != before[:3])
        """
    )
    assert out.split() == ["True", "False", "False", "True"]
