"""Span masking with fairseq's ``mask_prob`` / ``mask_length`` semantics (``compute_mask_indices``, static spans).

For an utterance of ``n`` unpadded frames:

1. the number of spans is ``int(mask_prob * n / mask_length + u)`` with ``u ~ U[0, 1)`` (probabilistic rounding),
   at least ``min_masks`` (fairseq's HuBERT passes 2);
2. span starts are drawn without replacement from ``[0, n - mask_length)`` (fairseq shrinks that range when it
   would not hold the spans); each span covers ``mask_length`` frames, overlaps merge and frames past ``n`` drop;
3. every utterance of the batch then keeps the same number of masked frames, the smallest count in the batch,
   by dropping a random subset of each longer one (fairseq's ``require_same_masks``).

``mask_prob`` is therefore the expected share of frames that START a span times ``mask_length``: with 0.8 and spans
of 10, about 8 spans per 100 frames are drawn and, after overlaps, roughly half of the frames end up masked.

The mask is made at 20 ms. The network's samplers carry it down and back up with their own rule (repeat by the
upsampling factor, keep every downsampling-th frame, crop), and the loss of each resolution uses the mask that
arrives there, as fairseq does: the 20 ms loss mask is the one that came back up through the samplers (with ratio
2, frame 2k + 1 takes frame 2k's state).
"""

from __future__ import annotations

import numpy as np
import torch

from upstream_mrhubert.errors import UsageError


def compute_span_mask(
    shape: tuple[int, int],
    padding_mask: torch.Tensor | None,
    *,
    mask_prob: float,
    mask_length: int,
    rng: np.random.Generator,
    min_masks: int = 2,
) -> torch.Tensor:
    """A [B, T] boolean mask (True = masked) of static spans; padded frames are never masked.

    Args:
        shape: (batch, frames).
        padding_mask: [B, T] True at padding, or None.
        mask_prob: fairseq's ``mask_prob``.
        mask_length: span length in frames.
        rng: the generator every draw comes from (one per step keeps runs repeatable and resumable).
        min_masks: the least number of spans per utterance.
    Returns:
        [B, T] bool tensor.
    """
    batch, frames = shape
    lengths = [frames] * batch if padding_mask is None else (frames - padding_mask.long().sum(dim=1)).tolist()
    chosen: list[np.ndarray] = []
    for size in lengths:
        spans = max(min_masks, int(mask_prob * size / float(mask_length) + rng.random()))
        shortest = mask_length
        if size - shortest <= spans:
            shortest = size - spans - 1
        if size - shortest <= 0 or spans > size - shortest:
            raise UsageError(
                f"an utterance of {size} frames cannot hold {spans} mask spans of {mask_length}; "
                "use longer crops (data.min_seconds) or a smaller masking.mask_length"
            )
        starts = rng.choice(size - shortest, spans, replace=False)
        frames_masked = (starts[:, None] + np.arange(mask_length)[None, :]).reshape(-1)
        frames_masked = np.unique(frames_masked[frames_masked < size])
        if len(frames_masked) >= size:
            raise UsageError(
                f"the whole utterance of {size} frames would be masked; lower masking.mask_prob or use longer crops"
            )
        chosen.append(frames_masked)

    keep = min(len(indices) for indices in chosen)
    mask = np.zeros((batch, frames), dtype=bool)
    for row, indices in enumerate(chosen):
        if len(indices) > keep:
            indices = rng.choice(indices, keep, replace=False)
        mask[row, indices] = True
    return torch.from_numpy(mask)
