"""Fixes for bugs of the libraries under the model, each named and explained; none changes a correct result.

Each function says what breaks, where, and how we tell that it still does (so a fix can go when the library
fixes the bug).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

LOGGER = logging.getLogger(__name__)

# A low-precision result further than this from float32 (relative norm) is wrong, not rounded: bf16 rounding
# gives about 3e-3 on one convolution.
_WRONG_RESULT = 0.05


@functools.cache
def low_precision_grouped_conv_is_sound(
    channels: int, groups: int, kernel_size: int, device_type: str, dtype: torch.dtype
) -> bool:
    """Whether a grouped ``conv1d`` of this shape gives a float32-close result under ``torch.autocast(dtype)``.

    What breaks: with torch 2.14.1 on CPUs with AMX/AVX512-BF16 (oneDNN's bf16 kernels), a grouped Conv1d with few
    channels per group (8 or fewer) and a kernel of 8 or more returns values unrelated to the float32 convolution
    (relative error about 1.0, not 3e-3); measured on an Intel Xeon with amx_bf16, 2026-12-06. Released models
    (48 or more channels per group) are not affected; the tiny test models are. CPUs without native bf16 take
    another kernel and are not affected either.

    How we tell: one probe convolution of the shape on random input, once per shape, device type and dtype. When it
    fails, the caller runs that convolution in float32 (a warning says so once).
    """
    generator = torch.Generator().manual_seed(0)
    length = max(4 * kernel_size, 64)
    inputs = torch.randn(1, channels, length, generator=generator).to(device_type)
    weight = (torch.randn(channels, channels // groups, kernel_size, generator=generator) * 0.1).to(device_type)
    with torch.no_grad():
        with torch.autocast(device_type, enabled=False):  # the caller may be inside autocast
            exact = F.conv1d(inputs, weight, padding=kernel_size // 2, groups=groups)
        with torch.autocast(device_type, dtype=dtype):
            low = F.conv1d(inputs, weight, padding=kernel_size // 2, groups=groups)
    error = float((exact - low.float()).norm() / exact.norm())
    sound = error <= _WRONG_RESULT
    if not sound:
        LOGGER.warning(
            "grouped conv1d (%d channels, %d groups, kernel %d) gives wrong results in %s on this %s (relative "
            "error %.2f); it runs in float32 instead (upstream_mrhubert.workarounds)",
            channels,
            groups,
            kernel_size,
            dtype,
            device_type,
            error,
        )
    return sound
