"""What a run leaves in ``OUT/checkpoints/``: fairseq checkpoints for every reader, one resume file for ``-a``.

``checkpoint_last.pt`` / ``checkpoint_best.pt`` are real fairseq MR-HuBERT checkpoints (``cfg``, ``model`` with the
pre-training heads, ``task_state`` with the label ``Dictionary``), written by the project's one fairseq writer, so
``mrhubert_local`` loads them and ``mrsuperb convert`` turns them into s3prl's format. "best" is the lowest
validation loss. ``checkpoint_init.pt`` holds the weights before the first step (the run's random-init twin, for
comparisons of trained and untrained networks of the same architecture).

``resume.pt`` holds what continuing needs and fairseq's file has no place for in our writer: the step, the model
and optimizer (and fp16 scaler) states, the best validation loss and the logged history. It is written first and
``checkpoint_last.pt`` right after, each atomically; a resumed run reads only ``resume.pt`` and rewrites the
fairseq file at its next save.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from upstream_mrhubert.atomic_io import write_bytes_atomic
from upstream_mrhubert.checkpoints.io import read_restricted_pickle, write_fairseq_checkpoint
from upstream_mrhubert.pretraining.config import PretrainConfig, PretrainRunError
from upstream_mrhubert.pretraining.network import MaskedPredictionModel
from upstream_mrhubert.pretraining.prediction_heads import dictionary_symbols

CHECKPOINT_DIR = "checkpoints"
LAST = "checkpoint_last.pt"
BEST = "checkpoint_best.pt"
INIT = "checkpoint_init.pt"  # the weights before the first step: the run's random-init twin
RESUME = "resume.pt"


@dataclass
class ResumeState:
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    best_valid: float | None
    history: list[dict[str, Any]]
    valid_history: list[dict[str, Any]]
    config: dict[str, Any]


def write_fairseq(path: Path, model: MaskedPredictionModel, config: PretrainConfig, clusters: int) -> Path:
    """``model`` as a fairseq MR-HuBERT checkpoint (heads included)."""
    model_cfg, task_cfg = config.fairseq_cfg()
    return write_fairseq_checkpoint(
        path,
        model_cfg=model_cfg,
        task_cfg=task_cfg,
        state_dict=model.fairseq_state_dict(),
        dictionaries_symbols=[dictionary_symbols(clusters)],
    )


def save(out: Path, state: ResumeState, model: MaskedPredictionModel, clusters: int, *, best: bool) -> None:
    """``resume.pt``, then ``checkpoint_last.pt`` (and ``checkpoint_best.pt`` when ``best``)."""
    folder = out / CHECKPOINT_DIR
    buffer = io.BytesIO()
    torch.save(state.__dict__, buffer)
    write_bytes_atomic(folder / RESUME, buffer.getvalue())
    write_fairseq(folder / LAST, model, model.config, clusters)
    if best:
        write_fairseq(folder / BEST, model, model.config, clusters)


def load_resume(out: Path) -> ResumeState | None:
    """The saved state of the run in ``out``, or None when it has none.

    Read through the allow-listed unpickler (nothing in the file can run code); its fields, their types and the
    finiteness of every weight are checked, so a damaged or planted file is one error naming it, never a traceback
    deep in the loop or a run resumed into NaN steps.

    Raises:
        PretrainRunError: the file is unreadable or is not a resume state of ours.
    """
    path = out / CHECKPOINT_DIR / RESUME
    if not path.exists():
        return None
    remedy = f"remove {path} (and {path.parent / LAST}) to start the run again, or choose another --out"
    raw = read_restricted_pickle(path, remedy=remedy)
    fields = {f.name for f in dataclasses.fields(ResumeState)}
    if not isinstance(raw, dict):
        raise PretrainRunError(f"{path} holds a {type(raw).__name__}, not a resume state; {remedy}")
    if set(raw) != fields:
        missing, extra = sorted(fields - set(raw)), sorted(map(str, set(raw) - fields))
        raise PretrainRunError(f"{path}: not a resume state (missing {missing}, unknown {extra}); {remedy}")
    expected = {"model": dict, "optimizer": dict, "history": list, "valid_history": list, "config": dict}
    for name, kind in expected.items():
        if not isinstance(raw[name], kind):
            raise PretrainRunError(f"{path}: {name} is a {type(raw[name]).__name__}, not a {kind.__name__}; {remedy}")
    if isinstance(raw["step"], bool) or not isinstance(raw["step"], int) or raw["step"] < 0:
        raise PretrainRunError(f"{path}: step {raw['step']!r} is not a step number; {remedy}")
    if raw["best_valid"] is not None and not isinstance(raw["best_valid"], float):
        raise PretrainRunError(f"{path}: best_valid {raw['best_valid']!r} is not a number; {remedy}")
    for name, value in raw["model"].items():
        if not isinstance(value, torch.Tensor):
            raise PretrainRunError(f"{path}: model weight {name} is a {type(value).__name__}; {remedy}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PretrainRunError(
                f"{path}: model weight {name} holds NaN or infinite values (saved from a diverged run); {remedy}"
            )
    return ResumeState(**raw)
