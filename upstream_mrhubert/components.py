"""Building blocks of MR-HuBERT's inference network, each with one concern.

They compute what fairseq's ``multires_hubert`` modules compute (``ConvFeatureExtractionModel``,
``TransformerEncoder``/``TransformerSentenceEncoderLayer``, ``ConvAdapter``, ``ConvDownsampler``, ``ConvUpsampler``)
with our own layout choices for speed and memory on CPU:

* sequences stay [batch, time, channels] everywhere (no time-major transposes);
* without gradients the CNN runs streamed over waveform segments as matrix products on channels-last data (the
  first layer's GroupNorm folded into its weights, kernel-3/stride-2 layers through Winograd's F(3, 2)), so its
  full-length activation maps are never allocated; normalisations and GELUs work in place;
* attention uses one fused query/key/value projection and ``torch.nn.functional.scaled_dot_product_attention``;
* the positional convolution's weight norm is folded into a plain weight when the checkpoint is loaded.

With gradients enabled every in-place shortcut is off and the CNN runs plain ``Conv1d``/``GroupNorm`` layers.
Parameter names are ours; :mod:`upstream_mrhubert.fairseq_keys` translates fairseq's state-dict keys to them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


def normalize_over_(
    x: torch.Tensor,
    dims: Sequence[int],
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float = LAYER_NORM_EPS,
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over ``dims`` (biased variance), then the per-channel affine on the last
    dimension; in place when no gradient is needed. The samplers' GroupNorm(1, C) on [B, T, C] is dims (1, 2)."""
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
    """One CNN layer: Conv1d (no padding), optional norm, GELU.

    The norm is fairseq's per-layer choice: ``"group"`` = GroupNorm(C, C), each channel normalised over the
    utterance's frames (first layer of ``extractor_mode=default``); ``"layer"`` = LayerNorm over the channels of
    each frame (``layer_norm`` mode); ``None``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, *, norm: str | None, bias: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        nn.init.kaiming_normal_(self.conv.weight)
        self.norm_type = norm
        self.norm = (
            nn.LayerNorm(out_channels)
            if norm == "layer"
            else (nn.GroupNorm(out_channels, out_channels) if norm == "group" else None)
        )

    @property
    def kernel_size(self) -> int:
        return self.conv.kernel_size[0]

    @property
    def stride(self) -> int:
        return self.conv.stride[0]

    def output_length(self, length: int) -> int:
        return (length - self.kernel_size) // self.stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-first [B, C_in, L] -> [B, C_out, T] with standard (differentiable) operations."""
        x = self.conv(x)
        if self.norm_type == "group":
            x = self.norm(x)
        elif self.norm_type == "layer":
            x = F.layer_norm(
                x.transpose(1, 2), (x.size(1),), self.norm.weight, self.norm.bias, self.norm.eps
            ).transpose(1, 2)
        return F.gelu(x)


@dataclass
class _ConvMatrices:
    """One CNN layer's weights as matrices for the channels-last matrix-product convolution (made per forward)."""

    kernel: int
    stride: int
    weight: torch.Tensor  # [k * C_in, C_out], rows ordered (tap, input channel)
    bias: torch.Tensor | None
    winograd: torch.Tensor | None  # k=3, s=2: [4, C_in, C_out] = W0, (W0+W2)/2, (W0-W2)/2, -W2

    @classmethod
    def of(cls, conv: nn.Conv1d, *, use_winograd: bool = True) -> _ConvMatrices:
        kernel, stride, channels = conv.kernel_size[0], conv.stride[0], conv.in_channels
        weight = conv.weight.permute(2, 1, 0).reshape(kernel * channels, conv.out_channels)
        winograd = None
        # Winograd only pays with wide layers; 16 keeps the tiny test models on this path too.
        if use_winograd and kernel == 3 and stride == 2 and channels >= 16:
            w0, w2 = weight[:channels], weight[2 * channels :]
            winograd = torch.stack([w0, (w0 + w2) * 0.5, (w0 - w2) * 0.5, -w2])
        return cls(kernel, stride, weight, conv.bias, winograd)


