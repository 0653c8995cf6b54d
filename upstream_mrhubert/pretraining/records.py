"""``OUT/results.json`` and the per-step metrics a run logs (tensorboard and the JSON history alike).

One logged entry per ``run.log_every`` steps (training) and per validation, with fairseq's units: losses in bits
per masked 20 ms frame (``loss``: the whole objective; ``loss_m_<j>``: head j's masked cross-entropy over the
sample size), plus the per-frame masked cross-entropy and accuracy of each head (``ce_m_<j>``, ``acc_m_<j>``),
the learning rate and the gradient norm before clipping.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upstream_mrhubert import provenance
from upstream_mrhubert.atomic_io import write_json_atomic
from upstream_mrhubert.pretraining.prediction_heads import LossTerms, bits

RESULTS_FILE = "results.json"
PRETRAIN_SCHEMA = "mrsuperb.pretrain/1"  # not a downstream run's results.json: readers of those skip it
_VERSIONED = ("torch", "torchaudio", "numpy", "scikit-learn", "soundfile", "s3prl")


def versions() -> dict[str, str]:
    return {**provenance.package_versions(_VERSIONED), "platform": platform.platform()}


@dataclass
class MetricSums:
    """Sums of :class:`LossTerms` over micro-batches, steps and ranks; :meth:`summary` turns them into metrics."""

    heads: int
    objective: float = 0.0  # sum of objective * sample_size (so that averaging weighs frames as fairseq does)
    sample_size: int = 0
    feature_pen: float = 0.0
    batches: int = 0
    masked_loss: list[float] = field(default_factory=list)
    masked_correct: list[int] = field(default_factory=list)
    masked_count: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.masked_loss = self.masked_loss or [0.0] * self.heads
        self.masked_correct = self.masked_correct or [0] * self.heads
        self.masked_count = self.masked_count or [0] * self.heads

    def add(self, terms: LossTerms) -> None:
        self.objective += float(terms.objective.detach()) * terms.sample_size
        self.sample_size += terms.sample_size
        self.feature_pen += terms.feature_pen
        self.batches += 1
        for j in range(self.heads):
            self.masked_loss[j] += terms.masked_loss[j]
            self.masked_correct[j] += terms.masked_correct[j]
            self.masked_count[j] += terms.masked_count[j]

    def as_vector(self) -> list[float]:
        """Flat numbers, for one all-reduce across ranks."""
        return [
            self.objective,
            float(self.sample_size),
            self.feature_pen,
            float(self.batches),
            *self.masked_loss,
            *map(float, self.masked_correct),
            *map(float, self.masked_count),
        ]

    @classmethod
    def from_vector(cls, heads: int, values: list[float]) -> MetricSums:
        h = heads
        return cls(
            heads=h,
            objective=values[0],
            sample_size=int(values[1]),
            feature_pen=values[2],
            batches=int(values[3]),
            masked_loss=list(values[4 : 4 + h]),
            masked_correct=[int(v) for v in values[4 + h : 4 + 2 * h]],
            masked_count=[int(v) for v in values[4 + 2 * h : 4 + 3 * h]],
        )

    def summary(self) -> dict[str, float]:
        size = max(self.sample_size, 1)
        metrics = {"loss": bits(self.objective / size), "feature_pen": self.feature_pen / max(self.batches, 1)}
        for j in range(self.heads):
            count = max(self.masked_count[j], 1)
            metrics[f"loss_m_{j}"] = bits(self.masked_loss[j] / size)
            metrics[f"ce_m_{j}"] = bits(self.masked_loss[j] / count)
            metrics[f"acc_m_{j}"] = self.masked_correct[j] / count
        return metrics


def write_results(out: Path, payload: dict[str, Any]) -> Path:
    return write_json_atomic(out / RESULTS_FILE, {"schema": PRETRAIN_SCHEMA, **payload})
