"""The HuBERT baseline: a fairseq ``hubert`` checkpoint run through transformers' ``HubertModel``.

It exposes the same contract as :class:`upstream_mrhubert.model.MultiresHubert` (``forward`` returning a list of
``LayerState``, ``layer_names``), with states T0..T<L> at 20 ms: T0 is the first layer's input (pos conv added,
then LayerNorm for post-LN models), Ti the i-th layer's output and the last one the encoder output (after the
final LayerNorm for pre-LN models), the states s3prl's own HuBERT upstream exposes.

Two fairseq behaviours are kept that transformers does differently:
- which frames count as padding: fairseq marks a frame as padding when all the samples of its chunk
  (``L // T`` samples) are padding; transformers derives it from the CNN's output length. We translate
  fairseq's count of valid frames into a sample-level ``attention_mask`` that yields exactly that count.
- waveform normalisation (task option ``normalize``) over each waveform's own samples, before padding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import HubertConfig, HubertModel

from upstream_mrhubert.checkpoints.io import CheckpointError, LoadedCheckpoint
from upstream_mrhubert.config import (
    DEFAULT_CONV_FEATURE_LAYERS,
    check_size_bounds,
    parse_conv_feature_layers,
    shape_mismatches,
)
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.layer_names import LayerState

# fairseq's defaults for the ``hubert`` model fields a checkpoint might omit.
_FAIRSEQ_HUBERT_DEFAULTS: dict[str, Any] = {
    "extractor_mode": "default",
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "layer_type": "transformer",
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "dropout_input": 0.0,
    "layer_norm_first": False,
    "conv_feature_layers": DEFAULT_CONV_FEATURE_LAYERS,
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "pos_conv_depth": 1,
}

# fairseq activation name -> transformers ACT2FN name (same function).
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new", "tanh": "tanh", "linear": "linear"}

# Parameters only pre-training uses (masking, prediction heads).
_PRETRAINING_ONLY_PREFIXES = ("mask_emb", "final_proj.", "label_embs_concat", "target_glu.")


def is_hubert_checkpoint(loaded: LoadedCheckpoint) -> bool:
    """True for fairseq's ``hubert`` model (by its registered name, else by its parameter names)."""
    if loaded.model_name:
        return loaded.model_name == "hubert"
    return any(key.startswith("encoder.layers.") for key in loaded.state_dict)


# Keywords of transformers' PretrainedConfig that HubertConfig's own signature does not list.
_PRETRAINED_CONFIG_OPTIONS: dict[str, Any] = {"attn_implementation": "sdpa"}


def transformers_config(model_cfg: Mapping[str, Any]) -> HubertConfig:
    """transformers' ``HubertConfig`` equivalent to a fairseq ``hubert`` model configuration."""
    cfg = {**_FAIRSEQ_HUBERT_DEFAULTS, **{k: v for k, v in model_cfg.items() if v is not None}}
    if cfg["layer_type"] != "transformer":
        raise CheckpointError(f"HuBERT layer_type {cfg['layer_type']!r} is not supported (only 'transformer')")
    if int(cfg["pos_conv_depth"]) != 1:
        raise CheckpointError(f"HuBERT pos_conv_depth {cfg['pos_conv_depth']} is not supported (only 1)")
    if cfg["activation_fn"] not in _ACTIVATIONS:
        raise CheckpointError(f"HuBERT activation_fn {cfg['activation_fn']!r} is not supported")
    if cfg["extractor_mode"] not in ("default", "layer_norm"):
        raise CheckpointError(f"HuBERT extractor_mode {cfg['extractor_mode']!r} is not supported")
    conv_layers = parse_conv_feature_layers(cfg["conv_feature_layers"])
    check_size_bounds(cfg)  # before transformers builds anything from the sizes
    return HubertConfig(
        hidden_size=int(cfg["encoder_embed_dim"]),
        num_hidden_layers=int(cfg["encoder_layers"]),
        num_attention_heads=int(cfg["encoder_attention_heads"]),
        intermediate_size=int(cfg["encoder_ffn_embed_dim"]),
        hidden_act=_ACTIVATIONS[cfg["activation_fn"]],
        hidden_dropout=float(cfg["dropout"]),
        attention_dropout=float(cfg["attention_dropout"]),
        activation_dropout=float(cfg["activation_dropout"]),
        feat_proj_dropout=float(cfg["dropout_input"]),
        feat_proj_layer_norm=True,  # fairseq always layer-norms the CNN features
        layerdrop=0.0,  # every forward must give every state (s3prl's weighted sum needs a fixed count)
        layer_norm_eps=1e-5,
        feat_extract_norm="layer" if cfg["extractor_mode"] == "layer_norm" else "group",
        feat_extract_activation="gelu",
        conv_dim=[dim for dim, _, _ in conv_layers],
        conv_kernel=[kernel for _, kernel, _ in conv_layers],
        conv_stride=[stride for _, _, stride in conv_layers],
        conv_bias=bool(cfg["conv_bias"]),
        num_conv_pos_embeddings=int(cfg["conv_pos"]),
        num_conv_pos_embedding_groups=int(cfg["conv_pos_groups"]),
        do_stable_layer_norm=bool(cfg["layer_norm_first"]),
        apply_spec_augment=False,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
        **_PRETRAINED_CONFIG_OPTIONS,
    )


