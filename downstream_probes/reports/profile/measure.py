"""Efficiency profile of upstreams: parameters, FLOPs, CPU latency and peak memory, per block and per resolution.

arXiv 2410.23955 concludes that MR-HuBERT's downsampling buys efficiency, not better representations, without
measuring the efficiency. ``mrsuperb profile -u mrhubert_mono_base mrhubert_b2a mrhubert_b5a`` measures it: the
same 12 transformer layers cost less when some of them run at 40 or 80 ms.

What is measured, on one waveform of ``seconds`` seconds (seeded noise at 16 kHz, batch 1, inference mode):
  * parameters: per block, every parameter counted once (``other`` holds what no block owns);
  * FLOPs, per block and in total, 2 per multiply-add, element-wise operations not counted, by
    :class:`torch.utils.flop_counter.FlopCounterMode` alone (matrix products, convolutions and attention) for
    every family: our modules and transformers' HuBERT are plain ``Conv1d``/``Linear``/attention operators, which
    the counter sees as they run. The one formula added is for an operator torch's counter lacks: CPU attention
    (``aten._scaled_dot_product_flash_attention_for_cpu``), counted like torch counts its CUDA kernels;
  * latency: wall-clock CPU time of the forward pass, median of ``repeats`` runs after one warm-up; per block
    from forward hooks (timestamps on entry and exit). Several upstreams are timed in turns (each round runs
    every model once), so that load from other processes hits them alike and their ratios stay meaningful;
  * peak memory: the largest number of bytes held by live tensors created during the forward pass (weights and
    the input excluded), tracked exactly at the operator level through a dispatch mode, so it does not depend on
    the allocator or on other processes. Per block: the peak reached inside it above what was live on entry.
Normalised per second of audio as well (attention is quadratic in length, so per-second values depend on the
clip length, which is recorded).
"""

from __future__ import annotations

import math
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from downstream_probes.reports.profile.blocks import OTHER_BLOCK, Block

FLOP_COUNTER_NOTE = (
    "2 FLOPs per multiply-add, element-wise operations not counted; every block counted by "
    "torch.utils.flop_counter.FlopCounterMode (matrix products, convolutions and attention), "
    "with torch's attention formula registered for its CPU attention kernel, which the counter lacks"
)


# ---------------------------------------------------------------------------------------------------------------
# Measurements


