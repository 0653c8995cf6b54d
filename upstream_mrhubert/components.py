"""Building blocks of MR-HuBERT's network, each with one concern.

They compute what fairseq's ``multires_hubert`` modules compute (``ConvFeatureExtractionModel``,
``TransformerEncoder``/``TransformerSentenceEncoderLayer``, ``ConvAdapter``, ``ConvDownsampler``, ``ConvUpsampler``)
with plain PyTorch operations: ``Conv1d`` for the CNN, a grouped ``Conv1d`` under weight norm for the positional
embedding, one fused query/key/value projection and ``scaled_dot_product_attention`` for attention. Sequences are
[batch, time, channels] between modules.

Precision: under ``torch.autocast`` the matrix products run in the low precision while the numerically sensitive
parts stay in float32 (fairseq's ``Fp32GroupNorm``/``Fp32LayerNorm`` choices): the CNN's norms, every LayerNorm,
the samplers' GroupNorm and the transformer's residual stream (low-precision updates are added to float32 sums).

Training: fairseq's dropouts (``dropout``, ``attention_dropout``, ``activation_dropout``) and ``encoder_layerdrop``
act in ``train()`` mode only. Parameter names are ours; :mod:`upstream_mrhubert.checkpoints.keys` maps fairseq's
state-dict keys to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from upstream_mrhubert import audio
from upstream_mrhubert.checkpoints.keys import fold_weight_norm
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.workarounds import low_precision_grouped_conv_is_sound

LAYER_NORM_EPS = 1e-5  # fairseq's LayerNorm/GroupNorm default
SAMPLER_RESIDUAL_SCALE = math.sqrt(0.4)  # fairseq's residual_scale=0.4, applied as its square root
BERT_INIT_STD = 0.02  # fairseq's init_bert_params for the transformer's linear layers


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """fairseq's activation functions by name (``gelu_fast`` and ``gelu_accurate`` are the tanh approximation)."""
    functions: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "gelu": F.gelu,
        "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
        "gelu_accurate": lambda x: F.gelu(x, approximate="tanh"),
        "relu": F.relu,
        "tanh": torch.tanh,
        "linear": lambda x: x,
    }
    if name not in functions:
        raise UsageError(f"unsupported activation function {name!r}")
    return functions[name]


# ----------------------------------------------------------------------------------------------------------------
# CNN feature extractor


