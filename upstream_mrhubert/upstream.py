"""The s3prl upstream interface over our models (MR-HuBERT and the HuBERT baseline).

What s3prl 0.4.18 needs from an upstream (``s3prl/downstream/runner.py``, ``s3prl/upstream/interfaces.py``):
- it is called as ``upstream(wavs)`` with a list of 1-D 16 kHz float tensors (on the run's device) and returns a
  dict; the ``Featurizer`` reads ``hidden_states`` (a list or tuple of [B, T, D] tensors, all with the same T) for
  its weighted sum, or one item of it with ``-l <index>``;
- ``get_downsample_rates(key)`` (the runner asserts the attribute exists): samples per output frame, 320 here;
- ordinary ``nn.Module`` behaviour (``.to``, ``.eval``/``.train``, ``state_dict`` for ``-f``).
Subclassing s3prl's ``UpstreamBase`` is not required: it only adds forward hooks, and we return the states ourselves.

Every state is brought to 20 ms the way s3prl's MR-HuBERT expert does it: lower-resolution states are repeated
(``repeat_interleave`` by stride / 320) and all are cropped to the shortest. ``native_states`` gives each state at
its own rate, with that rate, for analysis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from upstream_mrhubert.config import MIN_SAMPLES
from upstream_mrhubert.errors import MrsuperbError, UsageError
from upstream_mrhubert.layer_names import LayerState
from upstream_mrhubert.precision import DEFAULT_PRECISION, autocast, check_precision

OUTPUT_STRIDE = 320  # samples per output frame: 20 ms at 16 kHz


class LayeredModel(Protocol):
    """What the upstream needs from a model (``MultiresHubert``, ``HubertBaseline``)."""

    def __call__(
        self, waveforms: torch.Tensor, padding_mask: torch.Tensor | None = None, *, include_block_outputs: bool = False
    ) -> list[LayerState]: ...

    def layer_names(self, include_block_outputs: bool = False) -> list[str]: ...


class WaveformError(MrsuperbError, ValueError):
    """A waveform the upstream cannot take (wrong shape, too short, not finite...)."""


def validate_waveforms(wavs: Any) -> list[torch.Tensor]:
    """Check a batch as s3prl passes it (a list of 1-D float tensors of 16 kHz audio); one clear error otherwise."""
    if isinstance(wavs, torch.Tensor):
        raise WaveformError(
            f"expected a list of 1-D waveform tensors, got one tensor of shape {tuple(wavs.shape)}; "
            "pass list(batch) for a [B, L] batch of equal-length waveforms"
        )
    if not isinstance(wavs, Sequence):
        raise WaveformError(f"expected a list of 1-D 16 kHz waveform tensors, got a {type(wavs).__name__}")
    if len(wavs) == 0:
        raise WaveformError("expected a non-empty list of 1-D 16 kHz waveform tensors, got an empty batch")
    for index, wav in enumerate(wavs):
        where = f"waveform {index} of the batch"
        if not isinstance(wav, torch.Tensor):
            raise WaveformError(f"{where} is a {type(wav).__name__}; pass torch tensors (torch.as_tensor(wav))")
        if wav.dim() != 1:
            hint = (
                "it looks multi-channel (stereo?): mix it down to mono, e.g. wav.mean(dim=0), or pick one channel"
                if wav.dim() == 2 and min(wav.shape) <= 8
                else "pass one 1-D tensor of samples per utterance"
            )
            raise WaveformError(f"{where} has shape {tuple(wav.shape)}, expected 1-D (samples,): {hint}")
        if not wav.is_floating_point():
            raise WaveformError(
                f"{where} has dtype {wav.dtype}; pass float samples in [-1, 1] (e.g. int16 PCM / 32768)"
            )
        if wav.numel() == 0:
            raise WaveformError(f"{where} is empty; drop it from the batch")
        if wav.numel() < MIN_SAMPLES:
            raise WaveformError(
                f"{where} has only {wav.numel()} samples; at least {MIN_SAMPLES} (25 ms at 16 kHz) are needed for "
                "one frame: pad it or drop it"
            )
        if wav.device != wavs[0].device:
            raise WaveformError(f"{where} is on {wav.device} but waveform 0 is on {wavs[0].device}; use one device")
    finite = torch.stack([torch.isfinite(wav).all() for wav in wavs])
    if not bool(finite.all()):  # one device sync for the whole batch; locate the culprit only on failure
        index = int((~finite).nonzero()[0])
        first_bad = int((~torch.isfinite(wavs[index])).nonzero()[0])
        raise WaveformError(
            f"waveform {index} of the batch contains NaN or inf (first at sample {first_bad}); clean or drop that audio"
        )
    return list(wavs)


def pad_batch(wavs: Sequence[torch.Tensor], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Right-pad to [B, L] with zeros; the padding mask (True = padding) is None when nothing was padded."""
    lengths = torch.tensor([wav.numel() for wav in wavs], device=wavs[0].device)
    padded = pad_sequence([wav.to(dtype) for wav in wavs], batch_first=True)
    if bool((lengths == padded.size(1)).all()):
        return padded, None
    positions = torch.arange(padded.size(1), device=padded.device)
    return padded, positions[None, :] >= lengths[:, None]


