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

Blocks of MR-HuBERT: ``cnn`` (the waveform CNN), ``encoders[i]``, ``downsample[i]``, ``middle``,
``upsample[i]``, ``decoders[i]``, ``other`` (LayerNorm and projection after the CNN, glue between blocks);
HuBERT: ``cnn``, ``encoder``, ``other``; any other upstream: ``model``. Sampling blocks are listed at the
resolution they produce; per-resolution totals add the blocks running at 20, 40 and 80 ms.

Weights: a registered name whose checkpoint is in the cache folder is profiled with it; otherwise with random
weights of the registered architecture (:mod:`upstream_mrhubert.architectures`), labelled
``"random-init (architecture of <name>)"``. Random weights do not change parameters or FLOPs; latency and memory
are the same up to noise.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from downstream_probes.reports.profile.files import PROFILE_SCHEMA, ProfileError
from upstream_mrhubert.audio import SAMPLE_RATE

OTHER_BLOCK = "other"
CNN_BLOCK = "cnn"
FLOP_COUNTER_NOTE = (
    "2 FLOPs per multiply-add, element-wise operations not counted; every block counted by "
    "torch.utils.flop_counter.FlopCounterMode (matrix products, convolutions and attention), "
    "with torch's attention formula registered for its CPU attention kernel, which the counter lacks"
)
DEFAULT_REFERENCE = "mrhubert_b5a"


# ---------------------------------------------------------------------------------------------------------------
# Blocks


@dataclass(frozen=True)
class Block:
    """A named part of the model: a submodule path, and the frame stride (samples) its output runs at."""

    name: str
    module_path: str
    stride: int | None
    input_stride: int | None = None

    @property
    def resolution_ms(self) -> float | None:
        return None if self.stride is None else 1000.0 * self.stride / SAMPLE_RATE


def _find_module_path(model: nn.Module, attribute: str) -> str | None:
    """Dotted path of the shallowest submodule reached through an attribute called ``attribute``."""
    matches = [name for name, _ in model.named_modules() if name.split(".")[-1] == attribute]
    return min(matches, key=lambda n: n.count("."), default=None)


def conv_feature_layers(model_cfg: Mapping[str, Any]) -> tuple[tuple[int, int, int], ...]:
    """The waveform CNN's layers, (channels, kernel, stride) each, from fairseq's ``conv_feature_layers``."""
    from upstream_mrhubert.config import DEFAULT_CONV_FEATURE_LAYERS, parse_conv_feature_layers

    spec = model_cfg.get("conv_feature_layers") or DEFAULT_CONV_FEATURE_LAYERS
    return tuple(parse_conv_feature_layers(str(spec)))


def _conv_stride(model_cfg: Mapping[str, Any]) -> int:
    return math.prod(stride for _, _, stride in conv_feature_layers(model_cfg))