class FeatureConvLayer(nn.Module):
    """One CNN layer: Conv1d (no padding), optional norm, GELU; channels first, [B, C_in, L] -> [B, C_out, T].

    The norm is fairseq's per-layer choice: ``"group"`` = GroupNorm(C, C), each channel normalised over the
    utterance's frames (first layer of ``extractor_mode=default``); ``"layer"`` = LayerNorm over the channels of
    each frame (``layer_norm`` mode); ``None``. Norms run in float32.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, *, norm: str | None, bias: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm_type = norm
        self.norm: nn.Module | None = None
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, eps=LAYER_NORM_EPS)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels, eps=LAYER_NORM_EPS)

    @property
    def kernel_size(self) -> int:
        return self.conv.kernel_size[0]

    @property
    def stride(self) -> int:
        return self.conv.stride[0]

    def output_length(self, length: int) -> int:
        return (length - self.kernel_size) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_type == "group" and self.norm is not None:
            x = self.norm(x.float())
        elif self.norm is not None:
            x = self.norm(x.float().transpose(1, 2)).transpose(1, 2)
        return F.gelu(x)


class FeatureExtractor(nn.Module):
    """fairseq's ``ConvFeatureExtractionModel``: waveform [B, L] -> frames [B, T, C] (channels last).

    ``mode="default"`` puts GroupNorm(C, C) in the first layer only, ``"layer_norm"`` LayerNorm in every layer.
    """

    def __init__(self, layers: Sequence[tuple[int, int, int]], *, mode: str = "default", bias: bool = False) -> None:
        super().__init__()
        if mode not in ("default", "layer_norm"):
            raise UsageError(f"extractor mode must be 'default' or 'layer_norm', got {mode!r}")
        blocks = []
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(layers):
            norm = "layer" if mode == "layer_norm" else ("group" if index == 0 else None)
            blocks.append(FeatureConvLayer(in_channels, channels, kernel, stride, norm=norm, bias=bias))
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)

    def layers(self) -> list[FeatureConvLayer]:
        """The convolution layers, typed (``nn.ModuleList`` items are plain modules to the type checker)."""
        return [layer for layer in self.conv_layers if isinstance(layer, FeatureConvLayer)]

    def output_length(self, length: int) -> int:
        for layer in self.layers():
            length = layer.output_length(length)
        return length

    @property
    def total_stride(self) -> int:
        return math.prod(layer.stride for layer in self.layers())

    @property
    def receptive_field(self) -> int:
        """Input samples that one output frame sees."""
        return audio.receptive_field((0, layer.kernel_size, layer.stride) for layer in self.layers())

    def check_length(self, length: int) -> None:
        """One clear error for waveforms too short to give a single frame."""
        if length < self.receptive_field:
            raise UsageError(
                f"waveforms of {length} samples are shorter than the CNN's receptive field "
                f"({self.receptive_field} samples): there is no frame to compute"
            )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        self.check_length(waveforms.size(-1))
        x = waveforms.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x.transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Transformer


class PositionalConv(nn.Module):
    """wav2vec 2.0's convolutional relative position embedding: grouped Conv1d (padding k//2) under weight norm
    over dim 2, drop the last frame for even k ("SamePad"), GELU. [B, T, C] -> the embedding [B, T, C]; the
    caller adds it to its input.

    The weight g * v / ||v|| is computed per call only while gradients flow to g or v (training); otherwise once,
    and again only after g or v change. The state dict holds that one folded ``weight`` (what fairseq's keys map
    to); loading a weight w sets g = ||w||, v = w, the same function.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        direction = torch.empty(channels, channels // groups, kernel_size)
        nn.init.normal_(direction, mean=0.0, std=math.sqrt(4.0 / (kernel_size * channels)))
        self.weight_v = nn.Parameter(direction)
        self.weight_g = nn.Parameter(direction.norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(channels))
        self._folded: tuple[tuple[int, ...], torch.Tensor] | None = None
        self.register_state_dict_post_hook(_fold_weight_in_state_dict)
        self.register_load_state_dict_pre_hook(_split_weight_in_state_dict)

    def weight(self) -> torch.Tensor:
        """The convolution weight [C, C / groups, k]."""
        if torch.is_grad_enabled() and (self.weight_g.requires_grad or self.weight_v.requires_grad):
            return fold_weight_norm(self.weight_g, self.weight_v)
        g, v = self.weight_g, self.weight_v
        version = (g._version, v._version, g.data_ptr(), v.data_ptr())
        if self._folded is None or self._folded[0] != version:
            self._folded = (version, fold_weight_norm(g.detach(), v.detach()))
        return self._folded[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type) and not low_precision_grouped_conv_is_sound(
            x.shape[-1], self.groups, self.kernel_size, device_type, torch.get_autocast_dtype(device_type)
        ):
            with torch.autocast(device_type, enabled=False):
                return self._embed(x.float())
        return self._embed(x)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        embedding = F.conv1d(
            x.transpose(1, 2), self.weight(), self.bias, padding=self.kernel_size // 2, groups=self.groups
        )
        if self.kernel_size % 2 == 0:
            embedding = embedding[:, :, :-1]
        return F.gelu(embedding).transpose(1, 2)


def _fold_weight_in_state_dict(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    del module, local_metadata
    g, v = state_dict.pop(prefix + "weight_g"), state_dict.pop(prefix + "weight_v")
    state_dict[prefix + "weight"] = fold_weight_norm(g.detach(), v.detach())


def _split_weight_in_state_dict(module: nn.Module, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
    del module, args
    if prefix + "weight" in state_dict and isinstance(state_dict, dict):
        weight = state_dict.pop(prefix + "weight")
        state_dict[prefix + "weight_g"] = weight.norm(dim=(0, 1), keepdim=True)
        state_dict[prefix + "weight_v"] = weight


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and torch's fused attention kernel.

    ``key_mask`` is an additive [B, 1, 1, T] mask (0 for real keys, -inf for padding) or None (all keys).
    ``dropout`` drops attention probabilities in training (fairseq's ``attention_dropout``).
    """

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise UsageError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, frames, channels = x.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv_proj(x).view(batch, frames, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(attended.transpose(1, 2).reshape(batch, frames, channels))


class TransformerLayer(nn.Module):
    """wav2vec 2.0 / HuBERT transformer layer: self-attention and a feed-forward network, each with a residual.

    Post-LN (base models): x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x))).
    Pre-LN (``layer_norm_first``, large models): x = x + drop(attn(LN(x))); x = x + drop(ffn(LN(x))).
    ffn(x) = fc2(drop_act(act(fc1(x)))). The dropouts are fairseq's ``dropout`` and ``activation_dropout``.
    """

    def __init__(
        self,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        *,
        layer_norm_first: bool,
        activation_fn: str = "gelu",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.self_attn = SelfAttention(embed_dim, num_heads, dropout=attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.activation = activation(activation_fn)
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)
        for linear in (self.self_attn.qkv_proj, self.self_attn.out_proj, self.fc1, self.fc2):
            nn.init.normal_(linear.weight, mean=0.0, std=BERT_INIT_STD)
            nn.init.zeros_(linear.bias)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_dropout(self.activation(self.fc1(x))))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.layer_norm_first:
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), key_mask))
            return x + self.dropout(self._feed_forward(self.final_layer_norm(x)))
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, key_mask)))
        return self.final_layer_norm(x + self.dropout(self._feed_forward(x)))


class TransformerBlock(nn.Module):
    """fairseq's ``TransformerEncoder`` as MR-HuBERT uses it for every block (encoders, middle, decoders).

    Zeroes padded frames, adds the positional convolution (first block only), applies the block LayerNorm before
    the layers (post-LN) or after them (pre-LN), pads the sequence to a multiple of ``required_seq_len_multiple``
    (the padding is masked out of attention and removed afterwards), applies ``dropout`` and runs the layers,
    each skipped with probability ``layerdrop`` in training (fairseq's ``encoder_layerdrop``).

    ``forward(x [B, T, D], padding_mask [B, T] or None)`` returns the input of every layer and the block output,
    all [B, T, D] float32 for the T input frames.
    """

    def __init__(
        self,
        num_layers: int,
        embed_dim: int,
        ffn_dim: int,
        num_heads: int,
        *,
        layer_norm_first: bool,
        activation_fn: str = "gelu",
        pos_conv: PositionalConv | None = None,
        required_seq_len_multiple: int = 1,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        layerdrop: float = 0.0,
    ) -> None:
        super().__init__()
        self.pos_conv = pos_conv
        self.layers = nn.ModuleList(
            TransformerLayer(
                embed_dim,
                ffn_dim,
                num_heads,
                layer_norm_first=layer_norm_first,
                activation_fn=activation_fn,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation_dropout=activation_dropout,
            )
            for _ in range(num_layers)
        )
        self.layer_norm_first = layer_norm_first
        self.layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.required_seq_len_multiple = max(1, required_seq_len_multiple)
        self.dropout = nn.Dropout(dropout)
        self.layerdrop = layerdrop

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = x.float()
        if padding_mask is not None and not bool(padding_mask.any()):
            padding_mask = None  # nothing padded: same result, cheaper attention
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        if self.pos_conv is not None:
            x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)

        frames = x.size(1)
        extra = -frames % self.required_seq_len_multiple
        if extra and self.layers:
            x = F.pad(x, (0, 0, 0, extra))
            if padding_mask is None:
                padding_mask = torch.zeros(x.size(0), frames, dtype=torch.bool, device=x.device)
            padding_mask = F.pad(padding_mask, (0, extra), value=True)
        key_mask = None
        if padding_mask is not None:  # additive mask: -inf on padded keys (faster than a boolean one on CPU)
            key_mask = torch.zeros(padding_mask.shape, dtype=x.dtype, device=x.device)
            key_mask = key_mask.masked_fill_(padding_mask, float("-inf"))[:, None, None, :]
        x = self.dropout(x)

        layer_inputs = []
        for layer in self.layers:
            layer_inputs.append(x[:, :frames])
            if self.training and self.layerdrop > 0 and float(torch.rand(())) <= self.layerdrop:
                continue  # fairseq runs a layer when its draw is above layerdrop
            x = layer(x, key_mask)
        x = x[:, :frames]
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return layer_inputs, x


# ----------------------------------------------------------------------------------------------------------------
# Resolution samplers


class SamplerConv(nn.Module):
    """Conv1d (``transposed=False``) or ConvTranspose1d, no bias, then GroupNorm(1, C) in float32 (statistics over
    channels and time of each utterance, padding included, as fairseq), then GELU. [B, T, C] -> [B, T', C].

    Strided conv: padding (k-1)//2. Transposed conv: no padding, output_padding stride-1 (fairseq's choices).
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, *, transposed: bool) -> None:
        super().__init__()
        self.transposed = transposed
        self.stride = stride
        self.kernel_size = kernel_size
        # Both layouts are [C, C, k] for square convolutions.
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.norm = nn.GroupNorm(1, channels, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_first = x.transpose(1, 2)
        if self.transposed:
            y = F.conv_transpose1d(channels_first, self.weight, stride=self.stride, output_padding=self.stride - 1)
        else:
            y = F.conv1d(channels_first, self.weight, stride=self.stride, padding=(self.kernel_size - 1) // 2)
        return F.gelu(self.norm(y.float())).transpose(1, 2)


def _scaled_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a + b) * sqrt(0.4) over the frames both have (fairseq crops to the shorter)."""
    frames = min(a.size(1), b.size(1))
    return (a[:, :frames] + b[:, :frames]) * SAMPLER_RESIDUAL_SCALE


def resample_mask(mask: torch.Tensor | None, up: int, down: int, frames: int) -> torch.Tensor | None:
    """A frame mask (padding or masked positions) through a sampler: repeat each frame ``up`` times, keep every
    ``down``-th, crop to ``frames``."""
    if mask is None:
        return None
    if up > 1:
        mask = mask.repeat_interleave(up, dim=1)
    return mask[:, ::down][:, :frames]


class Sampler(nn.Module):
    """Takes frames from one rate to another; ``forward(x [B, T, D], padding_mask [B, T] or None)`` returns the
    resampled frames and the padding mask at the new rate. ``up``/``down`` give the rate change."""

    up: int = 1
    down: int = 1

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.resample(x)
        return out, resample_mask(padding_mask, self.up, self.down, out.size(1))


class ConvAdapter(Sampler):
    """fairseq's ``ConvAdapter``: changes the frame rate by up/down (e.g. 1/2 going down, 2/1 coming up).

    u = (GELU(GN(convT_up(x))) + repeat(x, up)) * s;  d = (GELU(GN(conv_down(u))) + u[::down]) * s;
    out = (d + repeat(x, up)[::down]) * s  with s = sqrt(0.4), each sum cropped to the shorter operand.
    """

    def __init__(self, channels: int, kernel_size: int, up: int, down: int) -> None:
        super().__init__()
        self.up, self.down = up, down
        self.upsample_conv = SamplerConv(channels, kernel_size, up, transposed=True)
        self.downsample_conv = SamplerConv(channels, kernel_size, down, transposed=False)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        repeated = x.repeat_interleave(self.up, dim=1) if self.up > 1 else x
        upsampled = _scaled_sum(self.upsample_conv(x), repeated)
        downsampled = _scaled_sum(self.downsample_conv(upsampled), upsampled[:, :: self.down])
        return _scaled_sum(downsampled, repeated[:, :: self.down])


class ConvDownsampler(Sampler):
    """fairseq's plain ``ConvDownsampler`` (B3-a): out = (GELU(GN(conv_down(x))) + x[::down]) * sqrt(0.4)."""

    def __init__(self, channels: int, kernel_size: int, down: int) -> None:
        super().__init__()
        self.down = down
        self.downsample_conv = SamplerConv(channels, kernel_size, down, transposed=False)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        return _scaled_sum(self.downsample_conv(x), x[:, :: self.down])


class ConvUpsampler(Sampler):
    """fairseq's plain ``ConvUpsampler``: out = (GELU(GN(convT_up(x))) + repeat(x, up)) * sqrt(0.4)."""

    def __init__(self, channels: int, kernel_size: int, up: int) -> None:
        super().__init__()
        self.up = up
        self.upsample_conv = SamplerConv(channels, kernel_size, up, transposed=True)

    def resample(self, x: torch.Tensor) -> torch.Tensor:
        repeated = x.repeat_interleave(self.up, dim=1) if self.up > 1 else x
        return _scaled_sum(self.upsample_conv(x), repeated)


def make_sampler(channels: int, kernel_size: int, up: int, down: int, *, plain: bool, direction: str) -> Sampler:
    """The module taking frames from one rate to the next (``direction`` "down" in the encoder half, "up" in the
    decoder half): a ConvAdapter, or with ``plain`` (fairseq's ``use_plain_updownsample``) a ConvDownsampler going
    down (needs up == 1) or a ConvUpsampler going up (needs down == 1)."""
    if direction not in ("down", "up"):
        raise UsageError(f"direction must be 'down' or 'up', got {direction!r}")
    if not plain:
        return ConvAdapter(channels, kernel_size, up, down)
    if direction == "down" and up == 1:
        return ConvDownsampler(channels, kernel_size, down)
    if direction == "up" and down == 1:
        return ConvUpsampler(channels, kernel_size, up)
    raise UsageError(f"a plain {direction}sampler cannot apply the ratio ({up}, {down})")
