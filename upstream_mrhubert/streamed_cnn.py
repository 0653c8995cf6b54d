"""The CNN feature extractor over segments of the waveform: the same frames in a fraction of the memory.

For a batch of long audio the CNN's first maps dominate the forward's memory (512 channels at 3.2 kHz: 6.5 MB per
second of audio and utterance for each of the conv, norm and GELU outputs). Run segment by segment, only one
segment's maps exist at a time. Output frame t depends on samples [t * hop, t * hop + receptive_field) only, and
every layer's frame grid stays aligned when a segment starts at a multiple of the total stride ``hop``, so the
frames of each segment are exactly those of the whole-utterance CNN.

The one whole-utterance dependency is the first layer's GroupNorm(C, C) (``extractor_mode=default``): per
channel, mean and variance over all of that layer's frames. A first pass computes only that layer's convolution,
segment by segment, and sums its values and squares in float64; the second pass normalises with those statistics.
The first layer costs under 1 % of the CNN's operations, so the extra pass is cheap.

Opt-in (upstream option ``cnn_segment_frames``); plain layers throughout, so it works under autocast like the
default path. Parity: tests/test_streamed_cnn.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from upstream_mrhubert.components import FeatureConvLayer, FeatureExtractor
from upstream_mrhubert.errors import UsageError


def _segments(frames: int, segment_frames: int) -> list[tuple[int, int]]:
    return [(start, min(start + segment_frames, frames)) for start in range(0, frames, segment_frames)]


def _first_layer_statistics(
    layer: FeatureConvLayer, waveforms: torch.Tensor, segment_frames: int, hop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance [B, C, 1] (float32) of the first conv's output over each utterance's frames."""
    frames = layer.output_length(waveforms.size(-1))
    step = segment_frames * hop // layer.stride  # first-layer frames per segment: disjoint slices of its output
    total = torch.zeros(waveforms.size(0), layer.conv.out_channels, 1, dtype=torch.float64, device=waveforms.device)
    squares = torch.zeros_like(total)
    for start in range(0, frames, step):
        stop = min(start + step, frames)
        window = waveforms[:, None, start * layer.stride : (stop - 1) * layer.stride + layer.kernel_size]
        y = layer.conv(window).double()
        total += y.sum(dim=-1, keepdim=True)
        squares += y.square().sum(dim=-1, keepdim=True)
    mean = total / frames
    variance = (squares / frames - mean.square()).clamp_min(0.0)
    return mean.float(), variance.float()


def streamed_features(extractor: FeatureExtractor, waveforms: torch.Tensor, segment_frames: int) -> torch.Tensor:
    """``extractor(waveforms)`` [B, T, C] computed ``segment_frames`` output frames at a time."""
    if segment_frames < 1:
        raise UsageError(f"cnn_segment_frames must be a positive number of frames, got {segment_frames}")
    extractor.check_length(waveforms.size(-1))
    hop, field = extractor.total_stride, extractor.receptive_field
    frames = extractor.output_length(waveforms.size(-1))
    first, *rest = extractor.layers()
    statistics = None
    if first.norm_type == "group" and first.norm is not None:
        statistics = _first_layer_statistics(first, waveforms, segment_frames, hop)
    pieces = []
    for start, stop in _segments(frames, segment_frames):
        x = waveforms[:, None, start * hop : (stop - 1) * hop + field]
        if statistics is None:
            x = first(x)
        else:
            mean, variance = statistics
            norm = first.norm
            assert isinstance(norm, torch.nn.GroupNorm)
            y = (first.conv(x).float() - mean) * torch.rsqrt(variance + norm.eps)
            x = F.gelu(y * norm.weight[:, None] + norm.bias[:, None])
        for layer in rest:
            x = layer(x)
        pieces.append(x.transpose(1, 2))
    return torch.cat(pieces, dim=1)
