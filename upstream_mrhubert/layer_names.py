"""Names of MR-HuBERT's hidden states (arXiv 2410.23955, Fig. 2b), for any layer configuration.

The model runs its transformer blocks in this order: ``encoders[0..n-1]``, the middle encoder, ``decoders[0..n-1]``
(``n`` = number of sampling levels, i.e. resolutions - 1). Like s3prl's MR-HuBERT expert we record, per block, the
input of every transformer layer and then the block output (before any residual sum). The naming rule:

* ``D<i>``: the first state recorded after the i-th downsampling (normally the input of the first layer of the
  block that follows it), ``U<i>``: the same after the i-th upsampling (0 = the first decoder level);
* ``T<k>``: every other state, ``k`` counting up from 0 in execution order.

``T<k>`` is then exactly "the output of the k-th transformer layer" (``T0`` = the input of the first layer), so a
model with L layers in all has T0..T<L> whatever its blocks, plus one D and one U per sampling level:

* 2 resolutions, 4-4-4: T0..T4 | D0 T5 T6 T7 T8 | U0 T9 T10 T11 T12
* 3 resolutions, 3-2-2-2-3 (B2-a): T0 T1 T2 T3 | D0 T4 T5 | D1 T6 T7 | U0 T8 T9 T10 | U1 T11 T12
* 3 resolutions, 2-2-4-2-2 (B2-b): T0 T1 T2 | D0 T3 T4 | D1 T5 T6 T7 T8 | U0 T9 T10 | U1 T11 T12
* one block only (``label_rate_ratios=[]``): T0..T<L>.

A block with no layers records only its output; after a sampling module that output takes the D/U name.

Block outputs after residual sums (``include_block_outputs=True``) are named ``<name of the block output>+res``: the
middle block's ``x + middle(x)`` (e.g. ``T8+res``) and, with the residual added after the decoder (fairseq's code),
each decoder's ``decoder(x) + skip`` (e.g. ``T12+res``, the model's final output). With ``pre_residual`` the skip is
added before the decoder, so decoders have no such extra state. Each ``+res`` state follows the state it extends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from upstream_mrhubert.errors import UsageError

RESIDUAL_SUFFIX = "+res"


@dataclass
class LayerState:
    """One named hidden state at its native frame rate."""

    name: str  # "T0", "D0", "U1", "T8+res", ...
    features: torch.Tensor  # [B, T_native, D]
    padding_mask: torch.Tensor | None  # [B, T_native], True = padding; None when nothing is padded
    stride: int  # samples per frame: 320 (20 ms), 640, 1280, ...


@dataclass(frozen=True)
class BlockNames:
    """The state names one transformer block contributes, in the order they are recorded."""

    layer_inputs: tuple[str, ...]  # one per transformer layer of the block
    output: str  # the block output (before any residual sum)
    residual_sum: str | None  # the output after the block's residual sum, when the block has one

    def all(self, include_block_outputs: bool = False) -> list[str]:
        """The block's names in recording order; the residual sum only when asked for."""
        names = [*self.layer_inputs, self.output]
        if include_block_outputs and self.residual_sum is not None:
            names.append(self.residual_sum)
        return names


def name_blocks(layer_counts: Sequence[int], *, pre_residual: bool = False) -> list[BlockNames]:
    """Names for every block, given the layer count of each block in execution order
    (encoders..., middle, decoders...: an odd number of blocks)."""
    if len(layer_counts) % 2 != 1:
        raise UsageError(f"expected an odd number of blocks (encoders, middle, decoders), got {list(layer_counts)}")
    if any(count < 0 for count in layer_counts):
        raise UsageError(f"layer counts must be >= 0, got {list(layer_counts)}")
    levels = len(layer_counts) // 2
    next_t = 0
    blocks = []
    for block, count in enumerate(layer_counts):
        if 1 <= block <= levels:
            entry_name: str | None = f"D{block - 1}"
        elif block > levels:
            entry_name = f"U{block - levels - 1}"
        else:
            entry_name = None
        names = []
        for position in range(count + 1):  # layer inputs, then the block output
            if position == 0 and entry_name is not None:
                names.append(entry_name)
            else:
                names.append(f"T{next_t}")
                next_t += 1
        has_residual_sum = block == levels or (block > levels and not pre_residual)
        blocks.append(
            BlockNames(
                layer_inputs=tuple(names[:-1]),
                output=names[-1],
                residual_sum=names[-1] + RESIDUAL_SUFFIX if has_residual_sum else None,
            )
        )
    return blocks


def layer_names(
    layer_counts: Sequence[int], *, include_block_outputs: bool = False, pre_residual: bool = False
) -> list[str]:
    """All state names in execution order for blocks with ``layer_counts`` layers (see the module docstring)."""
    return [
        name
        for block in name_blocks(layer_counts, pre_residual=pre_residual)
        for name in block.all(include_block_outputs)
    ]