def _fairseq_to_transformers_key(key: str, *, layer_norm_extractor: bool, pos_conv_names: Mapping[str, str]) -> str:
    """Rename one fairseq ``hubert`` parameter to its ``HubertModel`` name."""
    if key.startswith("feature_extractor.conv_layers."):
        _, _, index, *rest = key.split(".")
        position = ".".join(rest)
        prefix = f"feature_extractor.conv_layers.{index}"
        if position.startswith("0."):
            return f"{prefix}.conv.{position[2:]}"
        if layer_norm_extractor and position.startswith("2.1."):
            return f"{prefix}.layer_norm.{position[4:]}"
        if not layer_norm_extractor and position.startswith("2."):
            return f"{prefix}.layer_norm.{position[2:]}"  # GroupNorm of the first layer
    elif key.startswith("layer_norm."):
        return "feature_projection." + key
    elif key.startswith("post_extract_proj."):
        return "feature_projection.projection." + key[len("post_extract_proj.") :]
    elif key.startswith("encoder.pos_conv.0."):
        return pos_conv_names[key[len("encoder.pos_conv.0.") :]]
    elif key.startswith("encoder.layer_norm."):
        return key
    elif key.startswith("encoder.layers."):
        _, _, index, *rest = key.split(".")
        name = ".".join(rest)
        prefix = f"encoder.layers.{index}"
        for fairseq_name, ours in (
            ("self_attn_layer_norm.", "layer_norm."),
            ("self_attn.", "attention."),
            ("fc1.", "feed_forward.intermediate_dense."),
            ("fc2.", "feed_forward.output_dense."),
            ("final_layer_norm.", "final_layer_norm."),
        ):
            if name.startswith(fairseq_name):
                return f"{prefix}.{ours}{name[len(fairseq_name) :]}"
    raise CheckpointError(f"unexpected parameter {key!r} in a HuBERT checkpoint")


def _pos_conv_names(model: HubertModel) -> dict[str, str]:
    """Where the weight-normed pos conv keeps g and v: torch's parametrizations or the legacy hook."""
    names = set(model.state_dict())
    prefix = "encoder.pos_conv_embed.conv."
    if prefix + "parametrizations.weight.original0" in names:
        g, v = prefix + "parametrizations.weight.original0", prefix + "parametrizations.weight.original1"
    else:
        g, v = prefix + "weight_g", prefix + "weight_v"
    return {"weight_g": g, "weight_v": v, "bias": prefix + "bias"}


def transformers_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: HubertModel, *, layer_norm_extractor: bool
) -> dict[str, torch.Tensor]:
    """A fairseq ``hubert`` state dict renamed for ``model`` (pre-training-only parameters dropped)."""
    pos_conv_names = _pos_conv_names(model)
    mapped = {
        _fairseq_to_transformers_key(
            key, layer_norm_extractor=layer_norm_extractor, pos_conv_names=pos_conv_names
        ): value
        for key, value in state_dict.items()
        if not key.startswith(_PRETRAINING_ONLY_PREFIXES)
    }
    if "feature_projection.projection.weight" not in mapped:
        # fairseq skips post_extract_proj when the CNN width equals the model width: an identity projection.
        width = model.config.hidden_size
        mapped["feature_projection.projection.weight"] = torch.eye(width)
        mapped["feature_projection.projection.bias"] = torch.zeros(width)
    return mapped


def _check_weight_shapes(config: HubertConfig, loaded: LoadedCheckpoint, *, layer_norm_extractor: bool) -> None:
    """Every weight's shape against the one ``config`` gives it, before anything is allocated: the reference
    network is built on PyTorch's meta device (shapes, no data), so a small file whose cfg asks for a huge model is
    refused for free."""
    with torch.device("meta"):
        reference = HubertModel(config)
    expected = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    mapped = transformers_state_dict(loaded.state_dict, reference, layer_norm_extractor=layer_norm_extractor)
    shown = shape_mismatches(((key, key, value) for key, value in mapped.items()), expected)
    if shown:
        raise CheckpointError(
            f"{loaded.path} does not match its HuBERT configuration (wrong shape {shown}; names as transformers "
            "spells them); the cfg and the weights disagree, so nothing was built"
        )


