"""Fixes to torch's distributed set-up on machines without a GPU: s3prl calls ``torch.cuda.set_device`` and wraps
models in a CUDA-only ``DistributedDataParallel`` under torchrun; both are made to work on the CPU (gloo)."""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

import torch
import torch.utils.data

from downstream_probes.s3prl.compat.marks import is_ours, mark


def skip_cuda_set_device_without_gpu() -> None:
    """``s3prl.run_downstream.main`` calls ``torch.cuda.set_device(local_rank)`` whenever it is launched distributed.

    On a machine without CUDA that raises, so CPU-only multi-process training (gloo) could not start. Without CUDA
    the call has nothing to select and becomes a no-op; with CUDA it is untouched.
    """
    original = torch.cuda.set_device
    if is_ours(original):
        return

    @mark
    @functools.wraps(original)
    def set_device(device) -> None:
        if torch.cuda.is_available():
            original(device)

    torch.cuda.set_device = set_device


def _make_device_aware_ddp(base: type) -> type:
    class DeviceAwareDistributedDataParallel(base):
        """DDP that drops ``device_ids`` for a module living on the CPU (gloo), as torch requires."""

        def __init__(self, module: torch.nn.Module, *args, **kwargs) -> None:
            if all(p.device.type == "cpu" for p in module.parameters()):
                kwargs.pop("device_ids", None)
                kwargs.pop("output_device", None)
                if args:
                    args = (None, None, *args[2:])
            super().__init__(module, *args, **kwargs)

        def forward(self, *args, **kwargs):
            # Only the leader evaluates (under no_grad): a DDP forward there would start a buffer broadcast the
            # other ranks never join. Without gradients there is nothing to synchronise, so call the module.
            if not torch.is_grad_enabled():
                return self.module(*args, **kwargs)
            return super().forward(*args, **kwargs)

    DeviceAwareDistributedDataParallel.__qualname__ = base.__qualname__
    mark(DeviceAwareDistributedDataParallel)
    return DeviceAwareDistributedDataParallel


def allow_cpu_distributed_data_parallel() -> None:
    """s3prl's runner wraps trainable models in ``DDP(model, device_ids=[local_rank])`` and evaluates them on the
    leader rank only, through that wrapper.

    Two failures follow: torch refuses ``device_ids`` for CPU modules, so gloo training on CPUs cannot start; and
    the leader's first evaluation forward (after a training forward) broadcasts the experts' buffers (e.g.
    ``best_score``) in a collective the other ranks never join, which desynchronises and kills the job. The DDP
    class s3prl imports is replaced by a subclass that drops ``device_ids`` for CPU modules and runs no-grad
    forwards on the wrapped module directly (``isinstance(m, DistributedDataParallel)`` still holds, which
    s3prl's ``get_model_state`` relies on).
    """
    parallel: Any = importlib.import_module("torch.nn.parallel")
    current = parallel.DistributedDataParallel
    patched = current if is_ours(current) else _make_device_aware_ddp(current)
    parallel.DistributedDataParallel = patched
    for module_name in ("s3prl.downstream.runner",):
        module: Any = sys.modules.get(module_name)
        if module is not None and not is_ours(getattr(module, "DDP", None)):
            module.DDP = patched
