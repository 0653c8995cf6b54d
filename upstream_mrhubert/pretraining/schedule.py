"""AdamW and fairseq's ``polynomial_decay`` learning-rate schedule.

fairseq's ``adam`` optimizer applies decoupled weight decay (it is AdamW); its schedule warms up linearly from 0 to
the peak over ``warmup_updates``, then decays polynomially to ``end_learning_rate`` at ``total_num_update``:

    lr(s) = peak * s / warmup                                          for s <= warmup (warmup > 0)
    lr(s) = end + (peak - end) * (1 - (s - warmup) / (total - warmup)) ** power     for warmup < s <= total
    lr(s) = end                                                         after

``s`` counts optimizer updates already done, so the first update runs at lr(0) = 0 when there is a warmup, as in
fairseq (its scheduler is stepped after each update with the new count).
"""

from __future__ import annotations

import torch
from torch import nn

from upstream_mrhubert.pretraining.config import OptimSection


def polynomial_decay_lr(step: int, *, peak: float, warmup: int, total: int, end: float, power: float) -> float:
    """The learning rate for the update after ``step`` updates (see the module docstring)."""
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    if step >= total:
        return end
    remaining = 1.0 - (step - warmup) / max(1, total - warmup)
    return end + (peak - end) * remaining**power


def build_optimizer(model: nn.Module, optim: OptimSection) -> torch.optim.AdamW:
    """AdamW over every trainable parameter with fairseq's betas, eps and weight decay."""
    return torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=optim.lr,
        betas=optim.betas,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, step: int, optim: OptimSection) -> float:
    """Put lr(step) on every parameter group and return it."""
    lr = polynomial_decay_lr(
        step, peak=optim.lr, warmup=optim.warmup_steps, total=optim.max_steps, end=optim.end_lr, power=optim.power
    )
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
