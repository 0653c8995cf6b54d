"""What audio every upstream takes: the one home of the sample rate, the channel count and the receptive-field rule."""

from __future__ import annotations

from collections.abc import Iterable

SAMPLE_RATE = 16_000  # Hz; every SUPERB upstream, and every s3prl dataset of these tasks, assumes it
CHANNELS = 1


def receptive_field(layers: Iterable[tuple[int, int, int]]) -> int:
    """Input samples one output frame of a convolution stack sees; ``layers`` as (dim, kernel, stride)."""
    field, jump = 1, 1
    for _, kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field
