"""MR-HuBERT's pre-training heads and the ``hubert`` criterion, with fairseq's state-dict keys and semantics.

Parameters (fairseq's names, so the checkpoint's ``model`` holds them as a released one does):

``mask_emb``               [D], uniform in [0, 1): replaces the projected features of masked frames;
``final_projs.<j>``        Linear D -> final_dim, one per prediction head (untied);
``label_embs_concat.<j>``  [len(dictionary), final_dim], uniform in [0, 1): one embedding per label.

Head j predicts resolution j (0 = 20 ms). With the auxiliary loss off (fairseq's ``use_single_prediction``) there is
one head, on the final 20 ms output, and no low-resolution parameters exist at all.

Logits are cosine similarities between the projected frame and every label embedding, divided by ``logit_temp``;
fairseq scores the true label against all others (the duplicate removed), which is the cross-entropy over all
labels used here. Dictionary index = cluster id + fairseq's special symbols (``<s> <pad> </s> <unk>``), so the
rows of ``label_embs_concat`` mean what they mean in fairseq.

Loss (fairseq sums and divides the gradient by the sample size, the number of masked 20 ms frames):
``(w_m * sum_j CE_masked_j + w_u * sum_j CE_unmasked_j) / sample_size + pen_weight * mean(features ** 2)``
where the feature penalty is on the CNN output before its LayerNorm. fairseq LOGS each term divided by the
sample size and by ln 2 (bits); :class:`LossTerms` keeps both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from upstream_mrhubert.checkpoints.io import FairseqDictionary

# fairseq's Dictionary puts its special symbols first; label k has index k + this offset.
LABEL_OFFSET = len(FairseqDictionary.from_symbols([]).symbols)


def dictionary_symbols(clusters: int) -> list[str]:
    """The label dictionary's own symbols ("0" ... "K-1"); the writer adds fairseq's specials in front."""
    return [str(k) for k in range(clusters)]


class PredictionHeads(nn.Module):
    """Mask embedding, per-head projections and label embeddings (see the module docstring)."""

    def __init__(self, embed_dim: int, final_dim: int, clusters: int, heads: int) -> None:
        super().__init__()
        final_dim = final_dim if final_dim > 0 else embed_dim
        self.num_labels = clusters + LABEL_OFFSET
        self.mask_emb = nn.Parameter(torch.empty(embed_dim).uniform_())
        self.final_projs = nn.ModuleList(nn.Linear(embed_dim, final_dim) for _ in range(heads))
        self.label_embs_concat = nn.ParameterList(
            nn.Parameter(torch.empty(self.num_labels, final_dim).uniform_()) for _ in range(heads)
        )

    @property
    def num_heads(self) -> int:
        return len(self.final_projs)

    def apply_mask(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, D] with masked frames ([B, T] True) replaced by the mask embedding (out of place)."""
        return torch.where(mask.unsqueeze(-1), self.mask_emb.to(x.dtype), x)

    def logits(self, head: int, frames: torch.Tensor, logit_temp: float) -> torch.Tensor:
        """[N, num_labels] cosine logits / temperature for [N, D] frames, computed in float32 as fairseq does."""
        projected = self.final_projs[head](frames).float()
        embeddings = self.label_embs_concat[head].float()
        cosine = F.normalize(projected, dim=-1, eps=1e-8) @ F.normalize(embeddings, dim=-1, eps=1e-8).T
        return cosine / logit_temp


@dataclass
class LossTerms:
    """Sums over one batch, per head; ``objective`` is what backpropagates."""

    objective: torch.Tensor
    sample_size: int
    masked_loss: list[float] = field(default_factory=list)  # summed CE (nats) of masked frames, per head
    unmasked_loss: list[float] = field(default_factory=list)
    masked_correct: list[int] = field(default_factory=list)
    masked_count: list[int] = field(default_factory=list)
    unmasked_correct: list[int] = field(default_factory=list)
    unmasked_count: list[int] = field(default_factory=list)
    feature_pen: float = 0.0


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> int:
    """fairseq's ``compute_correct``: the target has the top score and not also the lowest (all-equal rows miss)."""
    if logits.numel() == 0:
        return 0
    best = logits.argmax(-1) == targets
    worst = logits.argmin(-1) == targets
    return int((best & ~worst).sum())


def criterion(
    heads: PredictionHeads,
    outputs: list[torch.Tensor],
    targets: list[torch.Tensor],
    masks: list[torch.Tensor],
    padding: list[torch.Tensor | None],
    feature_pen: torch.Tensor,
    *,
    logit_temp: float,
    pred_masked_weight: float,
    pred_nomask_weight: float,
    feature_pen_weight: float,
) -> LossTerms:
    """fairseq's ``hubert`` criterion over the heads.

    Args:
        heads: the prediction heads; head j uses ``outputs[j]``.
        outputs: per resolution [B, T_j, D] (cropped to the targets), highest first.
        targets: per resolution [B, T_j] cluster ids (not yet offset).
        masks: per resolution [B, T_j] True where the frame was masked.
        padding: per resolution [B, T_j] True at padding, or None.
        feature_pen: mean squared CNN output (a scalar tensor).
        logit_temp, pred_masked_weight, pred_nomask_weight, feature_pen_weight: the criterion's settings.
    Returns:
        The objective (a scalar to backpropagate) and per-head sums for logging.
    """
    total = feature_pen.new_zeros(())
    sample_size = 0
    terms = LossTerms(objective=total, sample_size=0, feature_pen=float(feature_pen.detach()))
    for head in range(heads.num_heads):
        x, labels, mask = outputs[head], targets[head] + LABEL_OFFSET, masks[head]
        pad = padding[head]
        valid = ~pad if pad is not None else torch.ones_like(mask)
        for masked in (True, False):
            selected = valid & (mask if masked else ~mask)
            weight = pred_masked_weight if masked else pred_nomask_weight
            if weight == 0 and not masked:
                continue  # fairseq computes them for logging; skipping saves the projection of half the frames
            logits = heads.logits(head, x[selected], logit_temp)
            wanted = labels[selected]
            loss = F.cross_entropy(logits, wanted, reduction="sum")
            if weight > 0:
                total = total + weight * loss
            correct = count_correct(logits.detach(), wanted)
            if masked:
                terms.masked_loss.append(float(loss.detach()))
                terms.masked_correct.append(correct)
                terms.masked_count.append(int(wanted.numel()))
            else:
                terms.unmasked_loss.append(float(loss.detach()))
                terms.unmasked_correct.append(correct)
                terms.unmasked_count.append(int(wanted.numel()))
            if head == 0 and weight > 0:
                sample_size += int(wanted.numel())
    sample_size = max(sample_size, 1)
    objective = total / sample_size
    if feature_pen_weight:
        objective = objective + feature_pen_weight * feature_pen.float()
    terms.objective = objective
    terms.sample_size = sample_size
    return terms


def bits(nats: float) -> float:
    """fairseq logs losses in bits."""
    return nats / math.log(2)