def level_strides(model_cfg: Mapping[str, Any]) -> list[int]:
    """Samples per frame at each MR-HuBERT level: level 0 from the CNN, then times down/up per (up, down) pair."""
    ratios = [int(r) for r in model_cfg.get("label_rate_ratios") or []]
    strides = [_conv_stride(model_cfg)]
    for up, down in zip(ratios[0::2], ratios[1::2], strict=False):
        strides.append(strides[-1] * down // up)
    return strides


def mrhubert_blocks(model: nn.Module, model_cfg: Mapping[str, Any]) -> list[Block]:
    """The blocks of an MR-HuBERT in execution order, with their strides (fairseq's module layout)."""
    strides = level_strides(model_cfg)
    levels = len(strides) - 1  # number of encoder (and decoder) blocks
    found = {
        name: _find_module_path(model, name)
        for name in (
            "feature_extractor",
            "encoders",
            "downsample_modules",
            "middle_encoder",
            "upsample_modules",
            "decoders",
        )
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ProfileError(
            f"{type(model).__name__} has no submodule(s) {', '.join(missing)}: not an MR-HuBERT "
            "with fairseq's module names"
        )
    paths = {name: path for name, path in found.items() if path is not None}
    blocks = [Block(CNN_BLOCK, paths["feature_extractor"], strides[0])]
    for i in range(levels):
        blocks.append(Block(f"encoders[{i}]", f"{paths['encoders']}.{i}", strides[i]))
        blocks.append(Block(f"downsample[{i}]", f"{paths['downsample_modules']}.{i}", strides[i + 1], strides[i]))
    blocks.append(Block("middle", paths["middle_encoder"], strides[levels]))
    for i in range(levels):
        # Decoder i runs at level levels-1-i, after fairseq's upsample_modules[levels-1-i] (level+1 -> level).
        level = levels - 1 - i
        blocks.append(
            Block(f"upsample[{level}]", f"{paths['upsample_modules']}.{level}", strides[level], strides[level + 1])
        )
        blocks.append(Block(f"decoders[{i}]", f"{paths['decoders']}.{i}", strides[level]))
    return blocks


def hubert_blocks(model: nn.Module, model_cfg: Mapping[str, Any]) -> list[Block]:
    """HuBERT (transformers' HubertModel inside our baseline): the CNN and the transformer encoder."""
    stride = _conv_stride(model_cfg)
    cnn, encoder = _find_module_path(model, "feature_extractor"), _find_module_path(model, "encoder")
    if cnn is None or encoder is None:
        raise ProfileError(f"{type(model).__name__} has no feature_extractor/encoder: not a HuBERT")
    return [Block(CNN_BLOCK, cnn, stride), Block("encoder", encoder, stride)]


def blocks_of(model: nn.Module, model_cfg: Mapping[str, Any] | None, family: str | None) -> list[Block]:
    """Blocks for our two families; one ``model`` block for any other upstream."""
    if family == "mrhubert" and model_cfg is not None:
        return mrhubert_blocks(model, model_cfg)
    if family == "hubert" and model_cfg is not None:
        return hubert_blocks(model, model_cfg)
    return [Block("model", "", None)]


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


# ---------------------------------------------------------------------------------------------------------------
# One upstream


@dataclass
class ProfiledModel:
    """A model ready to profile: the module, how to call it, its blocks and where its weights came from."""

    name: str
    module: nn.Module
    blocks: list[Block]
    weights: str
    family: str | None
    architecture: dict[str, Any] = field(default_factory=dict)
    call: Callable[[nn.Module, torch.Tensor], Any] | None = None  # default: module(waveform [1, L])


def _check_settings(seconds: float, repeats: int) -> None:
    if seconds <= 0:
        raise ProfileError(f"--seconds must be positive, got {seconds}")
    if repeats < 1:
        raise ProfileError(f"--repeats must be at least 1, got {repeats}")


def profile_clip(seconds: float, seed: int) -> torch.Tensor:
    """The profiled input: seeded noise, batch 1, ``seconds`` long at 16 kHz."""
    generator = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(1, int(round(seconds * SAMPLE_RATE)), generator=generator)


def forward_of(profiled: ProfiledModel, waveform: torch.Tensor) -> Callable[[], Any]:
    """A no-argument inference call of the model on ``waveform`` (eval mode, no autograd)."""
    model = profiled.module.eval()
    call = profiled.call or (lambda module, wav: module(wav))

    def run() -> Any:
        with torch.no_grad():
            return call(model, waveform)

    return run


def profile_model(
    profiled: ProfiledModel,
    seconds: float = 10.0,
    repeats: int = 3,
    seed: int = 0,
    latency: tuple[float, dict[str, float]] | None = None,
) -> dict[str, Any]:
    """All measurements for one model, as the JSON-ready dict of one profile entry.

    ``latency`` (total, per block) measured elsewhere (:func:`measure_latencies_interleaved`) is used as given.
    """
    _check_settings(seconds, repeats)
    waveform = profile_clip(seconds, seed)
    run = forward_of(profiled, waveform)
    model = profiled.module
    blocks = profiled.blocks
    params = count_parameters(model, blocks)
    flops = count_flops(model, blocks, run)
    total_latency, block_latency = latency if latency is not None else measure_latency(model, blocks, run, repeats)
    peak, block_peaks = measure_peak_memory(model, blocks, run, [waveform])

    block_entries: list[dict[str, Any]] = []
    base_stride = next((b.stride for b in blocks if b.stride is not None), None)
    for block in [*blocks, Block(OTHER_BLOCK, "", base_stride)]:
        block_entries.append(
            {
                "name": block.name,
                "module": block.module_path,
                "resolution_ms": block.resolution_ms,
                "input_resolution_ms": None
                if block.input_stride is None
                else 1000.0 * block.input_stride / SAMPLE_RATE,
                "params": params[block.name],
                "flops": flops[block.name],
                "latency_s": block_latency[block.name],
                "peak_memory_bytes": block_peaks.get(block.name),
            }
        )
    resolutions: dict[float | None, dict[str, Any]] = {}
    for entry in block_entries:
        group = resolutions.setdefault(
            entry["resolution_ms"],
            {"resolution_ms": entry["resolution_ms"], "blocks": [], "params": 0, "flops": 0, "latency_s": 0.0},
        )
        group["blocks"].append(entry["name"])
        for key in ("params", "flops", "latency_s"):
            group[key] += entry[key]
    total_flops = sum(flops.values())
    return {
        "name": profiled.name,
        "weights": profiled.weights,
        "family": profiled.family,
        "architecture": profiled.architecture,
        "total": {
            "params": sum(params.values()),
            "flops": total_flops,
            "flops_per_second": total_flops / seconds,
            "latency_s": total_latency,
            "latency_per_second": total_latency / seconds,
            "peak_memory_bytes": peak,
            "peak_memory_per_second": peak / seconds,
        },
        "blocks": block_entries,
        "resolutions": sorted(
            resolutions.values(), key=lambda g: (g["resolution_ms"] is None, g["resolution_ms"] or 0)
        ),
    }


# ---------------------------------------------------------------------------------------------------------------
# Building models by upstream name


def _released_checkpoint_on_disk(name: str) -> Path | None:
    from upstream_mrhubert.checkpoints import registry
    from upstream_mrhubert.checkpoints.download import checkpoint_dir

    release = registry.CHECKPOINTS_BY_NAME.get(name)
    if release is None:
        return None
    path = checkpoint_dir() / release.filename
    return path if path.is_file() else None


def _architecture_summary(model_cfg: Mapping[str, Any], family: str) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "family": family,
        "embed_dim": model_cfg.get("encoder_embed_dim"),
        "ffn_dim": model_cfg.get("encoder_ffn_embed_dim"),
        "heads": model_cfg.get("encoder_attention_heads"),
    }
    if family == "mrhubert":
        from upstream_mrhubert.config import layer_counts_of

        strides = level_strides(model_cfg)
        summary.update(
            resolutions_ms=[1000.0 * s / SAMPLE_RATE for s in strides],
            layers=layer_counts_of(model_cfg),
            sampler="plain conv" if model_cfg.get("use_plain_updownsample") else "conv adapter",
        )
    else:
        summary.update(
            resolutions_ms=[1000.0 * _conv_stride(model_cfg) / SAMPLE_RATE],
            layers=[int(model_cfg.get("encoder_layers", 12))],
        )
    return summary


def profiled_from_checkpoint(
    name: str, path: str | os.PathLike[str], weights_label: str | None = None
) -> ProfiledModel:
    """A model of our families built from a checkpoint file (fairseq or s3prl-converted)."""
    from upstream_mrhubert.checkpoints.io import load_checkpoint
    from upstream_mrhubert.hub import build_model, checkpoint_family

    loaded = load_checkpoint(path)
    family = checkpoint_family(loaded)
    model = build_model(loaded)
    return ProfiledModel(
        name=name,
        module=model,
        blocks=blocks_of(model, loaded.model_cfg, family),
        weights=weights_label or f"checkpoint {Path(path).name}",
        family=family,
        architecture=_architecture_summary(loaded.model_cfg, family),
    )


def profiled_from_architecture(
    name: str, model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], label: str | None = None, seed: int = 0
) -> ProfiledModel:
    """Random weights of an architecture given as fairseq cfg sections."""
    from upstream_mrhubert.architectures import build_random_model

    torch.manual_seed(seed)
    model, family = build_random_model(model_cfg, task_cfg, seed=seed)
    return ProfiledModel(
        name=name,
        module=model,
        blocks=blocks_of(model, model_cfg, family),
        weights=f"random-init (architecture of {label or name})",
        family=family,
        architecture=_architecture_summary(model_cfg, family),
    )


