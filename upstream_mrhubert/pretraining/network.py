"""The model being pre-trained: our inference network in training mode plus the prediction heads.

The forward is fairseq's ``MultiresHubertModel.forward`` with ``mask=True``: CNN features (their gradient scaled by
``feature_grad_mult``; their mean square is the feature penalty), LayerNorm + projection + input dropout, span
masking with the mask embedding, the encoder/decoder stack, then per head the resolution's output cropped to its
sub-sampled targets (:func:`targets.subsample_targets`) and the criterion (:func:`prediction_heads.criterion`).

The network itself is :class:`upstream_mrhubert.model.MultiresHubert`, the class every checkpoint is read back
into, so the weights written after pre-training are the weights that inference runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from upstream_mrhubert.model import MultiresHubert
from upstream_mrhubert.pretraining.config import PretrainConfig
from upstream_mrhubert.pretraining.masking import compute_span_mask
from upstream_mrhubert.pretraining.prediction_heads import LossTerms, PredictionHeads, criterion
from upstream_mrhubert.pretraining.targets import subsample_targets


class _ScaleGradient(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (fairseq's ``GradMultiply``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x if scale == 1.0 else _ScaleGradient.apply(x, scale)


class MaskedPredictionModel(nn.Module):
    """``network`` (a :class:`MultiresHubert`) and ``heads`` (a :class:`PredictionHeads`) trained together."""

    def __init__(self, config: PretrainConfig, clusters: int) -> None:
        super().__init__()
        self.config = config
        model_cfg, task_cfg = config.fairseq_cfg()
        self.network = MultiresHubert.from_config(model_cfg, task_cfg, pre_residual=config.pre_residual)
        net = self.network.config
        self.heads = PredictionHeads(net.embed_dim, config.model.final_dim, clusters, config.num_heads_of_loss)
        base = net.resolution_strides[0]
        # 20 ms frames per frame of each resolution (fairseq's feat2tar_ratios with use_single_target)
        self.target_ratios = [stride // base for stride in net.resolution_strides]

    def fairseq_state_dict(self) -> dict[str, torch.Tensor]:
        """Every weight under fairseq's keys: the inference network's plus the heads'."""
        return {**self.network.fairseq_state_dict(), **self.heads.state_dict()}

    def forward(self, waveforms: torch.Tensor, targets: torch.Tensor, rng: np.random.Generator) -> LossTerms:
        """The criterion's terms for one batch.

        Args:
            waveforms: [B, L] equal-length crops (no padding).
            targets: [B, T0] 20 ms cluster ids.
            rng: the generator of this step's masks.
        """
        m, loss = self.config.model, self.config.loss
        if m.feature_grad_mult > 0:
            features = scale_gradient(self.network.conv_features(waveforms), m.feature_grad_mult)
        else:
            with torch.no_grad():
                features = self.network.conv_features(waveforms)
        feature_pen = features.float().pow(2).mean()
        x = self.network.project_features(features)
        batch, frames = x.shape[:2]
        mask = compute_span_mask(
            (batch, frames),
            None,
            mask_prob=self.config.masking.mask_prob,
            mask_length=self.config.masking.mask_length,
            min_masks=self.config.masking.min_masks,
            rng=rng,
        ).to(x.device)
        x = self.heads.apply_mask(x, mask)
        encoded = self.network.encode(x, None, mask_indices=mask, include_block_outputs=False)

        outputs, head_targets, head_masks, head_padding = [], [], [], []
        for head in range(self.heads.num_heads):
            out = encoded.resolution_outputs[head]
            wanted, kept = subsample_targets(targets, self.target_ratios[head], out.size(1))
            outputs.append(out[:, :kept])
            head_targets.append(wanted)
            resolution_mask = encoded.mask_indices[head]
            assert resolution_mask is not None
            head_masks.append(resolution_mask[:, :kept])
            padding = encoded.padding_masks[head]
            head_padding.append(padding[:, :kept] if padding is not None else None)
        return criterion(
            self.heads,
            outputs,
            head_targets,
            head_masks,
            head_padding,
            feature_pen,
            logit_temp=loss.logit_temp,
            pred_masked_weight=loss.pred_masked_weight,
            pred_nomask_weight=loss.pred_nomask_weight,
            feature_pen_weight=loss.feature_pen_weight,
        )
