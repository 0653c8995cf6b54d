"""Translation between fairseq's MR-HuBERT state-dict keys and our module's.

Our parameter names are fairseq's except where fairseq's are ``nn.Sequential`` positions or where we store a
parameter differently:

=====================================================================  =============================================
fairseq                                                                ours
=====================================================================  =============================================
``feature_extractor.conv_layers.<i>.0.{weight,bias}``                  ``feature_extractor.conv_layers.<i>.conv.*``
``feature_extractor.conv_layers.<i>.2.{weight,bias}`` (GroupNorm) /    ``feature_extractor.conv_layers.<i>.norm.*``
``feature_extractor.conv_layers.<i>.2.1.{weight,bias}`` (LayerNorm)
``<block>.pos_conv.0.{weight_g,weight_v}`` (weight norm, dim 2)        ``<block>.pos_conv.weight`` (folded)
``<block>.pos_conv.0.bias``                                            ``<block>.pos_conv.bias``
``<layer>.self_attn.{q,k,v}_proj.{weight,bias}``                       ``<layer>.self_attn.qkv_proj.*`` (stacked)
``<sampler>.{upsample,downsample}_conv.0.weight``                      ``<sampler>.{upsample,downsample}_conv.weight``
``<sampler>.{upsample,downsample}_conv.2.{weight,bias}`` (GroupNorm)   ``<sampler>.{...}_conv.norm.*``
=====================================================================  =============================================

Keys only pre-training uses (:data:`TRAINING_ONLY_PATTERNS`) are dropped on the way in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# Parameters of the pre-training heads and masking: not part of the inference network.
TRAINING_ONLY_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern)
    for pattern in (
        r"^mask_emb$",
        r"^final_projs?\.",  # final_projs.<i>.* (MR-HuBERT), final_proj.* (HuBERT-style files)
        r"^label_embs_concat(\.|$)",
        r"^target_glus?\.",
    )
)

_QKV = ("q", "k", "v")

# The parameters that only change name between fairseq's layout and ours: (fairseq's key, ours), as regular
# expressions whose groups carry over. fairseq wraps a conv and its norm in nn.Sequential (.0, .2 or .2.1 with
# layer norm); we name them.
_CNN_LAYER = r"(feature_extractor\.conv_layers\.\d+)"
_SAMPLER_CONV = r"(.+_modules\.\d+\.(?:upsample|downsample)_conv)"
_FAIRSEQ_TO_OURS = (
    (rf"{_CNN_LAYER}\.0\.(weight|bias)", r"\1.conv.\2"),
    (rf"{_CNN_LAYER}\.2(?:\.1)?\.(weight|bias)", r"\1.norm.\2"),
    (r"(.+\.pos_conv)\.0\.bias", r"\1.bias"),
    (rf"{_SAMPLER_CONV}\.0\.weight", r"\1.weight"),
    (rf"{_SAMPLER_CONV}\.2\.(weight|bias)", r"\1.norm.\2"),
)


def _ours_to_fairseq(cnn_norm: str) -> tuple[tuple[str, str], ...]:
    """The inverse of ``_FAIRSEQ_TO_OURS``; ``cnn_norm`` is where the CNN's norm sits (``2``, or ``2.1``)."""
    return (
        (rf"{_CNN_LAYER}\.conv\.(weight|bias)", r"\1.0.\2"),
        (rf"{_CNN_LAYER}\.norm\.(weight|bias)", rf"\1.{cnn_norm}.\2"),
        (r"(.+\.pos_conv)\.bias", r"\1.0.bias"),
        (rf"{_SAMPLER_CONV}\.weight", r"\1.0.weight"),
        (rf"{_SAMPLER_CONV}\.norm\.(weight|bias)", r"\1.2.\2"),
    )


def _renamed(key: str, renames: tuple[tuple[str, str], ...]) -> str | None:
    """``key`` under its other name, or None if no rename matches it."""
    for pattern, replacement in renames:
        if match := re.fullmatch(pattern, key):
            return match.expand(replacement)
    return None


