"""Each compatibility fix is still needed: the unpatched call, run in a fresh interpreter, still fails.

Every test here is a strict xfail. The day s3prl, torchaudio or another dependency stops needing a fix, its test
passes, strict xfail turns that into a failure, and the fix (in ``downstream_probes/s3prl/compat/``) can go.
Where the failure needs a distributed run or a kill at the wrong moment, the subprocess checks the code of s3prl
that causes it instead.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch


def run_unpatched(code: str) -> None:
    """Run ``code`` in a fresh interpreter with nothing of ours imported; raise with its stderr if it fails."""
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    if completed.returncode != 0:
        raise AssertionError(completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed")


def still_needed(fix: str):
    return pytest.mark.xfail(strict=True, reason=f"{fix} is still needed", raises=AssertionError)


@still_needed("for_torchaudio.restore_set_audio_backend")
def test_torchaudio_set_audio_backend() -> None:
    run_unpatched("import torchaudio; torchaudio.set_audio_backend('sox_io')")


@still_needed("for_torchaudio.load_audio_with_soundfile (torchaudio.info)")
def test_torchaudio_info() -> None:
    run_unpatched("import torchaudio; torchaudio.info")


@still_needed("for_torchaudio.load_audio_with_soundfile (torchaudio.load without FFmpeg/torchcodec)")
def test_torchaudio_load(tmp_path) -> None:
    path = tmp_path / "a.wav"
    run_unpatched(
        f"""
        import numpy, soundfile, torchaudio
        soundfile.write({str(path)!r}, numpy.zeros(1600, dtype="float32"), 16000)
        torchaudio.load({str(path)!r})
        """
    )


@still_needed("for_torchaudio.provide_sox_effects")
def test_torchaudio_sox_effects() -> None:
    run_unpatched("from torchaudio.sox_effects import apply_effects_tensor")


@still_needed("for_dependencies.require_tensorboardx (s3prl does not declare tensorboardX)")
def test_s3prl_declares_tensorboardx() -> None:
    run_unpatched(
        """
        from importlib import metadata
        assert any(r.lower().startswith("tensorboardx") and "extra" not in r for r in metadata.requires("s3prl"))
        """
    )


@still_needed("for_dependencies.provide_huggingface_hub_legacy_names")
def test_huggingface_hub_legacy_names() -> None:
    run_unpatched("from huggingface_hub import HfFolder, Repository")


@still_needed("for_dependencies.provide_catalyst_sampler")
def test_catalyst_sampler() -> None:
    run_unpatched("from catalyst.data.sampler import DistributedSamplerWrapper")


@still_needed("for_dependencies.restore_numpy_aliases")
def test_numpy_aliases() -> None:
    run_unpatched("import numpy; numpy.int, numpy.complex")


@still_needed("for_s3prl.provide_ctc_snips_corpus")
def test_s3prl_ctc_snips_corpus() -> None:
    run_unpatched(
        """
        import importlib.util, pathlib
        spec = importlib.util.find_spec("s3prl")
        assert (pathlib.Path(spec.origin).parent / "downstream" / "ctc" / "corpus" / "snips.py").is_file()
        """
    )


@still_needed("for_s3prl.keep_ctc_loader_settings")
def test_s3prl_ctc_loader_keeps_num_workers() -> None:
    run_unpatched(
        """
        import importlib.util, pathlib
        source = (pathlib.Path(importlib.util.find_spec("s3prl").origin).parent / "downstream/ctc/data.py").read_text()
        assert "corpus.pop('num_workers'" not in source and 'corpus.pop("num_workers"' not in source
        """
    )


@still_needed("for_s3prl.allow_s3prl_checkpoint_globals")
def test_torch_load_of_s3prl_args(tmp_path) -> None:
    path = tmp_path / "states.ckpt"
    run_unpatched(
        f"""
        import argparse, torch
        torch.save({{"Args": argparse.Namespace(seed=1)}}, {str(path)!r})
        torch.load({str(path)!r})
        """
    )


@still_needed("for_s3prl.stop_every_rank_at_total_steps (only the leader advances the step counter)")
def test_s3prl_steps_on_every_rank() -> None:
    run_unpatched(
        """
        import importlib.util, pathlib, re
        source = (pathlib.Path(importlib.util.find_spec("s3prl").origin).parent / "downstream/runner.py").read_text()
        train = source[source.index("def train(") : source.index("def evaluate(")]
        # s3prl: non-leader ranks `continue` before `pbar.update(1)`, so their counter never reaches total_steps
        leader_only = train.index("if not is_leader_process():")
        assert train.index("continue", leader_only) > train.index("pbar.update(1)")
        """
    )


@still_needed("for_s3prl.save_checkpoints_safely (old states-*.ckpt removed before the new one is written)")
def test_s3prl_saves_before_removing() -> None:
    run_unpatched(
        """
        import importlib.util, pathlib
        source = (pathlib.Path(importlib.util.find_spec("s3prl").origin).parent / "downstream/runner.py").read_text()
        assert source.index("os.remove(ckpt_pth)") > source.index("torch.save(all_states, path)")
        """
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fix only acts on machines without CUDA")
@still_needed("for_torch.skip_cuda_set_device_without_gpu")
def test_cuda_set_device_without_gpu() -> None:
    run_unpatched("import torch; torch.cuda.set_device(0)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fix only acts on CPU modules")
@still_needed("for_torch.allow_cpu_distributed_data_parallel")
def test_ddp_of_cpu_module_with_device_ids() -> None:
    run_unpatched(
        """
        import os, socket, torch, torch.distributed as dist
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2), device_ids=[0])
        """
    )


@still_needed("command_line.translate_local_rank (s3prl parses only --local_rank)")
def test_s3prl_parses_local_rank_dash() -> None:
    run_unpatched(
        """
        import importlib.util, pathlib
        source = (pathlib.Path(importlib.util.find_spec("s3prl").origin).parent / "run_downstream.py").read_text()
        assert "--local-rank" in source or "LOCAL_RANK" in source
        """
    )


@still_needed("command_line.choose_device_and_backend (s3prl defaults to cuda and nccl)")
def test_s3prl_default_device() -> None:
    run_unpatched(
        """
        import importlib.util, pathlib
        source = (pathlib.Path(importlib.util.find_spec("s3prl").origin).parent / "run_downstream.py").read_text()
        assert "default='cuda'" not in source and "default='nccl'" not in source
        """
    )


@still_needed("for_s3prl.check_enhancement_audio (s3prl's SE dataset resamples any rate silently)")
def test_s3prl_enhancement_dataset_refuses_a_wrong_rate(tmp_path) -> None:
    path = tmp_path / "8k.wav"
    run_unpatched(
        f"""
        import numpy, soundfile, librosa
        soundfile.write({str(path)!r}, numpy.zeros(8000, dtype="float32"), 8000)
        try:
            librosa.load({str(path)!r}, sr=16000)  # what s3prl's enhancement_stft dataset calls
        except Exception:
            raise SystemExit(0)
        raise SystemExit("an 8 kHz file was read as 16 kHz without a word")
        """
    )
