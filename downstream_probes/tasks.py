"""The task table: the one place that says which SUPERB tasks exist, how each maps onto s3prl, and its metrics.

* ``TASKS``: every SUPERB task of the project, in the order of arXiv 2410.23955 Table 2 (ASR, SF, SE, IC, KS, SD), with
  its s3prl expert, splits and metrics; ``METRICS``: each metric's direction. Corpora, the runner, the leaderboard
  and the pipelines all read them.
* ``upstream_identity``: the name that tells models apart (``mrhubert_local:<checkpoint stem>``), used by every
  reader that groups results by model.
* ``ScalarTap`` / ``metrics_from_scalars``: s3prl's experts report their metrics only through
  ``logger.add_scalar(f"{prefix}/{split}-{key}", value)`` inside ``log_records``; the probe runner taps those calls.

What a run writes (``results.json``, ``sweep.json``, ``protocol.json``, the evaluation log) is in
:mod:`downstream_probes.result_files`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MetricSpec:
    """A metric's facts, registered once here; the leaderboard, best-step selection, sweeps and the SUPERB
    protocol look them up."""

    key: str  # as results.json stores it
    higher_is_better: bool


METRICS: dict[str, MetricSpec] = {
    spec.key: spec
    for spec in (
        MetricSpec("wer", False),
        MetricSpec("cer", False),
        MetricSpec("slot_type_f1", True),
        MetricSpec("slot_value_cer", False),
        MetricSpec("pesq", True),
        MetricSpec("stoi", True),
        MetricSpec("si_sdr", True),
        MetricSpec("acc", True),
        MetricSpec("frame_acc", True),
        MetricSpec("frame_der", False),
        MetricSpec("der", False),
    )
}


def lower_is_better(metric: str) -> bool:
    """The direction of ``metric`` (one of ``METRICS``)."""
    return not METRICS[metric].higher_is_better


@dataclass(frozen=True)
class ReportedMetric:
    """How one of a task's metrics appears in the paper's Table 2 (a leaderboard column)."""

    key: str  # the column's key (``--sort``)
    metric: str  # a key of METRICS
    label: str
    percent: bool  # shown in percent
    digits: int
    stored_scale: float = 1.0  # display = stored * stored_scale (100 for metrics stored as fractions)


@dataclass(frozen=True)
class TaskSpec:
    """How a SUPERB task maps onto s3prl: its expert, splits, which of its scalars are our metrics, and which of them
    Table 2 reports."""

    task: str
    title: str  # as the paper's tables name it
    downstream: str  # s3prl's -d
    test_split: str
    dev_split: str
    metric_keys: dict[str, str]  # s3prl scalar key -> our metric key
    primary: str  # our metric key selecting the best step
    reported: tuple[ReportedMetric, ...]

    @property
    def lower_is_better(self) -> bool:
        """The direction of the primary metric."""
        return lower_is_better(self.primary)

    @property
    def reported_metrics(self) -> tuple[str, ...]:
        """The Table-2 metrics a finished run's test split must hold."""
        return tuple(reported.metric for reported in self.reported)


TASKS: dict[str, TaskSpec] = {
    spec.task: spec
    for spec in (
        TaskSpec(
            "asr",
            "ASR",
            "asr",
            "test-clean",
            "dev-clean",
            {"wer": "wer", "uer": "cer"},
            "wer",
            (ReportedMetric("asr_wer", "wer", "ASR WER", True, 2),),  # stored in percent by s3prl's asr expert
        ),
        TaskSpec(
            "sf",
            "SF",
            "ctc",
            "test",
            "dev",
            {"slot_type_f1": "slot_type_f1", "slot_value_cer": "slot_value_cer", "wer": "wer", "cer": "cer"},
            "slot_type_f1",
            (
                ReportedMetric("sf_f1", "slot_type_f1", "SF F1", True, 2, 100.0),
                ReportedMetric("sf_cer", "slot_value_cer", "SF CER", True, 2, 100.0),
            ),
        ),
        TaskSpec(
            "se",
            "SE",
            "enhancement_stft",
            "test",
            "dev",
            {"pesq": "pesq", "stoi": "stoi", "si_sdr": "si_sdr"},
            "pesq",
            (
                ReportedMetric("se_stoi", "stoi", "SE STOI", False, 3),
                ReportedMetric("se_pesq", "pesq", "SE PESQ", False, 2),
            ),
        ),
        TaskSpec(
            "ic",
            "IC",
            "fluent_commands",
            "test",
            "dev",
            {"acc": "acc"},
            "acc",
            (ReportedMetric("ic_acc", "acc", "IC Acc", True, 2, 100.0),),
        ),
        TaskSpec(
            "ks",
            "KS",
            "speech_commands",
            "test",
            "dev",
            {"acc": "acc"},
            "acc",
            (ReportedMetric("ks_acc", "acc", "KS Acc", True, 2, 100.0),),
        ),
        TaskSpec(
            "sd",
            "SD",
            "diarization",
            "test",
            "dev",
            {"acc": "frame_acc", "der": "frame_der"},
            "frame_acc",
            (
                ReportedMetric("sd_der", "der", "SD DER", True, 2, 100.0),
                ReportedMetric("sd_acc", "frame_acc", "SD Acc", True, 2, 100.0),
            ),
        ),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)  # Table 2's order
_BY_DOWNSTREAM = {spec.downstream: spec for spec in TASKS.values()}


def upstream_identity(upstream: str, checkpoint: str | os.PathLike[str] | None = None) -> str:
    """The identity that tells two models apart: the upstream name, plus the checkpoint's file stem for the
    local-file upstreams (``mrhubert_local -k tiny_b4a.pt`` -> ``mrhubert_local:tiny_b4a``).

    Named upstreams (``mrhubert_b4a``) stand for one released checkpoint each, so the name alone identifies them.
    Every reader that groups results by model (leaderboard rows, ``compare``) uses this one function.
    """
    if checkpoint and str(upstream).endswith("_local"):
        return f"{upstream}:{Path(str(checkpoint)).stem}"
    return str(upstream)


def task_for(downstream: str) -> TaskSpec | None:
    """Our task for an s3prl ``-d`` value or one of our task names (``asr``, ``sf``, ...); None if neither."""
    return TASKS.get(downstream) or _BY_DOWNSTREAM.get(downstream)


def metrics_from_scalars(spec: TaskSpec | None, split: str, scalars: dict[str, float]) -> dict[str, float]:
    """Our metrics out of the scalars one ``log_records(split)`` call logged (tags ``prefix/split-key``)."""
    by_key: dict[str, float] = {}
    for tag, value in scalars.items():
        _, _, rest = tag.rpartition("/")
        if rest.startswith(split + "-"):
            by_key[rest[len(split) + 1 :]] = float(value)
    if spec is None:
        return by_key
    return {ours: by_key[theirs] for theirs, ours in spec.metric_keys.items() if theirs in by_key}


class ScalarTap:
    """Wraps a tensorboard writer: forwards every call and keeps what ``add_scalar`` received."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self.scalars: dict[str, float] = {}

    def add_scalar(self, tag: str, scalar_value, global_step=None, *args, **kwargs):
        with contextlib.suppress(TypeError, ValueError):
            self.scalars[tag] = float(scalar_value)
        return self._writer.add_scalar(tag, scalar_value, global_step, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._writer, name)