def _min_input_length(frames: torch.Tensor, conv_layers: list[tuple[int, int, int]]) -> torch.Tensor:
    """The shortest waveform length for which the CNN gives ``frames`` frames."""
    length = frames
    for _, kernel, stride in reversed(conv_layers):
        length = (length - 1) * stride + kernel
    return length


class HubertBaseline(nn.Module):
    """HuBERT exposing T0..T<L> (one state per layer boundary) with the model's forward/layer_names contract."""

    def __init__(self, config: HubertConfig, *, normalize_waveform: bool = False) -> None:
        super().__init__()
        self.hubert = HubertModel(config)
        self.normalize_waveform = normalize_waveform
        self.conv_layers = list(zip(config.conv_dim, config.conv_kernel, config.conv_stride, strict=False))
        self.stride = math.prod(config.conv_stride)
        self.pre_layer_norm = bool(config.do_stable_layer_norm)

    @classmethod
    def from_checkpoint(cls, loaded: LoadedCheckpoint) -> HubertBaseline:
        """Build from a loaded fairseq (or s3prl-converted) ``hubert`` checkpoint."""
        if not is_hubert_checkpoint(loaded):
            raise CheckpointError(
                f"{loaded.path} is a {loaded.model_name or 'non-HuBERT'} checkpoint, not fairseq's 'hubert'"
            )
        config = transformers_config(loaded.model_cfg)
        layer_norm_extractor = config.feat_extract_norm == "layer"
        _check_weight_shapes(config, loaded, layer_norm_extractor=layer_norm_extractor)
        model = cls(config, normalize_waveform=bool(loaded.task_cfg.get("normalize", False)))
        mapped = transformers_state_dict(loaded.state_dict, model.hubert, layer_norm_extractor=layer_norm_extractor)
        missing, unexpected = model.hubert.load_state_dict(mapped, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{loaded.path} does not fit a HuBERT of its own configuration: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        return model.eval()

    def layer_names(self, include_block_outputs: bool = False) -> list[str]:
        """T0..T<L>; HuBERT has no sampling blocks, so ``include_block_outputs`` adds nothing."""
        del include_block_outputs
        return [f"T{index}" for index in range(self.hubert.config.num_hidden_layers + 1)]

    def _normalized(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Layer-norm each waveform over its own samples, leaving the padding at zero (as fairseq's task does)."""
        normalized = torch.zeros_like(waveforms)
        for row, length in enumerate(lengths.tolist()):
            normalized[row, :length] = F.layer_norm(waveforms[row, :length], (length,))
        return normalized

    def num_frames(self, num_samples: int) -> int:
        """Frames the CNN gives for ``num_samples`` samples (0 when too short)."""
        frames = num_samples
        for _, kernel, stride in self.conv_layers:
            frames = (frames - kernel) // stride + 1 if frames >= kernel else 0
        return max(frames, 0)

    def frame_padding_mask(self, padding_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
        """fairseq's rule: a frame is padding when all samples of its ``L // T`` chunk are (trailing extra dropped)."""
        chunk = padding_mask.size(1) // num_frames
        return padding_mask[:, : chunk * num_frames].view(padding_mask.size(0), num_frames, chunk).all(-1)

    def forward(
        self,
        waveforms: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        include_block_outputs: bool = False,
    ) -> list[LayerState]:
        """States T0..T<L> in execution order for ``waveforms`` [B, L] (``padding_mask`` True = padding)."""
        del include_block_outputs
        batch, length = waveforms.shape
        num_frames = self.num_frames(length)
        if num_frames < 1:
            shortest = int(_min_input_length(torch.tensor(1), self.conv_layers))
            raise UsageError(f"waveforms of {length} samples are too short: HuBERT needs at least {shortest}")
        if self.normalize_waveform:
            lengths = (~padding_mask).sum(-1) if padding_mask is not None else torch.full((batch,), length)
            waveforms = self._normalized(waveforms, lengths)

        frame_mask = attention_mask = None
        if padding_mask is not None:
            frame_mask = self.frame_padding_mask(padding_mask, num_frames)
        if frame_mask is not None and bool(frame_mask.any()):
            # transformers turns a sample mask into frames through the CNN's output length: ask for exactly
            # fairseq's count of valid frames.
            valid_samples = _min_input_length((~frame_mask).sum(-1), self.conv_layers)
            positions = torch.arange(length, device=waveforms.device)
            attention_mask = (positions[None, :] < valid_samples[:, None]).long()

        output = self.hubert(waveforms, attention_mask=attention_mask, output_hidden_states=True, return_dict=True)
        states = list(output.hidden_states)
        if self.pre_layer_norm:
            states[-1] = output.last_hidden_state  # the encoder output is layer-normed after the last layer
        return [
            LayerState(name=name, features=features, padding_mask=frame_mask, stride=self.stride)
            for name, features in zip(self.layer_names(), states, strict=True)
        ]
