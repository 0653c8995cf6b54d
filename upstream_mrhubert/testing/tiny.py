"""Tiny random MR-HuBERT checkpoints in fairseq's real file layout, one per configuration the paper studies.

Each preset keeps the layout that matters (resolutions, layer counts per block, sampler type, normalisation style,
prediction heads) with tiny widths, so tests and the demo can write and load a genuine-looking fairseq file in
milliseconds. The CNN keeps its 7 layers and 320-sample stride with 16 channels.

=====================  ==================================================================================
preset                 looks like
=====================  ==================================================================================
``base_2res``          MR-HuBERT base (mono-base): 20/40 ms, 4-4-4, post-LN, GroupNorm CNN
``large_2res``         MR-HuBERT large: 20/40 ms, 8-8-8, pre-LN, LayerNorm CNN, waveform normalisation
``single_prediction``  B4-a: base without the low-resolution (auxiliary) loss: one prediction head
``plain_samplers``     B3-a: base with plain ConvDownsampler/ConvUpsampler
``mono_resolution``    B5-a: one 20 ms resolution (sampling ratio 1:1), 4-4-4
``3res_32223``         B2-a: 20/40/80 ms, override_encoder_layers [3,2,2,2,3]
``3res_22422``         B2-b: 20/40/80 ms, override_encoder_layers [2,2,4,2,2]
``single_block``       no sampling level at all (``label_rate_ratios=[]``): one 12-layer block
=====================  ==================================================================================
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from upstream_mrhubert.checkpoints.io import write_fairseq_checkpoint
from upstream_mrhubert.config import FAIRSEQ_MODEL_DEFAULTS, FAIRSEQ_TASK_DEFAULTS, MultiresHubertConfig
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.model import MultiresHubert

TINY_CONV_CHANNELS = 16
TINY_LABELS = 10  # k-means classes per dictionary (fairseq adds 4 special symbols)
SPECIAL_SYMBOLS = ["<s>", "<pad>", "</s>", "<unk>"]

# preset -> fields that differ from the tiny base configuration
_PRESETS: dict[str, dict[str, Any]] = {
    "base_2res": {},
    "large_2res": {
        "encoder_layers": 8,
        "layer_norm_first": True,
        "extractor_mode": "layer_norm",
        "normalize": True,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "feature_grad_mult": 1.0,
    },
    "single_prediction": {"use_single_prediction": True},
    "plain_samplers": {"use_plain_updownsample": True, "conv_adapator_kernal": 3},
    "mono_resolution": {"label_rate_ratios": [1, 1]},
    "3res_32223": {
        "label_rate_ratios": [1, 2, 1, 2],
        "override_encoder_layers": "[3,2,2,2,3]",
        "conv_adapator_kernal": 3,
    },
    "3res_22422": {
        "label_rate_ratios": [1, 2, 1, 2],
        "override_encoder_layers": "[2,2,4,2,2]",
        "use_single_target": False,
    },
    "single_block": {"label_rate_ratios": [], "encoder_layers": 12},
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)

_TASK_FIELDS = ("normalize",)


def tiny_config(preset: str = "base_2res", *, dim: int = 32) -> tuple[dict[str, Any], dict[str, Any]]:
    """fairseq's ``cfg["model"]`` and ``cfg["task"]`` (every dataclass field, as fairseq saves them) of a preset."""
    if preset not in _PRESETS:
        raise UsageError(f"unknown tiny preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if dim % 8:
        raise UsageError(f"dim must be a multiple of 8 (4 attention heads, 4 pos-conv groups), got {dim}")
    changes = dict(_PRESETS[preset])
    channels = TINY_CONV_CHANNELS
    model_cfg: dict[str, Any] = {
        **FAIRSEQ_MODEL_DEFAULTS,
        "label_rate": 50.0,
        "label_rate_ratios": [1, 2],
        "encoder_layers": 4,
        "encoder_embed_dim": dim,
        "encoder_ffn_embed_dim": 2 * dim,
        "encoder_attention_heads": 4,
        "conv_feature_layers": f"[({channels},10,5)] + [({channels},3,2)] * 4 + [({channels},2,2)] * 2",
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "conv_adapator_kernal": 1,  # the released yamls' value
        "final_dim": dim // 2,
        "use_single_target": True,
        "encoder_layerdrop": 0.05,
        "dropout_input": 0.1,
        "dropout_features": 0.1,
        "feature_grad_mult": 0.1,
        "mask_prob": 0.8,
    }
    task_cfg: dict[str, Any] = {
        **FAIRSEQ_TASK_DEFAULTS,
        "label_rate": 50.0,
        "labels": ["km"],
        "max_sample_size": 250000,
        "min_sample_size": 32000,
    }
    for key, value in changes.items():
        (task_cfg if key in _TASK_FIELDS else model_cfg)[key] = value
    task_cfg["label_rate_ratios"] = list(model_cfg["label_rate_ratios"])
    return model_cfg, task_cfg


def tiny_dictionaries(model_cfg: dict[str, Any]) -> list[list[str]]:
    """The label dictionaries' symbols (fairseq's specials first): one with ``use_single_target``, else one per
    resolution, each a little larger than the previous so mix-ups show in shapes."""
    resolutions = len(model_cfg["label_rate_ratios"]) // 2 + 1
    count = 1 if model_cfg["use_single_target"] else resolutions
    return [SPECIAL_SYMBOLS + [str(label) for label in range(TINY_LABELS + i)] for i in range(count)]


def tiny_state_dict(
    model_cfg: dict[str, Any], task_cfg: dict[str, Any], dictionaries_symbols: list[list[str]], *, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights under fairseq's keys, pre-training heads included; every norm has a random affine and the
    positional conv a genuine weight-norm pair (g, v)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MultiresHubert(MultiresHubertConfig.from_fairseq(model_cfg, task_cfg))
    state = model.fairseq_state_dict()

    def noise(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=generator)

    for key, value in state.items():
        if key.endswith("weight_g"):
            state[key] = value * (0.5 + torch.rand(value.shape, generator=generator))
        elif key.endswith("weight_v"):
            state[key] = value * 3.0
        elif key.endswith(".bias"):
            state[key] = noise(*value.shape)
        elif value.dim() == 1:  # LayerNorm / GroupNorm scales
            state[key] = 1.0 + noise(*value.shape)

    dim = int(model_cfg["encoder_embed_dim"])
    final_dim = int(model_cfg["final_dim"]) or dim
    resolutions = model.config.num_resolutions
    heads = 1 if model_cfg["use_single_prediction"] else resolutions
    state["mask_emb"] = torch.rand(dim, generator=generator)
    for head in range(heads):
        state[f"final_projs.{head}.weight"] = noise(final_dim, dim)
        state[f"final_projs.{head}.bias"] = noise(final_dim)
    for head in range(heads):
        symbols = dictionaries_symbols[0 if model_cfg["use_single_target"] else head]
        state[f"label_embs_concat.{head}"] = torch.rand(len(symbols), final_dim, generator=generator)
    return state


def write_tiny_checkpoint(
    path: str | os.PathLike[str], preset: str = "base_2res", seed: int = 0, *, dim: int = 32
) -> Path:
    """Write a tiny random MR-HuBERT of ``preset`` as a real fairseq checkpoint file and return its path."""
    model_cfg, task_cfg = tiny_config(preset, dim=dim)
    dictionaries = tiny_dictionaries(model_cfg)
    state = tiny_state_dict(model_cfg, task_cfg, dictionaries, seed=seed)
    return write_fairseq_checkpoint(
        path, model_cfg=model_cfg, task_cfg=task_cfg, state_dict=state, dictionaries_symbols=dictionaries
    )
