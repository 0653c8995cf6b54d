"""MR-HuBERT for inference (fairseq's ``multires_hubert``), returning every hidden state by name.

The network, in fairseq's order (``MultiresHubertModel.forward`` with ``features_only=True``, ``mask=False``):

1. optional waveform normalisation (task ``normalize``: each utterance layer-normed over its own samples);
2. CNN feature extractor, LayerNorm over its channels, ``post_extract_proj`` to the model width;
3. for each level i: ``encoders[i]`` (only ``encoders[0]`` has the positional conv), its output kept as the
   level's residual, then ``downsample_modules[i]``;
4. the middle encoder (with the positional conv only when there is no encoder) and its block residual
   ``x = x + middle(x)``;
5. for each decoder level i: ``x = upsample_modules[levels-1-i](x)`` (fairseq's order; s3prl indexes ``[i]``, which
   swaps the two upsamplers of 3-resolution models), ``x = decoders[i](x)``, then ``x = x + residual`` over the
   shorter length (the residual of the level being returned to). ``pre_residual=True`` instead computes
   ``decoders[i](up(x) + residual)``: the variant arXiv 2410.23955 Appendix C says the MR-HuBERT paper describes.

States are named by :mod:`upstream_mrhubert.layer_names`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from upstream_mrhubert import fairseq_keys
from upstream_mrhubert.checkpoint import CheckpointError, LoadedCheckpoint
from upstream_mrhubert.components import (
    LAYER_NORM_EPS,
    FeatureExtractor,
    PositionalConv,
    TransformerBlock,
    make_sampler,
)
from upstream_mrhubert.config import MultiresHubertConfig
from upstream_mrhubert.layer_names import BlockNames, LayerState, name_blocks

WAVEFORM_NORM_EPS = 1e-5  # F.layer_norm's default, which fairseq's task uses on each waveform


def normalize_waveforms(waveforms: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero mean, unit variance per utterance over its own (unpadded) samples; padding stays 0.

    fairseq normalises each file before batching (``F.layer_norm(wav, wav.shape)``), so padding must not count.
    """
    if padding_mask is None:
        return F.layer_norm(waveforms, waveforms.shape[-1:], eps=WAVEFORM_NORM_EPS)
    valid = (~padding_mask).to(waveforms.dtype)
    count = valid.sum(dim=1, keepdim=True).clamp_min(1.0)
    mean = (waveforms * valid).sum(dim=1, keepdim=True) / count
    centred = (waveforms - mean) * valid
    variance = centred.pow(2).sum(dim=1, keepdim=True) / count
    return centred * torch.rsqrt(variance + WAVEFORM_NORM_EPS)


def frame_padding_mask(sample_mask: torch.Tensor, frames: int) -> torch.Tensor:
    """fairseq's ``forward_padding_mask``: drop the last L % T samples, cut the rest into T equal chunks and mark a
    frame as padding when its whole chunk is padding."""
    batch, length = sample_mask.shape
    usable = length - length % frames
    return sample_mask[:, :usable].reshape(batch, frames, -1).all(dim=-1)