# Winograd F(3, 2) output transform: which of the 4 tile products make outputs 3u, 3u+1, 3u+2 (see below).
_WINOGRAD_OUTPUT = ((1.0, 1.0, 1.0, 0.0), (0.0, 1.0, -1.0, 0.0), (0.0, 1.0, 1.0, 1.0))


class _Workspace:
    """Flat buffers by role, reused by every segment of a forward (all segments have the same shapes), so the
    CNN's working memory is allocated, and page-faulted in, once per forward rather than once per segment."""

    def __init__(self, like: torch.Tensor) -> None:
        self._like = like
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, role: str, *shape: int) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self._buffers.get(role)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[role] = self._like.new_empty(size)
        return buffer[:size].view(shape)


def _packed_conv(
    x: torch.Tensor, conv: _ConvMatrices, out: torch.Tensor | None = None, workspace: _Workspace | None = None
) -> torch.Tensor:
    """Conv1d without padding over the rows of a channels-last sequence x [N, C_in] -> [N // stride, C_out]
    (into ``out`` when given; temporaries from ``workspace`` when given).

    Rows past the last full window are zero. Every operand is a 2-D view BLAS reads directly: the inputs of a group
    of ``stride`` taps for consecutive outputs are rows of x spaced ``stride`` apart.
    """
    rows, channels = x.shape
    if out is None:
        out = x.new_empty(rows // conv.stride, conv.weight.size(1))
    frames = (rows - conv.kernel) // conv.stride + 1 if rows >= conv.kernel else 0
    if conv.winograd is not None and frames >= 3:
        _winograd_k3_s2(
            x, conv.winograd, conv.weight[channels : 2 * channels], out[:frames], workspace or _Workspace(x)
        )
    elif frames > 0:
        target = out[:frames]
        for start in range(0, conv.kernel, conv.stride):
            taps = min(conv.stride, conv.kernel - start)
            inputs = x.as_strided(
                (frames, taps * channels), (conv.stride * channels, 1), x.storage_offset() + start * channels
            )
            part = conv.weight[start * channels : (start + taps) * channels]
            if start == 0:
                torch.mm(inputs, part, out=target)
            else:
                target.addmm_(inputs, part)
    out[frames:] = 0.0
    if conv.bias is not None:
        out[:frames] += conv.bias
    return out


def _winograd_k3_s2(
    x: torch.Tensor, even_filters: torch.Tensor, w1: torch.Tensor, out: torch.Tensor, workspace: _Workspace
) -> None:
    """Kernel-3, stride-2 convolution (four of the CNN's seven layers) with 7 instead of 9 matrix products per
    3 output frames: Winograd's minimal filtering F(3, 2) on the even input rows, plain products on the odd ones.

    Output t is y_t = x_{2t} W0 + x_{2t+1} W1 + x_{2t+2} W2. The odd rows give one product for every output.
    Over 3 outputs the even rows d_j = x_{6u+2j} (j = 0..3) meet the 2-tap filter (W0, W2): with the tile products
    m0 = (d0 - d2) W0, m1 = (d1 + d2)(W0 + W2)/2, m2 = (d2 - d1)(W0 - W2)/2, m3 = (d1 - d3)(-W2),
    y_0 += m0 + m1 + m2,  y_1 += m1 - m2,  y_2 += m1 + m2 + m3. Outputs past the last whole tile (1 or 2) take
    their even terms directly.
    """
    frames, channels = out.size(0), x.size(1)
    tiles = frames // 3
    torch.mm(x[1 : 2 * frames : 2], w1, out=out)  # odd rows, every output
    even = x.as_strided((tiles, 4, channels), (6 * channels, 2 * channels, 1), x.storage_offset())
    transformed = workspace.get("winograd_inputs", 4, tiles, channels)
    torch.sub(even[:, 0], even[:, 2], out=transformed[0])
    torch.add(even[:, 1], even[:, 2], out=transformed[1])
    torch.sub(even[:, 2], even[:, 1], out=transformed[2])
    torch.sub(even[:, 1], even[:, 3], out=transformed[3])
    products = torch.bmm(transformed, even_filters, out=workspace.get("winograd_products", 4, tiles, out.size(1)))
    combine = torch.tensor(_WINOGRAD_OUTPUT, dtype=x.dtype, device=x.device)
    tile_outputs = workspace.get("winograd_outputs", 3, tiles, out.size(1))
    torch.mm(combine, products.view(4, -1), out=tile_outputs.view(3, -1))
    out[: 3 * tiles].view(tiles, 3, -1).add_(tile_outputs.transpose(0, 1))
    for t in range(3 * tiles, frames):
        out[t : t + 1].addmm_(x[2 * t : 2 * t + 1], even_filters[0]).addmm_(x[2 * t + 2 : 2 * t + 3], -even_filters[3])


class FeatureExtractor(nn.Module):
    """fairseq's ``ConvFeatureExtractionModel``: waveform [B, L] -> frames [B, T, C] (channels last).

    ``mode="default"`` puts GroupNorm(C, C) in the first layer only, ``"layer_norm"`` LayerNorm in every layer.

    Without gradients the CNN runs as matrix products on channels-last data, over segments of the waveform
    (overlapping by the receptive field) sized so that the first layer's map stays under ``chunk_bytes``: the
    full-length maps (hundreds of MB for a batch of seconds-long audio) are never allocated. Every segment reuses
    the same few buffers (about 3.3 x ``chunk_bytes`` in all). The default 16 MiB was the fastest on a 2-core CPU
    (segments this small stay in the cache; much smaller ones multiply the operations, 16 segments for a batch
    of 4 x 8 s here, each a synchronisation point for the intra-op threads). The first layer's
    GroupNorm needs statistics over the whole utterance; that layer is linear, so each channel's mean and variance
    follow exactly from the mean and covariance of the one-channel input windows (w.m + b and w'Cw, in float64),
    and the norm folds into that layer's weight and bias per utterance. With gradients the plain channels-first
    layers run instead (same results up to rounding).
    """

    def __init__(
        self,
        layers: Sequence[tuple[int, int, int]],
        *,
        mode: str = "default",
        bias: bool = False,
        chunk_bytes: int = 16 * 2**20,
        winograd: bool = True,
    ) -> None:
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
        self.chunk_bytes = chunk_bytes
        self.winograd = winograd

    def output_length(self, length: int) -> int:
        for layer in self.conv_layers:
            length = layer.output_length(length)
        return length

    @property
    def total_stride(self) -> int:
        return math.prod(layer.stride for layer in self.conv_layers)

    @property
    def receptive_field(self) -> int:
        """Input samples that one output frame sees."""
        field, jump = 1, 1
        for layer in self.conv_layers:
            field += (layer.kernel_size - 1) * jump
            jump *= layer.stride
        return field

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.size(-1) < self.receptive_field:
            raise ValueError(
                f"waveforms of {waveforms.size(-1)} samples are shorter than the CNN's receptive field "
                f"({self.receptive_field} samples): there is no frame to compute"
            )
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            x = waveforms.unsqueeze(1)
            for layer in self.conv_layers:
                x = layer(x)
            return x.transpose(1, 2)
        return self._streamed(waveforms)

    def _first_layer_affine(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first layer's weight [B or 1, k, C] and bias [B or 1, 1, C] (or None), with the GroupNorm of each
        utterance folded in (statistics over all its frames, padding included, as fairseq)."""
        first = self.conv_layers[0]
        kernel, stride = first.kernel_size, first.stride
        weight = first.conv.weight[:, 0, :].T.unsqueeze(0)  # [1, k, C]
        bias = first.conv.bias.view(1, 1, -1) if first.conv.bias is not None else None
        if first.norm_type != "group":
            return weight, bias
        batch, length = waveforms.shape
        frames = first.output_length(length)
        windows = waveforms.double().as_strided((batch, frames, kernel), (length, stride, 1))
        window_mean = windows.mean(dim=1, keepdim=True)  # [B, 1, k]
        centred = windows - window_mean
        covariance = centred.transpose(1, 2) @ centred / frames  # [B, k, k]
        w = weight.double()
        mean = window_mean @ w + (bias.double() if bias is not None else 0.0)  # [B, 1, C]
        variance = ((covariance @ w) * w).sum(dim=1, keepdim=True).clamp_min(0.0)
        scale = first.norm.weight.double() * torch.rsqrt(variance + first.norm.eps)
        folded_bias = first.norm.bias.double() - mean * scale + (bias.double() * scale if bias is not None else 0.0)
        return (w * scale).to(waveforms.dtype), folded_bias.to(waveforms.dtype)

    def _streamed(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The inference path. Each segment of the batch is "packed": the utterances' rows follow each other in
        one 2-D [rows, channels] tensor, every utterance owning a region whose size divides exactly by the strides
        still to come, so one matrix product serves the whole batch. The last rows of a region (windows running
        into the next region) are junk and are dropped at the end."""
        layers = list(self.conv_layers)
        first, rest = layers[0], layers[1:]
        matrices = [_ConvMatrices.of(layer.conv, use_winograd=self.winograd) for layer in rest]
        first_weight, first_bias = self._first_layer_affine(waveforms)
        if first_bias is not None:  # as an extra weight row against a column of ones: no separate bias pass
            first_weight = torch.cat([first_weight, first_bias.expand(first_weight.size(0), -1, -1)], dim=1)
        batch, length = waveforms.shape
        frames = self.output_length(length)
        hop = self.total_stride
        later_strides = math.prod(layer.stride for layer in rest)
        channels = first.conv.out_channels

        def valid_rows(region: int) -> int:
            """Final rows of a region of ``region`` rows that are correct (the others read past the region)."""
            rows = region * later_strides
            for layer in rest:
                rows = (rows - layer.kernel_size) // layer.stride + 1
            return rows

        # Final rows per utterance and segment: from the memory budget of the first layer's map, at most all frames.
        whole = frames
        while valid_rows(whole) < frames:
            whole += 1
        region = min(whole, max(1, self.chunk_bytes // (batch * later_strides * channels * waveforms.element_size())))
        while valid_rows(region) < 1:
            region += 1
        valid = valid_rows(region)
        first_rows = region * later_strides
        # Zero-pad so that the junk windows of the last segment stay inside the tensor.
        needed = (math.ceil(frames / valid) - 1) * valid * hop + (first_rows - 1) * first.stride + first.kernel_size
        padded = F.pad(waveforms, (0, max(0, needed - length))).contiguous()
        padded_length = padded.size(1)
        out = waveforms.new_empty(batch, frames, layers[-1].conv.out_channels)
        workspace = _Workspace(waveforms)
        for start in range(0, frames, valid):
            count = min(valid, frames - start)
            windows = padded.as_strided(
                (batch, first_rows, first.kernel_size),
                (padded_length, first.stride, 1),
                padded.storage_offset() + start * hop,
            )
            x = workspace.get("map0", batch, first_rows, channels)
            inputs = workspace.get("windows", batch, first_rows, first_weight.size(1))
            inputs[..., : first.kernel_size] = windows
            inputs[..., first.kernel_size :] = 1.0  # the bias row of the weights
            torch.bmm(inputs, first_weight.expand(batch, -1, -1), out=x)
            x = x.view(batch * first_rows, channels)
            for index, layer in enumerate(layers):
                if index > 0:  # layer outputs alternate between two buffers
                    target = workspace.get(f"map{index % 2}", x.size(0) // layer.stride, layer.conv.out_channels)
                    x = _packed_conv(x, matrices[index - 1], target, workspace)
                if layer.norm_type == "layer":
                    x = F.layer_norm(x, (x.size(-1),), layer.norm.weight, layer.norm.bias, layer.norm.eps)
                x = torch.ops.aten.gelu_(x)
            out[:, start : start + count] = x.view(batch, region, -1)[:, :count]
        return out


# ----------------------------------------------------------------------------------------------------------------
# Transformer


class PositionalConv(nn.Module):
    """wav2vec 2.0's convolutional relative position embedding: grouped Conv1d (padding k//2), drop the last frame
    for even k ("SamePad"), GELU. Returns the embedding only; the caller adds it to its input.

    fairseq trains the weight with weight norm over dim 2; we hold the folded weight g * v / ||v||.

    Without gradients, long inputs take the same correlation through the FFT (overlap-save over blocks of N
    frames): with k = 128 taps this needs about a fifth of the direct convolution's multiplications for a batch
    of a few seconds of audio. The weights' spectra (sum_j w_j e^{2 pi i f j / N}, i.e. the conjugate DFT) come
    from one matrix product with a cos/sin basis; per frequency and group the channels mix by a complex
    [in x out] product.
    """

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.weight, mean=0.0, std=math.sqrt(4.0 / (kernel_size * channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = None
        if not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)):
            block = self._fft_block(x.size(0), x.size(1))
        embedding = self._direct(x) if block is None else self._by_fft(x, block)
        return gelu(embedding)

    def _direct(self, x: torch.Tensor) -> torch.Tensor:
        embedding = F.conv1d(
            x.transpose(1, 2), self.weight, self.bias, padding=self.kernel_size // 2, groups=self.groups
        )
        if self.kernel_size % 2 == 0:
            embedding = embedding[:, :, :-1]
        return embedding.transpose(1, 2)

    def _fft_block(self, batch: int, frames: int) -> int | None:
        """The FFT block length that needs the fewest multiplications, or None when the direct convolution is
        cheaper (short inputs: the weights' spectra cost the same whatever the input length)."""
        channels, group_width, taps = self.weight.shape
        direct = batch * frames * channels * group_width * taps
        best, best_cost = None, 0.6 * direct  # the FFT path must win clearly: it has more, smaller operations
        size = 1 << (taps.bit_length())  # the smallest power of two above k
        while True:
            useful = size - taps + 1
            blocks = math.ceil(frames / useful)
            bins = size // 2 + 1
            cost = (
                2 * bins * taps * channels * group_width  # weight spectra
                + 4 * batch * blocks * bins * channels * group_width  # complex channel mixing
                + 5 * batch * blocks * size * math.log2(size) * channels
            )  # forward and inverse FFTs
            if cost < best_cost:
                best, best_cost = size, cost
            if useful >= frames:
                return best
            size *= 2

    def _by_fft(self, x: torch.Tensor, size: int) -> torch.Tensor:
        batch, frames, channels = x.shape
        groups, taps = self.groups, self.kernel_size
        width = channels // groups
        useful = size - taps + 1
        blocks = math.ceil(frames / useful)
        bins = size // 2 + 1
        # Conjugate spectra of the weights, as [bins * groups, in, out] complex matrices.
        angles = (2 * math.pi / size) * torch.outer(
            torch.arange(bins, dtype=torch.float64), torch.arange(taps, dtype=torch.float64)
        )
        basis = torch.cat([torch.cos(angles), torch.sin(angles)]).to(x.dtype)  # [2 * bins, k]
        taps_first = self.weight.view(groups, width, width, taps).permute(3, 0, 2, 1).reshape(taps, -1)
        spectra = basis @ taps_first  # [2 * bins, (g, in, out)]: real parts, then imaginary parts
        mixing = torch.complex(spectra[:bins], spectra[bins:]).view(bins * groups, width, width)
        # Overlap-save: block b sees the (left-padded) frames [b * useful, b * useful + size).
        left = taps // 2
        total = (blocks - 1) * useful + size
        padded = F.pad(x, (0, 0, left, total - left - frames))
        windows = padded.as_strided((batch, blocks, size, channels), (total * channels, useful * channels, channels, 1))
        spectrum = torch.fft.rfft(windows, dim=2)  # [B, blocks, bins, C]
        spectrum = spectrum.view(batch * blocks, bins, groups, width).permute(1, 2, 0, 3)
        mixed = torch.bmm(spectrum.reshape(bins * groups, batch * blocks, width), mixing)
        mixed = (
            mixed.view(bins, groups, batch, blocks, width).permute(2, 3, 0, 1, 4).reshape(batch, blocks, bins, channels)
        )
        embedding = torch.fft.irfft(mixed, n=size, dim=2)[:, :, :useful].reshape(batch, blocks * useful, channels)
        return embedding[:, :frames] + self.bias


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and torch's fused attention kernel.

    ``key_mask`` is an additive [B, 1, 1, T] mask (0 for real keys, -inf for padding) or None (all keys).
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

    def __init__(
        self, embed_dim: int, ffn_dim: int, num_heads: int, *, layer_norm_first: bool, activation_fn: str = "gelu"
    ) -> None:
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
    ) -> None:
        super().__init__()
        self.pos_conv = pos_conv
        self.layers = nn.ModuleList(
            TransformerLayer(
                embed_dim, ffn_dim, num_heads, layer_norm_first=layer_norm_first, activation_fn=activation_fn
            )
            for _ in range(num_layers)
        )
        self.layer_norm_first = layer_norm_first
        self.layer_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)
        self.required_seq_len_multiple = max(1, required_seq_len_multiple)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
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
        key_mask = None
        if padding_mask is not None:  # additive mask: -inf on padded keys (faster than a boolean one on CPU)
            key_mask = torch.zeros(padding_mask.shape, dtype=x.dtype, device=x.device)
            key_mask = key_mask.masked_fill_(padding_mask, float("-inf"))[:, None, None, :]

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

    def _pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel size 1 (the released models) as one matrix product, channels last."""
        weight = self.weight[:, :, 0]  # conv: [C_out, C_in]; transposed conv: [C_in, C_out]
        if not self.transposed:
            return x[:, :: self.stride] @ weight.T
        out = x.new_zeros(x.size(0), x.size(1) * self.stride, x.size(2))
        out[:, :: self.stride] = x @ weight
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel_size == 1:
            return gelu(normalize_over_(self._pointwise(x), (1, 2), self.norm.weight, self.norm.bias, self.norm.eps))
        channels_first = x.transpose(1, 2).contiguous()
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

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        repeated = x.repeat_interleave(self.up, dim=1) if self.up > 1 else x
        upsampled = _scaled_sum(self.upsample_conv(x), repeated)
        downsampled = _scaled_sum(self.downsample_conv(upsampled), upsampled[:, :: self.down])
        out = _scaled_sum(downsampled, repeated[:, :: self.down])
        return out, _resample_mask(padding_mask, self.up, self.down, out.size(1))


class ConvDownsampler(nn.Module):
    """fairseq's plain ``ConvDownsampler`` (B3-a): out = (GELU(GN(conv_down(x))) + x[::down]) * sqrt(0.4)."""

    def __init__(self, channels: int, kernel_size: int, down: int) -> None:
        super().__init__()
        self.down = down
        self.downsample_conv = SamplerConv(channels, kernel_size, down, transposed=False)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = _scaled_sum(self.downsample_conv(x), x[:, :: self.down])
        return out, _resample_mask(padding_mask, 1, self.down, out.size(1))


class ConvUpsampler(nn.Module):
    """fairseq's plain ``ConvUpsampler``: out = (GELU(GN(convT_up(x))) + repeat(x, up)) * sqrt(0.4)."""

    def __init__(self, channels: int, kernel_size: int, up: int) -> None:
        super().__init__()
        self.up = up
        self.upsample_conv = SamplerConv(channels, kernel_size, up, transposed=True)

    def forward(
        self,
        x: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
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