class LiveTensorMemory(TorchDispatchMode):
    """Bytes held by live tensor storages created by operators run under this mode, and their peaks.

    Every operator output is seen here; its storage is counted once, whatever number of views share it, and
    released when the last tensor seen on it is garbage collected. Storages that existed before (weights, inputs)
    are passed in as ``preexisting`` and never counted. ``open``/``close`` bracket a block: its peak is the
    highest live count while it is open, minus the live count on entry.
    """

    def __init__(self, preexisting: Sequence[torch.Tensor] = ()) -> None:
        super().__init__()
        self._ignored = {t.untyped_storage().data_ptr() for t in preexisting}
        self._storages: dict[int, list[int]] = {}  # data_ptr -> [nbytes, tensors alive]
        self.live = 0
        self.peak = 0
        self._open: dict[str, list[int]] = {}  # block -> [live on entry, peak while open]
        self.block_peaks: dict[str, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Mapping | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self._ignored:
            return
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
            for state in self._open.values():
                state[1] = max(state[1], self.live)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[key]

    def open(self, block: str) -> None:
        self._open[block] = [self.live, self.live]

    def close(self, block: str) -> None:
        entry, peak = self._open.pop(block)
        self.block_peaks[block] = max(self.block_peaks.get(block, 0), peak - entry)


@contextmanager
def _block_hooks(
    model: nn.Module, blocks: Sequence[Block], on_enter: Callable[[str], None], on_exit: Callable[[str], None]
) -> Iterator[None]:
    handles = []
    for block in blocks:
        module = model.get_submodule(block.module_path) if block.module_path else model
        handles.append(module.register_forward_pre_hook(lambda _m, _a, name=block.name: on_enter(name)))
        handles.append(module.register_forward_hook(lambda _m, _a, _o, name=block.name: on_exit(name)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_parameters(model: nn.Module, blocks: Sequence[Block]) -> dict[str, int]:
    """Parameters per block (each tensor counted once, in its first block) and ``other`` for the rest."""
    seen: set[int] = set()
    counts: dict[str, int] = {}
    for block in blocks:
        module = model.get_submodule(block.module_path) if block.module_path else model
        counts[block.name] = 0
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                counts[block.name] += parameter.numel()
    counts[OTHER_BLOCK] = sum(p.numel() for p in model.parameters() if id(p) not in seen)
    return counts


def _cpu_attention_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *_args: Any,
    out_shape: Any = None,
    **_kwargs: Any,
) -> int:
    """FLOPs of one fused attention call: the batched products Q·Kᵀ and softmax(Q·Kᵀ)·V, 2 per multiply-add.

    Same count as torch's formula for its CUDA attention kernels; the mask and softmax are element-wise.
    """
    *batch, queries, qk_dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * queries * keys * (qk_dim + value_dim)


def _extra_flop_formulas() -> dict[Any, Callable[..., int]]:
    """Operators the flop counter lacks: on CPU, ``F.scaled_dot_product_attention`` runs
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which torch does not count (attention would read 0)."""
    from torch.utils.flop_counter import flop_registry

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None or op in flop_registry else {op: _cpu_attention_flops}


def flop_counter() -> FlopCounterMode:
    """torch's flop counter, with torch's attention formula for the CPU attention kernel it does not count."""
    return FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas())


def count_flops(model: nn.Module, blocks: Sequence[Block], run: Callable[[], Any]) -> dict[str, int]:
    """FLOPs per block and ``other`` (what the counter saw outside the blocks), from one forward pass."""
    counter = flop_counter()
    with counter:
        run()
    by_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__

    def seen(path: str) -> int:
        return int(by_module.get(f"{root}.{path}" if path else root, 0))

    counted = {b.name: seen(b.module_path) for b in blocks}
    return {**counted, OTHER_BLOCK: int(counter.get_total_flops()) - sum(counted.values())}


def _timed_forward(model: nn.Module, blocks: Sequence[Block], run: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """One forward pass: its wall-clock time and the time spent inside each block (forward hooks)."""
    entered: dict[str, float] = {}
    spent: dict[str, float] = {b.name: 0.0 for b in blocks}

    def enter(name: str) -> None:
        entered[name] = time.perf_counter()

    def leave(name: str) -> None:
        spent[name] += time.perf_counter() - entered.pop(name)

    with _block_hooks(model, blocks, enter, leave):
        start = time.perf_counter()
        run()
        total = time.perf_counter() - start
    return total, spent


def _medians(rounds: Sequence[tuple[float, dict[str, float]]]) -> tuple[float, dict[str, float]]:
    total = statistics.median(t for t, _ in rounds)
    medians = {name: statistics.median(spent[name] for _, spent in rounds) for name in rounds[0][1]}
    medians[OTHER_BLOCK] = max(total - sum(medians.values()), 0.0)
    return total, medians


def measure_latency(
    model: nn.Module, blocks: Sequence[Block], run: Callable[[], Any], repeats: int
) -> tuple[float, dict[str, float]]:
    """Median forward time and median time per block (``other``: total minus the blocks), after a warm-up."""
    return measure_latencies_interleaved([(model, blocks, run)], repeats)[0]


def measure_latencies_interleaved(
    models: Sequence[tuple[nn.Module, Sequence[Block], Callable[[], Any]]],
    repeats: int,
) -> list[tuple[float, dict[str, float]]]:
    """Latencies of several models timed in turns: one warm-up each, then ``repeats`` rounds that run every model
    once. Load from other processes that comes and goes then hits every model alike, so the ratios between them
    hold on a busy machine where timing one model after the other would not."""
    for _, _, run in models:
        run()
    rounds: list[list[tuple[float, dict[str, float]]]] = [[] for _ in models]
    for _ in range(repeats):
        for i, (model, blocks, run) in enumerate(models):
            rounds[i].append(_timed_forward(model, blocks, run))
    return [_medians(r) for r in rounds]


def measure_peak_memory(
    model: nn.Module, blocks: Sequence[Block], run: Callable[[], Any], inputs: Sequence[torch.Tensor]
) -> tuple[int, dict[str, int]]:
    """Peak bytes of live tensors created during the forward pass, overall and per block."""
    preexisting = [*model.parameters(), *model.buffers(), *inputs]
    tracker = LiveTensorMemory(preexisting)
    with tracker, _block_hooks(model, blocks, tracker.open, tracker.close):
        output = run()
    del output
    return tracker.peak, {b.name: tracker.block_peaks.get(b.name, 0) for b in blocks}
