"""The blocks an upstream is profiled by: where each sits in the module tree and the stride it runs at.

Blocks of MR-HuBERT: ``cnn`` (the waveform CNN), ``encoders[i]``, ``downsample[i]``, ``middle``,
``upsample[i]``, ``decoders[i]``, ``other`` (LayerNorm and projection after the CNN, glue between blocks);
HuBERT: ``cnn``, ``encoder``, ``other``; any other upstream: ``model``. Sampling blocks are listed at the
resolution they produce; per-resolution totals add the blocks running at 20, 40 and 80 ms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from downstream_probes.reports.profile.files import ProfileError
from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.config import DEFAULT_CONV_FEATURE_LAYERS, parse_conv_feature_layers

OTHER_BLOCK = "other"
CNN_BLOCK = "cnn"


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
    spec = model_cfg.get("conv_feature_layers") or DEFAULT_CONV_FEATURE_LAYERS
    return tuple(parse_conv_feature_layers(str(spec)))


def conv_stride(model_cfg: Mapping[str, Any]) -> int:
    return math.prod(stride for _, _, stride in conv_feature_layers(model_cfg))


def level_strides(model_cfg: Mapping[str, Any]) -> list[int]:
    """Samples per frame at each MR-HuBERT level: level 0 from the CNN, then times down/up per (up, down) pair."""
    ratios = [int(r) for r in model_cfg.get("label_rate_ratios") or []]
    strides = [conv_stride(model_cfg)]
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
    stride = conv_stride(model_cfg)
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