def profiled_upstream(name: str, ckpt: str | None = None, seed: int = 0) -> ProfiledModel:
    """Resolve ``name``: a checkpoint given or cached, else random weights of its registered architecture,
    else (an upstream of another package) the s3prl upstream as a whole, called on a list of waveforms."""
    from upstream_mrhubert.architectures import ARCHITECTURES
    from upstream_mrhubert.checkpoints import registry

    if ckpt is not None:
        return profiled_from_checkpoint(name, ckpt)
    cached = _released_checkpoint_on_disk(name)
    if cached is not None:
        return profiled_from_checkpoint(name, cached, f"released checkpoint {cached}")
    if name in ARCHITECTURES:
        arch = ARCHITECTURES[name]
        return profiled_from_architecture(name, arch.model_cfg(), arch.task_cfg(), seed=seed)
    if name in registry.ALL_UPSTREAM_NAMES:
        raise ProfileError(
            f"no architecture description for {name} and no checkpoint in the cache folder; pass -k PATH, or use "
            f"one of {', '.join(sorted(ARCHITECTURES))}"
        )
    return _profiled_foreign_upstream(name)


def _profiled_foreign_upstream(name: str) -> ProfiledModel:
    """An upstream of another package (entry point ``s3prl.upstreams``): profiled as one block."""
    from importlib.metadata import entry_points

    matches = [ep for ep in entry_points(group="s3prl.upstreams") if ep.name == name]
    if not matches:
        raise ProfileError(
            f"unknown upstream {name!r}: not in our registry nor declared by an installed package in "
            "entry-point group s3prl.upstreams (`mrsuperb upstreams` lists them)"
        )
    upstream = matches[0].load()()
    return ProfiledModel(
        name=name,
        module=upstream,
        blocks=[Block("model", "", None)],
        weights=f"as provided by {matches[0].value}",
        family=None,
        call=lambda module, wav: module([wav[0]]),
    )