def is_training_only(key: str) -> bool:
    """True for parameters used only by pre-training (prediction heads, label embeddings, mask embedding)."""
    return any(pattern.search(key) for pattern in TRAINING_ONLY_PATTERNS)


def fold_weight_norm(weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
    """The weight that ``weight_norm(conv, dim=2)`` computes: g * v / ||v||, the norm over all dims but dim 2."""
    return weight_v * (weight_g / weight_v.norm(dim=(0, 1), keepdim=True))


def from_fairseq(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fairseq's keys -> ours. Training-only keys are dropped; keys we do not know are passed through unchanged
    (so that ``load_state_dict(strict=True)`` reports them by their fairseq name)."""
    converted: dict[str, torch.Tensor] = {}
    grouped: dict[str, dict[str, torch.Tensor]] = {}  # parameters we assemble from several fairseq tensors
    for key, value in state_dict.items():
        if is_training_only(key):
            continue
        if renamed := _renamed(key, _FAIRSEQ_TO_OURS):
            converted[renamed] = value
        elif match := re.fullmatch(
            r"(.+\.pos_conv)\.0\.(?:(weight_g|weight_v)|parametrizations\.weight\.(original0|original1)|(weight))", key
        ):
            part = match[2] or {"original0": "weight_g", "original1": "weight_v"}.get(match[3] or "", "weight")
            grouped.setdefault(f"{match[1]}.weight", {})[part] = value
        elif match := re.fullmatch(r"(.+\.self_attn)\.([qkv])_proj\.(weight|bias)", key):
            grouped.setdefault(f"{match[1]}.qkv_proj.{match[3]}", {})[match[2]] = value
        else:
            converted[key] = value

    for target, parts in grouped.items():
        if target.endswith((".qkv_proj.weight", ".qkv_proj.bias")):
            missing = [p for p in _QKV if p not in parts]
            if missing:  # leave the pieces under their fairseq names: the strict load then names what is missing
                prefix, _, suffix = target.rpartition(".qkv_proj.")
                for name, tensor in parts.items():
                    converted[f"{prefix}.{name}_proj.{suffix}"] = tensor
                continue
            converted[target] = torch.cat([parts[p] for p in _QKV], dim=0)
        elif "weight" in parts:
            converted[target] = parts["weight"]
        elif "weight_g" in parts and "weight_v" in parts:
            converted[target] = fold_weight_norm(parts["weight_g"].float(), parts["weight_v"].float())
        else:
            for name, tensor in parts.items():
                converted[target.removesuffix(".weight") + f".0.{name}"] = tensor
    return converted


def to_fairseq(state_dict: Mapping[str, torch.Tensor], *, extractor_mode: str) -> dict[str, torch.Tensor]:
    """Our keys -> fairseq's inference keys. The positional conv's weight is written as weight norm with
    g = ||w|| and v = w (the same weight); ``extractor_mode`` decides the CNN norm's key layout."""
    converted: dict[str, torch.Tensor] = {}
    renames = _ours_to_fairseq(cnn_norm="2.1" if extractor_mode == "layer_norm" else "2")
    for key, value in state_dict.items():
        if renamed := _renamed(key, renames):
            converted[renamed] = value
        elif match := re.fullmatch(r"(.+\.pos_conv)\.weight", key):
            converted[f"{match[1]}.0.weight_g"] = value.norm(dim=(0, 1), keepdim=True)
            converted[f"{match[1]}.0.weight_v"] = value.clone()
        elif match := re.fullmatch(r"(.+\.self_attn)\.qkv_proj\.(weight|bias)", key):
            for name, part in zip(_QKV, value.chunk(3, dim=0), strict=False):
                converted[f"{match[1]}.{name}_proj.{match[2]}"] = part.clone()
        else:
            converted[key] = value
    return converted