def _align_sum(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    residual: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fairseq's ``align_size_sum``: crop both to the shorter length and add; the mask follows ``x``."""
    frames = min(x.size(1), residual.size(1))
    return x[:, :frames] + residual[:, :frames], (mask[:, :frames] if mask is not None else None)


class MultiresHubert(nn.Module):
    """MR-HuBERT inference network. ``forward`` returns every named state (see :mod:`layer_names`)."""

    def __init__(self, config: MultiresHubertConfig, *, pre_residual: bool = False) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.pre_residual = pre_residual
        dim = config.embed_dim
        levels = config.num_levels

        self.feature_extractor = FeatureExtractor(
            config.conv_feature_layers, mode=config.extractor_mode, bias=config.conv_bias
        )
        self.layer_norm = nn.LayerNorm(config.conv_channels, eps=LAYER_NORM_EPS)
        self.post_extract_proj = nn.Linear(config.conv_channels, dim) if config.conv_channels != dim else None

        def block(num_layers: int, with_pos_conv: bool) -> TransformerBlock:
            pos_conv = PositionalConv(dim, config.conv_pos, config.conv_pos_groups) if with_pos_conv else None
            return TransformerBlock(
                num_layers,
                dim,
                config.ffn_dim,
                config.num_heads,
                layer_norm_first=config.layer_norm_first,
                activation_fn=config.activation_fn,
                pos_conv=pos_conv,
                required_seq_len_multiple=config.required_seq_len_multiple,
            )

        def sampler(up: int, down: int, direction: str) -> nn.Module:
            return make_sampler(
                dim, config.sampler_kernel_size, up, down, plain=config.use_plain_updownsample, direction=direction
            )

        self.encoders = nn.ModuleList(block(n, with_pos_conv=i == 0) for i, n in enumerate(config.encoder_layer_counts))
        self.downsample_modules = nn.ModuleList(sampler(up, down, "down") for up, down in config.label_rate_ratios)
        self.middle_encoder = block(config.middle_layer_count, with_pos_conv=levels == 0)
        # upsample_modules[j] inverts downsample_modules[j] (fairseq builds them side by side).
        self.upsample_modules = nn.ModuleList(sampler(down, up, "up") for up, down in config.label_rate_ratios)
        self.decoders = nn.ModuleList(block(n, with_pos_conv=False) for n in config.decoder_layer_counts)
        self._block_names = name_blocks(config.layer_counts, pre_residual=pre_residual)

    # ------------------------------------------------------------------------------------------------------------
    # Construction

    @classmethod
    def from_config(
        cls, model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any] | None = None, *, pre_residual: bool = False
    ) -> MultiresHubert:
        """A randomly initialised model of the configuration in fairseq's cfg sections."""
        return cls(MultiresHubertConfig.from_fairseq(model_cfg, task_cfg), pre_residual=pre_residual)

    @classmethod
    def from_checkpoint(cls, loaded: LoadedCheckpoint, *, pre_residual: bool = False) -> MultiresHubert:
        """The model of a loaded fairseq (or s3prl-converted) MR-HuBERT checkpoint, in eval mode."""
        config = MultiresHubertConfig.from_fairseq(loaded.model_cfg, loaded.task_cfg)
        return cls.from_fairseq_state_dict(
            config, loaded.state_dict, pre_residual=pre_residual, source=loaded.path or "the checkpoint"
        )

    @classmethod
    def from_fairseq_state_dict(
        cls,
        config: MultiresHubertConfig,
        state_dict: Mapping[str, torch.Tensor],
        *,
        pre_residual: bool = False,
        source: str = "the state dict",
    ) -> MultiresHubert:
        """Build from fairseq-named weights: every inference parameter must be present, nothing else but the
        pre-training heads (:data:`fairseq_keys.TRAINING_ONLY_PATTERNS`) may be. The samplers' kernel size is read
        from their weights (released yamls say 1, fairseq's dataclass default is 7)."""
        kernel = _sampler_kernel_size(state_dict, source)
        if kernel is not None and kernel != config.sampler_kernel_size:
            config = replace(config, sampler_kernel_size=kernel)
        model = cls(config, pre_residual=pre_residual)
        model.load_fairseq_state_dict(state_dict, source=source)
        return model.eval()

    def load_fairseq_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], *, source: str = "the state dict"
    ) -> None:
        """Load fairseq-named weights strictly (pre-training heads ignored), with one clear error on mismatch."""
        ours = fairseq_keys.from_fairseq(state_dict)
        expected = self.state_dict()
        missing = sorted(set(expected) - set(ours))
        unexpected = sorted(set(ours) - set(expected))
        wrong_shape = [
            f"{key}: {tuple(ours[key].shape)} in the file, {tuple(expected[key].shape)} expected"
            for key in sorted(set(ours) & set(expected))
            if ours[key].shape != expected[key].shape
        ]
        if missing or unexpected or wrong_shape:
            problems = []
            if missing:
                problems.append(f"missing {_preview(missing)}")
            if unexpected:
                problems.append(f"unexpected {_preview(unexpected)}")
            if wrong_shape:
                problems.append(f"wrong shape {_preview(wrong_shape)}")
            raise CheckpointError(
                f"{source} does not match its MR-HuBERT configuration ({'; '.join(problems)}); is it an MR-HuBERT "
                "checkpoint with its own cfg?"
            )
        self.load_state_dict(ours, strict=True)

    def fairseq_state_dict(self) -> dict[str, torch.Tensor]:
        """The inference weights under fairseq's key names (pre-training heads not included)."""
        return fairseq_keys.to_fairseq(self.state_dict(), extractor_mode=self.config.extractor_mode)

    # ------------------------------------------------------------------------------------------------------------
    # Names

    def layer_names(self, include_block_outputs: bool = False) -> list[str]:
        """Names of the states ``forward`` returns, in order."""
        return [name for block in self._block_names for name in block.all(include_block_outputs)]

    @property
    def native_strides(self) -> tuple[int, ...]:
        """Samples per frame at each resolution (320, 640, ...)."""
        return self.config.resolution_strides

    # ------------------------------------------------------------------------------------------------------------
    # Forward

    def forward(
        self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None, *, include_block_outputs: bool = False
    ) -> list[LayerState]:
        """All named states for 16 kHz ``waveforms`` [B, L] (``padding_mask`` [B, L], True = padding).

        Every state is at its own rate (``LayerState.stride``) with the padding mask at that rate (None when no
        mask was given).
        """
        if waveforms.dim() != 2:
            raise ValueError(f"expected waveforms of shape [batch, samples], got {tuple(waveforms.shape)}")
        if padding_mask is not None and padding_mask.shape != waveforms.shape:
            raise ValueError(f"padding_mask has shape {tuple(padding_mask.shape)}, waveforms {tuple(waveforms.shape)}")
        if self.config.normalize:
            waveforms = normalize_waveforms(waveforms, padding_mask)

        features = self.layer_norm(self.feature_extractor(waveforms))
        mask = frame_padding_mask(padding_mask, features.size(1)) if padding_mask is not None else None
        x = self.post_extract_proj(features) if self.post_extract_proj is not None else features

        levels = self.config.num_levels
        strides = self.config.resolution_strides
        names = iter(self._block_names)
        states: list[LayerState] = []

        def record(
            block_names: BlockNames,
            layer_inputs: list[torch.Tensor],
            output: torch.Tensor,
            block_mask: torch.Tensor | None,
            stride: int,
        ) -> None:
            for name, state in zip(block_names.layer_inputs, layer_inputs, strict=True):
                states.append(LayerState(name, state, block_mask, stride))
            states.append(LayerState(block_names.output, output, block_mask, stride))

        residuals: list[tuple[torch.Tensor, int]] = []
        for level, encoder in enumerate(self.encoders):
            layer_inputs, x = encoder(x, mask)
            record(next(names), layer_inputs, x, mask, strides[level])
            residuals.append((x, strides[level]))
            x, mask = self.downsample_modules[level](x, mask)

        middle_names = next(names)
        if mask is not None:
            # fairseq's block zeroes padded frames of its input in place, so the block residual sums the zeroed input.
            x = x.masked_fill(mask.unsqueeze(-1), 0.0)
        layer_inputs, middle_out = self.middle_encoder(x, mask)
        record(middle_names, layer_inputs, middle_out, mask, strides[levels])
        x = x + middle_out
        if include_block_outputs and middle_names.residual_sum is not None:
            states.append(LayerState(middle_names.residual_sum, x, mask, strides[levels]))

        for index, decoder in enumerate(self.decoders):
            level = levels - 1 - index
            residual, stride = residuals[level]
            x, mask = self.upsample_modules[level](x, mask)
            if self.pre_residual:
                x, mask = _align_sum(x, mask, residual)
            decoder_names = next(names)
            layer_inputs, decoder_out = decoder(x, mask)
            record(decoder_names, layer_inputs, decoder_out, mask, stride)
            x = decoder_out
            if not self.pre_residual:
                x, mask = _align_sum(x, mask, residual)
                if include_block_outputs:
                    states.append(LayerState(decoder_names.residual_sum or "", x, mask, stride))
        return states


def _sampler_kernel_size(state_dict: Mapping[str, torch.Tensor], source: str) -> int | None:
    """The samplers' conv kernel size from their weights ([C, C, k]); None without samplers."""
    sizes = {
        int(value.shape[-1])
        for key, value in state_dict.items()
        if (key.startswith(("downsample_modules.", "upsample_modules.")))
        and key.endswith("_conv.0.weight")
        and value.dim() == 3
    }
    if len(sizes) > 1:
        raise CheckpointError(
            f"{source}: the sampling modules' convolutions have different kernel sizes {sorted(sizes)}"
        )
    return sizes.pop() if sizes else None


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