# ---------------------------------------------------------------------------------------------------------------
# Many upstreams, comparison, files


def compare(entries: Sequence[Mapping[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Each entry's total cost as a ratio of the reference's (below 1: cheaper than the reference)."""
    ref = next((e for e in entries if e["name"] == reference), None)
    if ref is None:
        return []
    out = []
    for entry in entries:
        if entry["name"] == reference:
            continue
        out.append(
            {
                "upstream": entry["name"],
                "reference": reference,
                **{
                    f"{key}_ratio": (entry["total"][key] / ref["total"][key]) if ref["total"][key] else None
                    for key in ("params", "flops", "latency_s", "peak_memory_bytes")
                },
            }
        )
    return out


def run_profile(
    names: Sequence[str],
    seconds: float = 10.0,
    repeats: int = 3,
    seed: int = 0,
    checkpoints: Mapping[str, str] | None = None,
    reference: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Profile every upstream in ``names`` (same clip, same settings) and compare them with ``reference``.

    All models are built first and held together, so that their latencies are measured in interleaved rounds
    (:func:`measure_latencies_interleaved`); parameters, FLOPs and memory are then measured one model at a time.
    """
    from tqdm import tqdm

    if not names:
        raise ProfileError("give at least one upstream name (-u NAME)")
    _check_settings(seconds, repeats)
    with tqdm(total=2 * len(names) + repeats, desc="profile", unit="step", disable=not progress) as bar:
        models = []
        for name in names:
            bar.set_postfix_str(f"build {name}")
            models.append(profiled_upstream(name, (checkpoints or {}).get(name), seed=seed))
            bar.update(1)
        waveform = profile_clip(seconds, seed)
        bar.set_postfix_str("latency, models in turn")
        latencies = measure_latencies_interleaved(
            [(m.module.eval(), m.blocks, forward_of(m, waveform)) for m in models], repeats
        )
        bar.update(repeats)
        entries = []
        for profiled, latency in zip(models, latencies, strict=False):
            bar.set_postfix_str(f"FLOPs and memory {profiled.name}")
            entries.append(profile_model(profiled, seconds=seconds, repeats=repeats, seed=seed, latency=latency))
            bar.update(1)
    if reference is None:
        reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in names else names[0]
    return {
        "schema": PROFILE_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": seconds,
        "sample_rate": SAMPLE_RATE,
        "batch_size": 1,
        "repeats": repeats,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "versions": {"torch": torch.__version__},
        "flop_counter": FLOP_COUNTER_NOTE,
        "reference": reference,
        "upstreams": entries,
        "comparisons": compare(entries, reference),
    }
