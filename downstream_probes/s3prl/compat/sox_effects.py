"""Stand-in for ``torchaudio.sox_effects`` (removed in torchaudio 2.9), written with NumPy, SciPy and soundfile.

s3prl's Speech Commands (KS), MOS-prediction, SV, QbE datasets import ``apply_effects_file`` /
``apply_effects_tensor`` from ``torchaudio.sox_effects`` and pass SoX effect chains such as
``[["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]]``. This module implements the effects those recipes use
(``channels``, ``rate``, ``gain``, ``vol``, ``norm``, ``pad``, ``trim``, ``reverse``) with SoX's meaning. Any other
effect raises one ``ValueError`` naming it, instead of silently doing something else.

Samples are float32 in [-1, 1]; like SoX writing to its output, results are clipped to that range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
import torch

from downstream_probes.audio import read_audio
from upstream_mrhubert.errors import MrsuperbError

Effect = Sequence[str]


class UnsupportedSoxEffectError(MrsuperbError, ValueError):
    """An effect chain names a SoX effect this stand-in does not implement."""


def _db_to_amplitude(decibels: float) -> float:
    return 10.0 ** (decibels / 20.0)


def _peak(audio: np.ndarray) -> float:
    return float(np.max(np.abs(audio))) if audio.size else 0.0


def _parse_duration(text: str, sample_rate: int) -> int:
    """A SoX time spec in seconds (``1.5``), ``[[hh:]mm:]ss`` or samples (``800s``) -> number of samples."""
    text = text.strip()
    if text.endswith("s") and text[:-1].isdigit():
        return int(text[:-1])
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60.0 + float(part)
    return int(round(seconds * sample_rate))


def _channels(audio: np.ndarray, sample_rate: int, args: list[str]) -> tuple[np.ndarray, int]:
    """``channels N``: mix down to mono by averaging, or duplicate a mono signal to N channels."""
    target = int(args[0])
    current = audio.shape[0]
    if target == current:
        return audio, sample_rate
    if target == 1:
        return audio.mean(axis=0, keepdims=True), sample_rate
    if current == 1:
        return np.repeat(audio, target, axis=0), sample_rate
    raise UnsupportedSoxEffectError(f"sox effect 'channels {target}' on {current}-channel audio is not supported")


def _rate(audio: np.ndarray, sample_rate: int, args: list[str]) -> tuple[np.ndarray, int]:
    """``rate R``: band-limited polyphase resampling to R Hz (SoX uses a high-quality sinc filter too)."""
    options = [a for a in args if not a.startswith("-")]
    target = int(float(options[-1].rstrip("kK")) * (1000 if options[-1][-1] in "kK" else 1))
    if target == sample_rate:
        return audio, sample_rate
    from scipy.signal import resample_poly  # scipy.signal takes ~1 s to import: only when resampling

    ratio = Fraction(target, sample_rate)
    resampled = resample_poly(audio, ratio.numerator, ratio.denominator, axis=-1)
    return resampled.astype(np.float32), target


def _gain(audio: np.ndarray, sample_rate: int, args: list[str]) -> tuple[np.ndarray, int]:
    """``gain [-n] [dB]``: scale by dB; ``-n`` first normalises the peak to 0 dBFS."""
    decibels = 0.0
    normalise = False
    for arg in args:
        if arg == "-n":
            normalise = True
        elif arg.startswith("-") and not _is_number(arg):
            raise UnsupportedSoxEffectError(f"sox effect 'gain {arg}' is not supported (only -n and a dB value)")
        else:
            decibels = float(arg)
    if normalise:
        peak = _peak(audio)
        if peak > 0:
            audio = audio / peak
    return audio * _db_to_amplitude(decibels), sample_rate


def _vol(audio: np.ndarray, sample_rate: int, args: list[str]) -> tuple[np.ndarray, int]:
    """``vol GAIN [amplitude|dB]``: amplitude factor (default) or decibels (``-6dB`` or ``-6 dB``)."""
    value = args[0]
    kind = args[1] if len(args) > 1 else "amplitude"
    if value.lower().endswith("db"):
        value, kind = value[:-2], "dB"
    if kind.lower() == "db":
        return audio * _db_to_amplitude(float(value)), sample_rate
    if kind == "amplitude":
        return audio * float(value), sample_rate
    raise UnsupportedSoxEffectError(f"sox effect 'vol {' '.join(args)}' is not supported (amplitude or dB only)")


def _norm(audio: np.ndarray, sample_rate: int, args: list[str]) -> tuple[np.ndarray, int]:
    """``norm [dB]``: scale so that the peak is at dB dBFS (default 0)."""
    level = float(args[0]) if args else 0.0
    peak = _peak(audio)
    if peak == 0:
        return audio, sample_rate
    return audio * (_db_to_amplitude(level) / peak), sample_rate


def _pad(audio: np.ndarray, sample_rate: int, args: list[str]) -> tuple[np.ndarray, int]:
    """``pad BEFORE [AFTER]``: silence at the start and the end (SoX time specs)."""
    before = _parse_duration(args[0], sample_rate) if args else 0
    after = _parse_duration(args[1], sample_rate) if len(args) > 1 else 0
    return np.pad(audio, ((0, 0), (before, after))), sample_rate


def _trim(audio: np.ndarray, sample_rate: int, args: list[str]) -> tuple[np.ndarray, int]:
    """``trim START [LENGTH]``: keep LENGTH (default: the rest) from START."""
    start = _parse_duration(args[0], sample_rate)
    end = start + _parse_duration(args[1], sample_rate) if len(args) > 1 else audio.shape[1]
    return audio[:, start:end], sample_rate


def _reverse(audio: np.ndarray, sample_rate: int, args: list[str]) -> tuple[np.ndarray, int]:
    """``reverse``: play backwards."""
    return audio[:, ::-1].copy(), sample_rate


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_EFFECTS: dict[str, Callable[[np.ndarray, int, list[str]], tuple[np.ndarray, int]]] = {
    "channels": _channels,
    "rate": _rate,
    "gain": _gain,
    "vol": _vol,
    "norm": _norm,
    "pad": _pad,
    "trim": _trim,
    "reverse": _reverse,
}


def effect_names() -> list[str]:
    """Names of the effects this stand-in implements (torchaudio's function of the same name listed all of SoX's)."""
    return sorted(_EFFECTS)


def _apply_chain(audio: np.ndarray, sample_rate: int, effects: Sequence[Effect]) -> tuple[np.ndarray, int]:
    for effect in effects:
        if not effect:
            continue
        name, *args = (str(part) for part in effect)
        implementation = _EFFECTS.get(name)
        if implementation is None:
            raise UnsupportedSoxEffectError(
                f"sox effect {name!r} is not supported by mrsuperb's stand-in for torchaudio.sox_effects "
                f"(supported: {', '.join(effect_names())})"
            )
        audio, sample_rate = implementation(audio, sample_rate, args)
    return np.clip(audio, -1.0, 1.0).astype(np.float32), sample_rate


def apply_effects_tensor(
    tensor: torch.Tensor, sample_rate: int, effects: Sequence[Effect], channels_first: bool = True
) -> tuple[torch.Tensor, int]:
    """Apply a SoX effect chain to a [channels, time] (or [time, channels]) float tensor."""
    audio = tensor.detach().cpu().to(torch.float32).numpy()
    if audio.ndim == 1:
        audio = audio[None, :]
    elif not channels_first:
        audio = audio.T
    audio, sample_rate = _apply_chain(np.ascontiguousarray(audio), int(sample_rate), effects)
    out = torch.from_numpy(np.ascontiguousarray(audio))
    return (out if channels_first else out.T.contiguous()), sample_rate


def apply_effects_file(
    path: str | Path,
    effects: Sequence[Effect],
    normalize: bool = True,
    channels_first: bool = True,
    format: str | None = None,
) -> tuple[torch.Tensor, int]:
    """Read an audio file with soundfile and apply a SoX effect chain; float32 samples in [-1, 1]."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    if format is None:  # the one checked corpus reader; the chain converts rate and channels explicitly
        samples, sample_rate = read_audio(path, sample_rate=None, mono=False)
    else:
        audio, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True, format=format)
        samples = np.ascontiguousarray(audio.T)
    audio, sample_rate = _apply_chain(samples, sample_rate, effects)
    out = torch.from_numpy(np.ascontiguousarray(audio))
    return (out if channels_first else out.T.contiguous()), sample_rate


__all__ = ["UnsupportedSoxEffectError", "apply_effects_file", "apply_effects_tensor", "effect_names"]
