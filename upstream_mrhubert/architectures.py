"""Architecture descriptions of the released checkpoints, as fairseq ``cfg["model"]`` / ``cfg["task"]`` dicts.

They let a model of any registered configuration be built (with random weights) without downloading its
checkpoint: for the efficiency profile (``mrsuperb profile``), for tiny look-alikes in tests and the demo
(:meth:`Architecture.scaled`), and to document what each name is.

Sources: fairseq's ``examples/mr_hubert/config/pretrain/mrhubert_{base_librispeech,large_librilight}.yaml`` (the
shared hyperparameters), its README (layer counts of the B.1/B.2 ablations), arXiv 2410.23955 Table 1 (mono-base,
B2-a, B2-b, B4-a, B5-a) and the MR-HuBERT paper's ablation list as summarised in :mod:`upstream_mrhubert.checkpoints.registry`.
Fields that change only the pre-training heads (``use_single_prediction``) do not change the inference network.

Each released checkpoint's layout (resolutions, layers per block, sampler, heads) is part of its registry entry
(:mod:`upstream_mrhubert.checkpoints.registry`, which also says which layouts are inferred rather than confirmed);
this module turns a layout into fairseq's cfg dicts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.checkpoints.registry import RELEASED_CHECKPOINTS, Layout, ReleasedCheckpoint
from upstream_mrhubert.config import (
    DEFAULT_CONV_FEATURE_LAYERS,
    FAIRSEQ_HUBERT_TASK_DEFAULTS,
    FAIRSEQ_PRETRAINING_DEFAULTS,
    FAIRSEQ_TASK_DEFAULTS,
    parse_conv_feature_layers,
)
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.model import MultiresHubert


@dataclass(frozen=True)
class Architecture:
    """What a released checkpoint is, in the terms fairseq's config uses: its registry entry's layout, plus the
    widths a tiny look-alike overrides."""

    name: str
    family: str  # "mrhubert" or "hubert"
    description: str
    layout: Layout
    # Set by ``scaled`` for tiny look-alikes; None keeps the size's values.
    embed_dim: int | None = None
    ffn_dim: int | None = None
    heads: int | None = None
    conv_feature_layers: str | None = None
    conv_pos: int | None = None
    conv_pos_groups: int | None = None

    @classmethod
    def of(cls, release: ReleasedCheckpoint) -> Architecture:
        """The architecture of a registry entry that has a layout."""
        if release.layout is None:
            raise UsageError(f"{release.name}: the registry has no layout for it; load its checkpoint instead")
        return cls(release.name, release.family, release.description, release.layout)

    @property
    def num_resolutions(self) -> int:
        return len(self.layout.label_rate_ratios) // 2 + 1

    @property
    def resolutions_ms(self) -> list[float]:
        stride = 1
        for _, _, s in parse_conv_feature_layers(self.conv_feature_layers or DEFAULT_CONV_FEATURE_LAYERS):
            stride *= s
        strides = [stride]
        for up, down in zip(self.layout.label_rate_ratios[0::2], self.layout.label_rate_ratios[1::2], strict=False):
            strides.append(strides[-1] * down // up)
        return [1000.0 * s / SAMPLE_RATE for s in strides]

    def model_cfg(self) -> dict[str, Any]:
        """fairseq's ``cfg["model"]`` for this architecture."""
        large = self.layout.size == "large"
        cfg: dict[str, Any] = {
            "_name": "multires_hubert" if self.family == "mrhubert" else "hubert",
            **FAIRSEQ_PRETRAINING_DEFAULTS,
            "extractor_mode": "layer_norm" if large else "default",
            "encoder_embed_dim": self.embed_dim or (1024 if large else 768),
            "encoder_ffn_embed_dim": self.ffn_dim or (4096 if large else 3072),
            "encoder_attention_heads": self.heads or (16 if large else 12),
            "activation_fn": "gelu",
            "layer_type": "transformer",
            "layer_norm_first": large,
            "conv_feature_layers": self.conv_feature_layers or DEFAULT_CONV_FEATURE_LAYERS,
            "conv_bias": False,
            "conv_pos": self.conv_pos or 128,
            "conv_pos_groups": self.conv_pos_groups or 16,
            "required_seq_len_multiple": 2,
            # The pre-training recipe's choices (fairseq's hubert/mr_hubert base and large yamls).
            "dropout": 0.0 if large else 0.1,
            "attention_dropout": 0.0 if large else 0.1,
            "encoder_layerdrop": 0.0 if large else 0.05,
            "dropout_input": 0.0 if large else 0.1,
            "dropout_features": 0.0 if large else 0.1,
            "final_dim": 768 if large else 256,
            "untie_final_proj": True,
            "feature_grad_mult": 1.0 if large else 0.1,
            "mask_prob": 0.8,
        }
        if self.family == "hubert":
            cfg["encoder_layers"] = self.layout.layers[0]
            cfg["untie_final_proj"] = False
            cfg["final_dim"] = 256
            return cfg
        uniform = len(set(self.layout.layers)) == 1
        cfg.update(
            label_rate_ratios=list(self.layout.label_rate_ratios),
            encoder_layers=self.layout.layers[0],
            override_encoder_layers="" if uniform else "[" + ",".join(map(str, self._override_order())) + "]",
            conv_adapator_kernal=1,
            use_plain_updownsample=self.layout.plain_sampling,
            use_single_target=True,
            use_single_prediction=self.layout.single_prediction,
        )
        return cfg

    def _override_order(self) -> list[int]:
        """``override_encoder_layers`` from per-block counts: encoders, middle, then decoders in reverse
        (fairseq gives decoder i the entry len-1-i)."""
        levels = self.num_resolutions - 1
        encoders, middle, decoders = (
            self.layout.layers[:levels],
            self.layout.layers[levels],
            self.layout.layers[levels + 1 :],
        )
        return [*encoders, middle, *reversed(decoders)]

    def task_cfg(self) -> dict[str, Any]:
        """fairseq's ``cfg["task"]`` for this architecture."""
        defaults = FAIRSEQ_TASK_DEFAULTS if self.family == "mrhubert" else FAIRSEQ_HUBERT_TASK_DEFAULTS
        cfg: dict[str, Any] = {
            **copy.deepcopy(defaults),  # fresh lists: callers may edit the cfg
            "label_dir": "",
            "normalize": self.layout.size == "large",
            "max_sample_size": 250000,
            "min_sample_size": 32000,
            "fine_tuning": False,
        }
        if self.family == "mrhubert":
            cfg["label_rate_ratios"] = list(self.layout.label_rate_ratios)
        return cfg

    def scaled(
        self,
        *,
        embed_dim: int,
        ffn_dim: int,
        heads: int,
        conv_channels: int = 32,
        conv_pos: int = 16,
        conv_pos_groups: int = 4,
        layers: tuple[int, ...] | None = None,
    ) -> Architecture:
        """The same layout (resolutions, layer counts, sampler) with small widths: a tiny look-alike."""
        conv = f"[({conv_channels},10,5)] + [({conv_channels},3,2)] * 4 + [({conv_channels},2,2)] * 2"
        return replace(
            self,
            embed_dim=embed_dim,
            ffn_dim=ffn_dim,
            heads=heads,
            conv_feature_layers=conv,
            conv_pos=conv_pos,
            conv_pos_groups=conv_pos_groups,
            layout=replace(self.layout, layers=layers or self.layout.layers),
        )


ARCHITECTURES: dict[str, Architecture] = {
    release.name: Architecture.of(release) for release in RELEASED_CHECKPOINTS if release.layout is not None
}


def architecture(name: str) -> Architecture:
    """The architecture registered as ``name``; the error lists the known names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UsageError(f"no architecture description for {name!r}; known: {', '.join(ARCHITECTURES)}") from None


def build_random_model(model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], *, seed: int = 0) -> tuple[Any, str]:
    """Our model (MultiresHubert or HubertBaseline) of this configuration with random weights, and its family."""
    torch.manual_seed(seed)
    if model_cfg.get("_name") == "hubert":
        # here, not at the top: transformers (seconds to import) is needed for a HuBERT configuration only
        from upstream_mrhubert.hubert_baseline import HubertBaseline, transformers_config

        model = HubertBaseline(transformers_config(model_cfg), normalize_waveform=bool(task_cfg.get("normalize")))
        return model.eval(), "hubert"
    return MultiresHubert.from_config(dict(model_cfg), dict(task_cfg)).eval(), "mrhubert"
