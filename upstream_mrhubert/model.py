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

States are named by :mod:`upstream_mrhubert.layer_names`. The pieces pre-training needs are public:
:meth:`MultiresHubert.conv_features` (step 1-2, before the LayerNorm), :meth:`MultiresHubert.project_features`
(the LayerNorm, projection and ``dropout_input``) and :meth:`MultiresHubert.encode` (steps 3-5, with masked
positions followed through the samplers, returning fairseq's per-resolution outputs). Dropouts
(:class:`Regularization`, read from the fairseq cfg) act in ``train()`` mode only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from upstream_mrhubert.checkpoints import keys as fairseq_keys
from upstream_mrhubert.checkpoints.io import CheckpointError, LoadedCheckpoint
from upstream_mrhubert.components import (
    LAYER_NORM_EPS,
    FeatureExtractor,
    PositionalConv,
    Sampler,
    TransformerBlock,
    make_sampler,
    resample_mask,
)
from upstream_mrhubert.config import FAIRSEQ_PRETRAINING_DEFAULTS, MultiresHubertConfig, shape_mismatches
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.layer_names import BlockNames, LayerState, name_blocks
from upstream_mrhubert.streamed_cnn import streamed_features

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


@dataclass(frozen=True)
class Regularization:
    """fairseq's dropout settings (``cfg["model"]`` fields of the same names; defaults: fairseq's dataclass).

    ``dropout``: after each block's input LayerNorm/positional conv, after attention and after the feed-forward
    network; ``attention_dropout``: on attention probabilities; ``activation_dropout``: after the feed-forward
    activation; ``encoder_layerdrop``: probability of skipping a transformer layer; ``dropout_input``: on the
    projected CNN features; ``dropout_features``: on the unmasked features (a pre-training target of wav2vec 2.0,
    unused by HuBERT's loss). All act only in ``train()`` mode.
    """

    dropout: float = FAIRSEQ_PRETRAINING_DEFAULTS["dropout"]
    attention_dropout: float = FAIRSEQ_PRETRAINING_DEFAULTS["attention_dropout"]
    activation_dropout: float = FAIRSEQ_PRETRAINING_DEFAULTS["activation_dropout"]
    encoder_layerdrop: float = FAIRSEQ_PRETRAINING_DEFAULTS["encoder_layerdrop"]
    dropout_input: float = FAIRSEQ_PRETRAINING_DEFAULTS["dropout_input"]
    dropout_features: float = FAIRSEQ_PRETRAINING_DEFAULTS["dropout_features"]

    @classmethod
    def from_fairseq(cls, model_cfg: Mapping[str, Any]) -> Regularization:
        """The values of fairseq's ``cfg["model"]``; missing fields keep the defaults."""
        values = {}
        for item in fields(cls):
            value = model_cfg.get(item.name)
            if value is None:
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise CheckpointError(f"model config {item.name}={value!r} is not a probability") from None
            if not 0.0 <= number <= 1.0:
                raise CheckpointError(f"model config {item.name}={value!r} is not a probability in [0, 1]")
            values[item.name] = number
        return cls(**values)


@dataclass
class EncoderOutput:
    """What :meth:`MultiresHubert.encode` returns.

    ``resolution_outputs``: fairseq's ``res_outputs`` (after its final reverse), highest resolution first, each
    [B, T_r, D]: the last decoder's output plus its residual, ..., the middle block's ``x + middle(x)`` last;
    fairseq predicts label set j from entry j. ``padding_masks`` / ``mask_indices``: [B, T_r] bool (or None) at
    the same resolutions. ``states``: the named hidden states, as :meth:`MultiresHubert.forward` returns them.
    """

    resolution_outputs: list[torch.Tensor]
    padding_masks: list[torch.Tensor | None]
    mask_indices: list[torch.Tensor | None]
    states: list[LayerState] = field(default_factory=list)


def _align_sum(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    residual: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """fairseq's ``align_size_sum``: crop both to the shorter length and add; the mask follows ``x``."""
    frames = min(x.size(1), residual.size(1))
    return x[:, :frames] + residual[:, :frames], (mask[:, :frames] if mask is not None else None)


class MultiresHubert(nn.Module):
    """MR-HuBERT network. ``forward`` returns every named state (see :mod:`layer_names`); ``eval()`` mode is exact
    inference, ``train()`` mode applies ``regularization``'s dropouts. ``cnn_segment_frames`` runs the CNN that
    many output frames at a time (:mod:`upstream_mrhubert.streamed_cnn`: same frames, less memory for long audio).
    """

    def __init__(
        self,
        config: MultiresHubertConfig,
        *,
        pre_residual: bool = False,
        regularization: Regularization | None = None,
        cnn_segment_frames: int | None = None,
    ) -> None:
        super().__init__()
        config.validate()
        self.cnn_segment_frames = cnn_segment_frames
        self.config = config
        self.pre_residual = pre_residual
        self.regularization = regularization = regularization or Regularization()
        dim = config.embed_dim
        levels = config.num_levels

        self.feature_extractor = FeatureExtractor(
            config.conv_feature_layers, mode=config.extractor_mode, bias=config.conv_bias
        )
        self.layer_norm = nn.LayerNorm(config.conv_channels, eps=LAYER_NORM_EPS)
        self.post_extract_proj = nn.Linear(config.conv_channels, dim) if config.conv_channels != dim else None
        self.dropout_input = nn.Dropout(regularization.dropout_input)
        self.dropout_features = nn.Dropout(regularization.dropout_features)

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
                dropout=regularization.dropout,
                attention_dropout=regularization.attention_dropout,
                activation_dropout=regularization.activation_dropout,
                layerdrop=regularization.encoder_layerdrop,
            )

        def sampler(up: int, down: int, direction: str) -> Sampler:
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
        """A randomly initialised model of the configuration (and dropouts) in fairseq's cfg sections."""
        return cls(
            MultiresHubertConfig.from_fairseq(model_cfg, task_cfg),
            pre_residual=pre_residual,
            regularization=Regularization.from_fairseq(model_cfg),
        )

    @classmethod
    def from_checkpoint(
        cls, loaded: LoadedCheckpoint, *, pre_residual: bool = False, cnn_segment_frames: int | None = None
    ) -> MultiresHubert:
        """The model of a loaded fairseq (or s3prl-converted) MR-HuBERT checkpoint, in eval mode."""
        config = MultiresHubertConfig.from_fairseq(loaded.model_cfg, loaded.task_cfg)
        model = cls.from_fairseq_state_dict(
            config,
            loaded.state_dict,
            pre_residual=pre_residual,
            regularization=Regularization.from_fairseq(loaded.model_cfg),
            source=loaded.path or "the checkpoint",
        )
        model.cnn_segment_frames = cnn_segment_frames
        return model

    @classmethod
    def from_fairseq_state_dict(
        cls,
        config: MultiresHubertConfig,
        state_dict: Mapping[str, torch.Tensor],
        *,
        pre_residual: bool = False,
        regularization: Regularization | None = None,
        source: str = "the state dict",
    ) -> MultiresHubert:
        """Build from fairseq-named weights: every inference parameter must be present, nothing else but the
        pre-training heads (:data:`fairseq_keys.TRAINING_ONLY_PATTERNS`) may be. The samplers' kernel size is read
        from their weights (released yamls say 1, fairseq's dataclass default is 7)."""
        kernel = _sampler_kernel_size(state_dict, source)
        if kernel is not None and kernel != config.sampler_kernel_size:
            config = replace(config, sampler_kernel_size=kernel)
        check_weight_shapes(config, state_dict, source=source)  # before anything is allocated
        model = cls(config, pre_residual=pre_residual, regularization=regularization)
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

    def conv_features(self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """fairseq's ``features``: the CNN output [B, T, C_conv] for ``waveforms`` [B, L] (``padding_mask`` [B, L],
        True = padding), after the task's waveform normalisation when ``config.normalize``, before the feature
        LayerNorm (the input of fairseq's ``features_pen`` and ``feature_grad_mult``)."""
        if waveforms.dim() != 2:
            raise UsageError(f"expected waveforms of shape [batch, samples], got {tuple(waveforms.shape)}")
        if padding_mask is not None and padding_mask.shape != waveforms.shape:
            raise UsageError(f"padding_mask has shape {tuple(padding_mask.shape)}, waveforms {tuple(waveforms.shape)}")
        if self.config.normalize:
            waveforms = normalize_waveforms(waveforms.float(), padding_mask)
        if self.cnn_segment_frames is not None:
            return streamed_features(self.feature_extractor, waveforms, self.cnn_segment_frames)
        return self.feature_extractor(waveforms)

    @staticmethod
    def frame_padding_mask(padding_mask: torch.Tensor | None, frames: int) -> torch.Tensor | None:
        """The sample padding mask [B, L] at the CNN's frame rate [B, frames] (None stays None)."""
        return frame_padding_mask(padding_mask, frames) if padding_mask is not None else None

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        """CNN features [B, T, C_conv] -> the transformer input [B, T, D]: LayerNorm (float32),
        ``post_extract_proj``, ``dropout_input`` (training only)."""
        x = self.layer_norm(features.float())
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.dropout_input(x)

    def encode(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        mask_indices: torch.Tensor | None = None,
        include_block_outputs: bool = False,
    ) -> EncoderOutput:
        """Run the encoders, samplers, middle block and decoders on (possibly masked) features ``x`` [B, T, D]
        with the frame ``padding_mask`` [B, T] and the masked positions ``mask_indices`` [B, T] (pre-training;
        followed through the samplers like the padding mask). See :class:`EncoderOutput`."""
        levels = self.config.num_levels
        strides = self.config.resolution_strides
        names = iter(self._block_names)
        states: list[LayerState] = []
        mask = padding_mask

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
            sampler = self.downsample_modules[level]
            assert isinstance(sampler, Sampler)
            x, mask = sampler(x, mask)
            mask_indices = resample_mask(mask_indices, sampler.up, sampler.down, x.size(1))

        middle_names = next(names)
        x = x.float()
        if mask is not None:
            # fairseq's block zeroes padded frames of its input in place, so the block residual sums the zeroed input.
            x = x.masked_fill(mask.unsqueeze(-1), 0.0)
        layer_inputs, middle_out = self.middle_encoder(x, mask)
        record(middle_names, layer_inputs, middle_out, mask, strides[levels])
        x = x + middle_out
        if include_block_outputs and middle_names.residual_sum is not None:
            states.append(LayerState(middle_names.residual_sum, x, mask, strides[levels]))
        outputs, masks, masked = [x], [mask], [mask_indices]

        for index, decoder in enumerate(self.decoders):
            level = levels - 1 - index
            residual, stride = residuals[level]
            sampler = self.upsample_modules[level]
            assert isinstance(sampler, Sampler)
            x, mask = sampler(x, mask)
            mask_indices = resample_mask(mask_indices, sampler.up, sampler.down, x.size(1))
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
            if mask_indices is not None:
                mask_indices = mask_indices[:, : x.size(1)]
            outputs.append(x)
            masks.append(mask)
            masked.append(mask_indices)
        return EncoderOutput(outputs[::-1], masks[::-1], masked[::-1], states)

    def forward(
        self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None, *, include_block_outputs: bool = False
    ) -> list[LayerState]:
        """All named states for 16 kHz ``waveforms`` [B, L] (``padding_mask`` [B, L], True = padding).

        Every state is at its own rate (``LayerState.stride``) with the padding mask at that rate (None when no
        mask was given). States are float32 whatever autocast context the call runs in.
        """
        features = self.conv_features(waveforms, padding_mask)
        mask = self.frame_padding_mask(padding_mask, features.size(1))
        encoded = self.encode(self.project_features(features), mask, include_block_outputs=include_block_outputs)
        return encoded.states


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


def check_weight_shapes(config: MultiresHubertConfig, state_dict: Mapping[str, Any], *, source: str) -> None:
    """Compare every inference tensor of a fairseq-named state dict with the shape ``config`` gives it.

    Runs before the model is built, so a small file whose cfg asks for a huge network (or whose one projection is
    mis-shaped) is refused without allocating anything: the reference network is built on PyTorch's meta device,
    which holds shapes and no data. Keys ``config`` does not know (or misses) are left to the strict load.

    Raises:
        CheckpointError: naming ``source`` and each mis-shaped key with its shape in the file and the one expected.
    """
    with torch.device("meta"):
        reference = MultiresHubert(config)
    expected = {
        key: tuple(value.shape)
        for key, value in fairseq_keys.to_fairseq(reference.state_dict(), extractor_mode=config.extractor_mode).items()
    }
    aliased = (
        (key, _SHAPE_ALIASES.sub(lambda m: _SHAPE_ALIAS_NAMES[m.group(1)], key), value)
        for key, value in state_dict.items()
    )
    shown = shape_mismatches(aliased, expected)
    if shown:
        raise CheckpointError(
            f"{source} does not match its MR-HuBERT configuration (wrong shape {shown}); the cfg and the weights "
            "disagree, so nothing was built: is it an MR-HuBERT checkpoint with its own cfg?"
        )


# The positional convolution's weight norm under its other key spellings (torch's parametrizations, or one folded
# weight, which has weight_v's shape).
_SHAPE_ALIAS_NAMES = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
_SHAPE_ALIAS_NAMES["weight"] = "weight_v"
_SHAPE_ALIASES = re.compile(r"(?<=\.pos_conv\.0\.)(parametrizations\.weight\.original[01]|weight)$")
