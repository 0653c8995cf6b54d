"""Building blocks of MR-HuBERT's inference network, each with one concern.

They compute what fairseq's ``multires_hubert`` modules compute (``ConvFeatureExtractionModel``,
``TransformerEncoder``/``TransformerSentenceEncoderLayer``, ``ConvAdapter``, ``ConvDownsampler``, ``ConvUpsampler``)
with our own layout choices for speed on CPU:

* sequences stay [batch, time, channels] everywhere (no time-major transposes);
* the CNN feature extractor runs its convolutions as matrix products on channels-last input and normalises and
  activates in place when no gradient is needed, which keeps its peak memory at about one activation map;
* attention uses one fused query/key/value projection and ``torch.nn.functional.scaled_dot_product_attention``;
* the positional convolution's weight norm is folded into a plain weight when the checkpoint is loaded.

Parameter names are ours; :mod:`upstream_mrhubert.fairseq_keys` translates fairseq's state-dict keys to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-5  # fairseq's LayerNorm/GroupNorm default
SAMPLER_RESIDUAL_SCALE = math.sqrt(0.4)  # fairseq's residual_scale=0.4, applied as its square root


def _in_place_allowed(x: torch.Tensor) -> bool:
    """In-place updates are safe when no gradient has to flow through ``x``."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """fairseq's activation functions by name (``gelu_fast`` and ``gelu_accurate`` are the tanh approximation)."""
    if name == "gelu":
        return gelu
    if name in ("gelu_fast", "gelu_accurate"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    if name == "linear":
        return lambda x: x
    raise ValueError(f"unsupported activation function {name!r}")


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, in place when no gradient is needed (saves one activation-sized buffer)."""
    if _in_place_allowed(x):
        return torch.ops.aten.gelu_(x)
    return F.gelu(x)


def normalize_over_(x: torch.Tensor, dims: Sequence[int], weight: torch.Tensor | None,
                    bias: torch.Tensor | None, eps: float = LAYER_NORM_EPS) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over ``dims`` (biased variance), then the per-channel affine on the last
    dimension; in place when no gradient is needed. Covers GroupNorm(C, C) and GroupNorm(1, C) on [B, T, C]."""
    var, mean = torch.var_mean(x, dim=tuple(dims), keepdim=True, correction=0)
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    if _in_place_allowed(x):
        x = x.sub_(mean).mul_(scale)
        return x.add_(bias) if bias is not None else x
    x = (x - mean) * scale
    return x + bias if bias is not None else x


# ----------------------------------------------------------------------------------------------------------------
# CNN feature extractor


class FeatureConvLayer(nn.Module):
    """One CNN layer: Conv1d (no padding), optional norm, GELU, on channels-last input [B, L, C_in] -> [B, T, C_out].

    The norm is fairseq's per-layer choice: ``"group"`` = GroupNorm(C, C), i.e. each channel normalised over time
    (first layer of ``extractor_mode=default``); ``"layer"`` = LayerNorm over channels per frame (``layer_norm``
    mode); ``None``. The weight keeps Conv1d's [C_out, C_in, k] layout.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, *,
                 norm: str | None, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm_type = norm
        self.norm = nn.LayerNorm(out_channels) if norm == "layer" else (
            nn.GroupNorm(out_channels, out_channels) if norm == "group" else None)

    def output_length(self, length: int) -> int:
        return (length - self.conv.kernel_size[0]) // self.conv.stride[0] + 1

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        """The strided convolution as matrix products over frames: no transposes, no large im2col copy.

        The k taps are split in groups of ``stride`` taps; the inputs of one group for consecutive output frames
        are equally spaced rows of the channels-last input, i.e. a strided view that BLAS reads directly.
        """
        batch, length, in_channels = x.shape
        kernel, stride = self.conv.kernel_size[0], self.conv.stride[0]
        frames = self.output_length(length)
        if frames <= 0:
            raise ValueError(f"input of {length} frames is shorter than the convolution kernel ({kernel})")
        x = x.contiguous()
        # [C_out, C_in, k] -> [k * C_in, C_out], rows ordered (tap, input channel) like the input window.
        weight = self.conv.weight.permute(2, 1, 0).reshape(kernel * in_channels, -1)
        out = x.new_empty(batch, frames, weight.size(1))
        if kernel * in_channels <= 64:  # e.g. the first layer (one input channel): one small im2col is cheapest
            windows = x.as_strided((batch, frames, kernel * in_channels),
                                   (length * in_channels, stride * in_channels, 1))
            torch.matmul(windows, weight, out=out)
        else:
            for b in range(batch):
                first = True
                for start in range(0, kernel, stride):
                    taps = min(stride, kernel - start)
                    rows = x[b].as_strided((frames, taps * in_channels), (stride * in_channels, 1),
                                           x[b].storage_offset() + start * in_channels)
                    part = weight[start * in_channels:(start + taps) * in_channels]
                    if first:
                        torch.mm(rows, part, out=out[b])
                        first = False
                    else:
                        out[b].addmm_(rows, part)
        if self.conv.bias is not None:
            out += self.conv.bias
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._convolve(x)
        if self.norm_type == "group":
            x = normalize_over_(x, (1,), self.norm.weight, self.norm.bias, self.norm.eps)
        elif self.norm_type == "layer":
            x = F.layer_norm(x, (x.size(-1),), self.norm.weight, self.norm.bias, self.norm.eps)
        return gelu(x)


class FeatureExtractor(nn.Module):
    """fairseq's ``ConvFeatureExtractionModel``: waveform [B, L] -> frames [B, T, C] (channels last).

    ``mode="default"`` puts GroupNorm(C, C) in the first layer only, ``"layer_norm"`` LayerNorm in every layer.
    """

    def __init__(self, layers: Sequence[tuple[int, int, int]], *, mode: str = "default", bias: bool = False) -> None:
        super().__init__()
        if mode not in ("default", "layer_norm"):
            raise ValueError(f"extractor mode must be 'default' or 'layer_norm', got {mode!r}")
        blocks = []
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(layers):
            norm = "layer" if mode == "layer_norm" else ("group" if index == 0 else None)
            blocks.append(FeatureConvLayer(in_channels, channels, kernel, stride, norm=norm, bias=bias))
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)

    def output_length(self, length: int) -> int:
        for layer in self.conv_layers:
            length = layer.output_length(length)
        return length

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = waveforms.unsqueeze(-1)  # [B, L, 1]
        for layer in self.conv_layers:
            x = layer(x)
        return x


# ----------------------------------------------------------------------------------------------------------------
# Transformer


class PositionalConv(nn.Module):
    """wav2vec 2.0's convolutional relative position embedding: grouped Conv1d (padding k//2), drop the last frame
    for even k ("SamePad"), GELU. Returns the embedding only; the caller adds it to its input.

    fairseq trains the weight with weight norm over dim 2; we hold the folded weight g * v / ||v||.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.weight, mean=0.0, std=math.sqrt(4.0 / (kernel_size * channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = F.conv1d(x.transpose(1, 2), self.weight, self.bias, padding=self.kernel_size // 2,
                             groups=self.groups)
        if self.kernel_size % 2 == 0:
            embedding = embedding[:, :, :-1]
        return gelu(embedding).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and torch's fused attention kernel.

    ``key_mask`` is a boolean [B, 1, 1, T] mask, True where a key may be attended to (or None: all keys).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, frames, channels = x.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv_proj(x).view(batch, frames, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=key_mask)
        return self.out_proj(attended.transpose(1, 2).reshape(batch, frames, channels))


class TransformerLayer(nn.Module):
    """wav2vec 2.0 / HuBERT transformer layer: self-attention and a feed-forward network, each with a residual.

    Post-LN (base models): x = LN(x + attn(x)); x = LN(x + ffn(x)).
    Pre-LN (``layer_norm_first``, large models): x = x + attn(LN(x)); x = x + ffn(LN(x)).
    """

    def __init__(self, embed_dim: int, ffn_dim: int, num_heads: int, *, layer_norm_first: bool,
                 activation_fn: str = "gelu") -> None:
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.self_attn = SelfAttention(embed_dim, num_heads)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.activation = activation(activation_fn)

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))

    @staticmethod
    def _add(update: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """update + residual, reusing ``update``'s buffer (never the residual's) when allowed."""
        return update.add_(residual) if _in_place_allowed(update) else update + residual

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.layer_norm_first:
            x = self._add(self.self_attn(self.self_attn_layer_norm(x), key_mask), x)
            return self._add(self._feed_forward(self.final_layer_norm(x)), x)
        x = self.self_attn_layer_norm(self._add(self.self_attn(x, key_mask), x))
        return self.final_layer_norm(self._add(self._feed_forward(x), x))


class TransformerBlock(nn.Module):
    """fairseq's ``TransformerEncoder`` as MR-HuBERT uses it for every block (encoders, middle, decoders).

    Zeroes padded frames, adds the positional convolution (first block only), applies the block LayerNorm before
    the layers (post-LN) or after them (pre-LN), pads the sequence to a multiple of ``required_seq_len_multiple``
    (the padding is masked out of attention and removed afterwards) and runs the layers.
    Returns the input of every layer and the block output, all [B, T, D] for the T input frames.
    """

    def __init__(self, num_layers: int, embed_dim: int, ffn_dim: int, num_heads: int, *, layer_norm_first: bool,
                 activation_fn: str = "gelu", pos_conv: PositionalConv | None = None,
                 required_seq_len_multiple: int = 1) -> None:
        super().__init__()
        self.pos_conv = pos_conv
        self.layers = nn.ModuleList(
            TransformerLayer(embed_dim, ffn_dim, num_heads, layer_norm_first=layer_norm_first,
                             activation_fn=activation_fn)
            for _ in range(num_layers)
        )
        self.layer_norm_first = layer_norm_first
        self.layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.required_seq_len_multiple = max(1, required_seq_len_multiple)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
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
        key_mask = None if padding_mask is None else (~padding_mask)[:, None, None, :]

        layer_inputs = []
        for layer in self.layers:
            layer_inputs.append(x[:, :frames])
            x = layer(x, key_mask)
        x = x[:, :frames]
        if self.layer_norm_first:
            x = self.layer_norm(x)
        return layer_inputs, x


# ----------------------------------------------------------------------------------------------------------------
# Resolution samplers


class SamplerConv(nn.Module):
    """Conv1d (``transposed=False``) or ConvTranspose1d, no bias, then GroupNorm(1, C) (statistics over channels
    and time of each utterance, padding included, as fairseq), then GELU. [B, T, C] -> [B, T', C].

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
        self.norm = nn.GroupNorm(1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels_first = x.transpose(1, 2)
        if self.transposed:
            y = F.conv_transpose1d(channels_first, self.weight, stride=self.stride, output_padding=self.stride - 1)
        else:
            y = F.conv1d(channels_first, self.weight, stride=self.stride, padding=(self.kernel_size - 1) // 2)
        y = y.transpose(1, 2)
        y = normalize_over_(y, (1, 2), self.norm.weight, self.norm.bias, self.norm.eps)
        return gelu(y)


def _scaled_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a + b) * sqrt(0.4) over the frames both have (fairseq crops to the shorter)."""
    frames = min(a.size(1), b.size(1))
    return (a[:, :frames] + b[:, :frames]) * SAMPLER_RESIDUAL_SCALE


def _resample_mask(padding_mask: torch.Tensor | None, up: int, down: int, frames: int) -> torch.Tensor | None:
    """A padding mask through a sampler: repeat each frame ``up`` times, keep every ``down``-th, crop."""
    if padding_mask is None:
        return None
    if up > 1:
        padding_mask = padding_mask.repeat_interleave(up, dim=1)
    return padding_mask[:, ::down][:, :frames]


class ConvAdapter(nn.Module):
    """fairseq's ``ConvAdapter``: changes the frame rate by up/down (e.g. 1/2 going down, 2/1 coming up).

    u = (GELU(GN(convT_up(x))) + repeat(x, up)) * s;  d = (GELU(GN(conv_down(u))) + u[::down]) * s;
    out = (d + repeat(x, up)[::down]) * s  with s = sqrt(0.4), each sum cropped to the shorter operand.
    """

    def __init__(self, channels: int, kernel_size: int, up: int, down: int) -> None:
        super().__init__()
        self.up, self.down = up, down
        self.upsample_conv = SamplerConv(channels, kernel_size, up, transposed=True)
        self.downsample_conv = SamplerConv(channels, kernel_size, down, transposed=False)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        repeated = x.repeat_interleave(self.up, dim=1) if self.up > 1 else x
        upsampled = _scaled_sum(self.upsample_conv(x), repeated)
        downsampled = _scaled_sum(self.downsample_conv(upsampled), upsampled[:, ::self.down])
        out = _scaled_sum(downsampled, repeated[:, ::self.down])
        return out, _resample_mask(padding_mask, self.up, self.down, out.size(1))


class ConvDownsampler(nn.Module):
    """fairseq's plain ``ConvDownsampler`` (B3-a): out = (GELU(GN(conv_down(x))) + x[::down]) * sqrt(0.4)."""

    def __init__(self, channels: int, kernel_size: int, down: int) -> None:
        super().__init__()
        self.down = down
        self.downsample_conv = SamplerConv(channels, kernel_size, down, transposed=False)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = _scaled_sum(self.downsample_conv(x), x[:, ::self.down])
        return out, _resample_mask(padding_mask, 1, self.down, out.size(1))


class ConvUpsampler(nn.Module):
    """fairseq's plain ``ConvUpsampler``: out = (GELU(GN(convT_up(x))) + repeat(x, up)) * sqrt(0.4)."""

    def __init__(self, channels: int, kernel_size: int, up: int) -> None:
        super().__init__()
        self.up = up
        self.upsample_conv = SamplerConv(channels, kernel_size, up, transposed=True)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        repeated = x.repeat_interleave(self.up, dim=1) if self.up > 1 else x
        out = _scaled_sum(self.upsample_conv(x), repeated)
        return out, _resample_mask(padding_mask, self.up, 1, out.size(1))


def make_sampler(channels: int, kernel_size: int, up: int, down: int, *, plain: bool, direction: str) -> nn.Module:
    """The module taking frames from one rate to the next (``direction`` "down" in the encoder half, "up" in the
    decoder half): a ConvAdapter, or with ``plain`` (fairseq's ``use_plain_updownsample``) a ConvDownsampler going
    down (needs up == 1) or a ConvUpsampler going up (needs down == 1)."""
    if direction not in ("down", "up"):
        raise ValueError(f"direction must be 'down' or 'up', got {direction!r}")
    if not plain:
        return ConvAdapter(channels, kernel_size, up, down)
    if direction == "down" and up == 1:
        return ConvDownsampler(channels, kernel_size, down)
    if direction == "up" and down == 1:
        return ConvUpsampler(channels, kernel_size, up)
    raise ValueError(f"a plain {direction}sampler cannot apply the ratio ({up}, {down})")
