"""Profiling upstreams by name (``mrsuperb profile``): the model each name stands for, one profile per model, the
comparison with a reference, and ``run_profile``, which writes it all.

Weights: a registered name whose checkpoint is in the cache folder is profiled with it; otherwise with random
weights of the registered architecture (:mod:`upstream_mrhubert.architectures`), labelled
``"random-init (architecture of <name>)"``. Random weights do not change parameters or FLOPs; latency and memory
are the same up to noise.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from downstream_probes.reports.profile.blocks import OTHER_BLOCK, Block, blocks_of, conv_stride, level_strides
from downstream_probes.reports.profile.files import PROFILE_SCHEMA, ProfileError
from downstream_probes.reports.profile.measure import (
    FLOP_COUNTER_NOTE,
    count_flops,
    count_parameters,
    measure_latencies_interleaved,
    measure_latency,
    measure_peak_memory,
)
from upstream_mrhubert.architectures import ARCHITECTURES, build_random_model
from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.checkpoints import registry
from upstream_mrhubert.checkpoints.download import checkpoint_dir
from upstream_mrhubert.checkpoints.io import load_checkpoint
from upstream_mrhubert.config import layer_counts_of

DEFAULT_REFERENCE = "mrhubert_b5a"


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
        strides = level_strides(model_cfg)
        summary.update(
            resolutions_ms=[1000.0 * s / SAMPLE_RATE for s in strides],
            layers=layer_counts_of(model_cfg),
            sampler="plain conv" if model_cfg.get("use_plain_updownsample") else "conv adapter",
        )
    else:
        summary.update(
            resolutions_ms=[1000.0 * conv_stride(model_cfg) / SAMPLE_RATE],
            layers=[int(model_cfg.get("encoder_layers", 12))],
        )
    return summary


def profiled_from_checkpoint(
    name: str, path: str | os.PathLike[str], weights_label: str | None = None
) -> ProfiledModel:
    """A model of our families built from a checkpoint file (fairseq or s3prl-converted)."""
    # here, not at the top: the hub brings transformers (seconds), which random-weight profiles and reading a
    # profile.json (the leaderboard's --profile, through this package) never need
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
