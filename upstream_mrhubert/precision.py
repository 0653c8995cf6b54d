"""The ``precision`` upstream option: the forward in float32, or under ``torch.autocast`` in bfloat16 / float16.

Under autocast the matrix products and convolutions run in the low precision; the modules keep their norms and the
transformer's residual stream in float32 (:mod:`upstream_mrhubert.components`), and the upstream returns float32
hidden states. float16 needs CUDA (CPU autocast has no float16 kernels worth using); bfloat16 runs on both and is
the fast path on CPUs with AVX512-BF16/AMX. What bfloat16 costs in accuracy is measured in ``docs/upstreams.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from upstream_mrhubert.errors import UsageError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_PRECISION = "fp32"
# Relative error ||bf16 - fp32|| / ||fp32|| of every hidden state (unpadded frames) that bf16 stays within: measured
# 1.1e-2 to 1.5e-2 on random-weight models (tests/test_precision.py, benchmarks/upstream_forward.py).
BF16_RELATIVE_ERROR_BOUND = 0.02


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """One clear error for an unknown precision, or for fp16 on a device other than CUDA."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device is not None and torch.device(device).type != "cuda":
        raise UsageError(
            f"precision fp16 needs a CUDA device, but the forward runs on {torch.device(device)}; "
            "use precision: bf16 on CPU (or fp32)"
        )


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """The context a forward at ``precision`` runs in on ``device``: nothing for fp32, else torch.autocast."""
    check_precision(precision, device)
    if precision == "fp32":
        yield
        return
    with torch.autocast(torch.device(device).type, dtype=PRECISIONS[precision]):
        yield
