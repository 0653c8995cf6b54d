"""Command-line fixes for s3prl's runner: torchrun's local rank, and device and distributed backend chosen for the
machine (s3prl defaults to CUDA and NCCL)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
import torch.utils.data

from downstream_probes.s3prl.options import option_value


def translate_local_rank(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """s3prl parses only ``--local_rank``; ``torch.distributed.launch`` now passes ``--local-rank`` and torchrun
    passes nothing (it sets ``LOCAL_RANK`` in the environment).

    ``--local-rank`` is renamed, and under torchrun ``--local_rank $LOCAL_RANK`` is added, so s3prl's own
    distributed set-up (``init_process_group``, DDP, leader-only logging and saving) runs.
    """
    environ = os.environ if environ is None else environ
    out: list[str] = []
    for arg in argv:
        if arg == "--local-rank":
            out.append("--local_rank")
        elif arg.startswith("--local-rank="):
            out.append("--local_rank=" + arg.split("=", 1)[1])
        else:
            out.append(arg)
    if option_value(out, "--local_rank") is None and environ.get("LOCAL_RANK") is not None:
        out += ["--local_rank", str(environ["LOCAL_RANK"])]
    return out


def default_device() -> str:
    """``cuda`` when a GPU is usable, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_device_and_backend(argv: Sequence[str]) -> list[str]:
    """s3prl defaults to ``--device cuda`` and ``--backend nccl``, which fail on machines without a GPU.

    An explicit ``--device``/``--backend`` is kept; otherwise the device is ``cuda`` if available else ``cpu``, and
    the backend is ``nccl`` for CUDA devices and ``gloo`` for the CPU. (``-e`` does not restore the device from the
    checkpoint either, so a resumed run also gets the machine's device.)
    """
    out = list(argv)
    device = option_value(out, "--device")
    if device is None:
        device = default_device()
        out += ["--device", device]
    if option_value(out, "--backend") is None:
        out += ["--backend", "nccl" if device.startswith("cuda") else "gloo"]
    return out


def prepare_argv(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """All command-line fixes, in order: torchrun's local rank, then device and backend."""
    return choose_device_and_backend(translate_local_rank(argv, environ))
