"""Tiny HuBERT checkpoints in fairseq's real on-disk layout, with random weights, for tests and demos.

fairseq's ``hubert`` model keeps its parameters under fixed names (``feature_extractor.conv_layers.i.0``,
``encoder.pos_conv.0.weight_g``, ``encoder.layers.i.self_attn.q_proj``, ...). The state dict is built here
from the configuration alone, so no model code (ours, fairseq's or s3prl's) is needed to write one; the tests
check that s3prl's copy of fairseq's model accepts it with a strict ``load_state_dict``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch

from upstream_mrhubert.checkpoints.io import write_fairseq_checkpoint
from upstream_mrhubert.config import (
    FAIRSEQ_HUBERT_TASK_DEFAULTS,
    FAIRSEQ_PRETRAINING_DEFAULTS,
    parse_conv_feature_layers,
)

# A 12-layer model (so it exposes T0..T12 like HuBERT base) small enough to run in milliseconds.
# The CNN keeps HuBERT's strides (320 samples per frame, 400-sample receptive field) with narrow channels.
TINY_CONV_FEATURE_LAYERS = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"
TINY_NUM_CLASSES = 20


def tiny_hubert_configs(*, large_style: bool = False, embed_dim: int = 48) -> tuple[dict[str, Any], dict[str, Any]]:
    """fairseq ``cfg["model"]`` and ``cfg["task"]`` sections of a tiny HuBERT.

    ``large_style`` switches on what HuBERT large uses: pre-LN layers (``layer_norm_first``), LayerNorm in every
    CNN layer (``extractor_mode=layer_norm``) and waveform normalisation (task ``normalize``). ``embed_dim`` equal
    to the CNN width (32) makes fairseq drop ``post_extract_proj``.
    """
    model_cfg: dict[str, Any] = {
        "_name": "hubert",
        **FAIRSEQ_PRETRAINING_DEFAULTS,
        "extractor_mode": "layer_norm" if large_style else "default",
        "encoder_layers": 12,
        "encoder_embed_dim": embed_dim,
        "encoder_ffn_embed_dim": 96,
        "encoder_attention_heads": 4,
        "activation_fn": "gelu",
        "layer_type": "transformer",
        "layer_norm_first": large_style,
        "conv_feature_layers": TINY_CONV_FEATURE_LAYERS,
        "conv_bias": False,
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "required_seq_len_multiple": 2,
        # Pre-training settings that differ from fairseq's defaults, as in the base recipe.
        "encoder_layerdrop": 0.05,
        "final_dim": 16,
        "feature_grad_mult": 0.1,
        "mask_prob": 0.8,
    }
    task_cfg: dict[str, Any] = {
        **copy.deepcopy(FAIRSEQ_HUBERT_TASK_DEFAULTS),  # fresh lists: callers may edit the cfg
        "data": "/data/librispeech/manifest",
        "label_dir": "/data/librispeech/labels",
        "normalize": large_style,
        "max_sample_size": 250000,
        "min_sample_size": 32000,
    }
    return model_cfg, task_cfg


def fairseq_hubert_parameter_shapes(model_cfg: dict[str, Any], num_classes: int) -> dict[str, tuple[int, ...]]:
    """Every parameter name and shape of fairseq's ``hubert`` model for this configuration."""
    conv_layers = parse_conv_feature_layers(model_cfg["conv_feature_layers"])
    dim = model_cfg["encoder_embed_dim"]
    ffn = model_cfg["encoder_ffn_embed_dim"]
    final_dim = model_cfg.get("final_dim", 0) or dim
    layer_norm_mode = model_cfg.get("extractor_mode", "default") == "layer_norm"

    shapes: dict[str, tuple[int, ...]] = {}
    in_channels = 1
    for index, (channels, kernel, _stride) in enumerate(conv_layers):
        prefix = f"feature_extractor.conv_layers.{index}"
        shapes[f"{prefix}.0.weight"] = (channels, in_channels, kernel)
        if model_cfg.get("conv_bias", False):
            shapes[f"{prefix}.0.bias"] = (channels,)
        if layer_norm_mode:  # Sequential(TransposeLast, LayerNorm, TransposeLast) at position 2
            shapes[f"{prefix}.2.1.weight"] = shapes[f"{prefix}.2.1.bias"] = (channels,)
        elif index == 0:  # GroupNorm(channels, channels) on the first layer only
            shapes[f"{prefix}.2.weight"] = shapes[f"{prefix}.2.bias"] = (channels,)
        in_channels = channels

    embed = conv_layers[-1][0]
    shapes["layer_norm.weight"] = shapes["layer_norm.bias"] = (embed,)
    if embed != dim:
        shapes["post_extract_proj.weight"] = (dim, embed)
        shapes["post_extract_proj.bias"] = (dim,)
    shapes["mask_emb"] = (dim,)

    kernel, groups = model_cfg["conv_pos"], model_cfg["conv_pos_groups"]
    shapes["encoder.pos_conv.0.bias"] = (dim,)
    shapes["encoder.pos_conv.0.weight_g"] = (1, 1, kernel)
    shapes["encoder.pos_conv.0.weight_v"] = (dim, dim // groups, kernel)
    for layer in range(model_cfg["encoder_layers"]):
        prefix = f"encoder.layers.{layer}"
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            shapes[f"{prefix}.self_attn.{projection}.weight"] = (dim, dim)
            shapes[f"{prefix}.self_attn.{projection}.bias"] = (dim,)
        shapes[f"{prefix}.self_attn_layer_norm.weight"] = shapes[f"{prefix}.self_attn_layer_norm.bias"] = (dim,)
        shapes[f"{prefix}.fc1.weight"], shapes[f"{prefix}.fc1.bias"] = (ffn, dim), (ffn,)
        shapes[f"{prefix}.fc2.weight"], shapes[f"{prefix}.fc2.bias"] = (dim, ffn), (dim,)
        shapes[f"{prefix}.final_layer_norm.weight"] = shapes[f"{prefix}.final_layer_norm.bias"] = (dim,)
    shapes["encoder.layer_norm.weight"] = shapes["encoder.layer_norm.bias"] = (dim,)

    shapes["final_proj.weight"] = (final_dim, dim)
    shapes["final_proj.bias"] = (final_dim,)
    shapes["label_embs_concat"] = (num_classes, final_dim)
    return shapes


def random_fairseq_hubert_state_dict(
    model_cfg: dict[str, Any], num_classes: int, *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights of a sensible scale for every parameter (norm gains near 1, weight-norm gains positive)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in fairseq_hubert_parameter_shapes(model_cfg, num_classes).items():
        noise = torch.randn(shape, generator=generator)
        # Norm layers in the CNN sit at position 2 (".2." / ".2.1."); everything named *norm* elsewhere.
        is_norm = "norm" in name or (name.startswith("feature_extractor.") and ".2." in name)
        if name.endswith("weight_g"):
            state[name] = 1.0 + noise.abs()
        elif is_norm and name.endswith("weight"):
            state[name] = 1.0 + 0.1 * noise
        elif name.endswith("bias") or is_norm:
            state[name] = 0.1 * noise
        elif len(shape) >= 2:
            fan_in = int(torch.tensor(shape[1:]).prod())
            state[name] = noise / fan_in**0.5
        else:
            state[name] = noise
    return state


def write_tiny_hubert_checkpoint(
    path: str | os.PathLike[str], *, large_style: bool = False, embed_dim: int = 48, seed: int = 0
) -> Path:
    """Write a tiny random HuBERT in fairseq's layout (pickled ``Dictionary`` included) and return its path."""
    model_cfg, task_cfg = tiny_hubert_configs(large_style=large_style, embed_dim=embed_dim)
    symbols = [str(index) for index in range(TINY_NUM_CLASSES)]
    # fairseq's Dictionary adds four special symbols in front of the labels.
    state_dict = random_fairseq_hubert_state_dict(model_cfg, TINY_NUM_CLASSES + 4, seed=seed)
    return write_fairseq_checkpoint(
        path, model_cfg=model_cfg, task_cfg=task_cfg, state_dict=state_dict, dictionaries_symbols=[symbols]
    )