def align_to_output_rate(states: Sequence[LayerState], stride: int = OUTPUT_STRIDE) -> list[torch.Tensor]:
    """Every state at ``stride``: repeat each frame stride_state / stride times, then crop all to the shortest."""
    aligned = []
    for state in states:
        if state.stride % stride:
            raise UsageError(
                f"state {state.name} has a stride of {state.stride} samples, not a multiple of {stride}: "
                "s3prl cannot align it to one frame rate"
            )
        factor = state.stride // stride
        aligned.append(state.features.repeat_interleave(factor, dim=1) if factor > 1 else state.features)
    shortest = min(features.size(1) for features in aligned)
    return [features[:, :shortest] for features in aligned]


class S3prlUpstream(nn.Module):
    """An s3prl upstream over one of our models, every layer named (``layer_names``) and at 20 ms.

    ``include_block_outputs`` adds the true block outputs after the residual sums (named distinctly by the model);
    off by default so the paper's layers are the default set. ``pre_residual`` is recorded here; the model was
    built with it. ``precision`` (:mod:`upstream_mrhubert.precision`) runs the forward under autocast; the states
    come back in float32 either way.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        name: str = "",
        checkpoint_path: str | Path | None = None,
        include_block_outputs: bool = False,
        pre_residual: bool = False,
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        super().__init__()
        check_precision(precision)
        self.model = model
        self.name = name
        self.checkpoint_path = str(checkpoint_path) if checkpoint_path is not None else None
        self.include_block_outputs = include_block_outputs
        self.pre_residual = pre_residual
        self.precision = precision
        names = model.layer_names  # MultiresHubert and HubertBaseline define it; nn.Module's typing does not know
        self.layer_names: list[str] = list(names(include_block_outputs=include_block_outputs))  # type: ignore[operator]

    def get_downsample_rates(self, key: str) -> int:
        """Samples per frame of every feature this upstream returns (all are at 20 ms)."""
        del key
        return OUTPUT_STRIDE

    def native_states(self, wavs: Sequence[torch.Tensor]) -> list[LayerState]:
        """Every state at its own rate (``LayerState.stride`` samples per frame), in ``layer_names`` order."""
        wavs = validate_waveforms(wavs)
        dtype = next(self.model.parameters()).dtype
        padded, padding_mask = pad_batch(wavs, dtype)
        with autocast(self.precision, padded.device):
            states = self.model(padded, padding_mask, include_block_outputs=self.include_block_outputs)
        states = [replace(state, features=state.features.float()) for state in states]
        names = [state.name for state in states]
        if names != self.layer_names:
            raise RuntimeError(f"the model returned states {names}, but announced {self.layer_names}")
        return states

    def forward(self, wavs: Sequence[torch.Tensor]) -> dict[str, Any]:
        """s3prl's upstream call: ``hidden_states`` (a list, ``layer_names`` order) and ``last_hidden_state``."""
        hidden_states = align_to_output_rate(self.native_states(wavs))
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1]}

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, layers={len(self.layer_names)}, include_block_outputs={self.include_block_outputs}, "
            f"precision={self.precision}"
        )
