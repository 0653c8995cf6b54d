"""The one audio reader of a run, and its error.

``read_audio`` is how every corpus audio file is read in a run: s3prl's datasets call ``torchaudio.load``, which the
compatibility layer routes here. It refuses, naming the file, what would otherwise train silently on wrong input or
fail deep inside a batch: another sample rate (an 8 kHz file would be used as 16 kHz), several channels, a clip
shorter than one frame of the upstream's CNN, NaN or infinite samples, and bytes that are not audio. It sits beside
the task table, before the s3prl glue and the corpora in the data flow, because both read audio through it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from upstream_mrhubert.audio import CHANNELS, SAMPLE_RATE
from upstream_mrhubert.config import MIN_SAMPLES
from upstream_mrhubert.errors import MrsuperbError


class CorpusInputError(MrsuperbError, ValueError):
    """A corpus file a run cannot use; the message names the file and says what to do."""


class AudioError(CorpusInputError):
    """An audio file that is unreadable, or not 16 kHz mono, long enough and finite."""


def _open_info(path: Path) -> Any:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise AudioError(f"audio file {path} {what}; check the corpus paths in the config")
    try:
        return soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(
            f"{path} is not a readable audio file ({error}); re-create or re-download it, or drop its row"
        ) from None


def check_audio_header(
    path: str | os.PathLike[str], *, sample_rate: int = SAMPLE_RATE, min_samples: int = MIN_SAMPLES
) -> None:
    """Check an audio file's header (rate, channels, length) without reading its samples."""
    path = Path(path)
    info = _open_info(path)
    _check_format(path, int(info.samplerate), int(info.channels), int(info.frames), sample_rate, min_samples)


def _check_format(
    path: Path, rate: int, channels: int, frames: int, sample_rate: int | None, min_samples: int, mono: bool = True
) -> None:
    if sample_rate is not None and rate != sample_rate:
        raise AudioError(
            f"{path} is sampled at {rate} Hz, but the upstreams take {sample_rate} Hz audio; resample the corpus "
            f"(e.g. sox in.wav -r {sample_rate} out.wav) instead of letting it be read as {sample_rate} Hz"
        )
    if mono and channels != CHANNELS:
        raise AudioError(f"{path} has {channels} channels; SUPERB tasks read mono audio: mix it down or pick one")
    if frames == 0:
        raise AudioError(f"{path} holds no samples (too short); remove its row or replace the file")
    if frames < min_samples:
        raise AudioError(
            f"{path} has {frames} samples: too short for one {min_samples}-sample frame of the upstream's CNN "
            f"({1000 * min_samples / (sample_rate or rate):.0f} ms); remove its row or pad the file"
        )


def read_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = SAMPLE_RATE,
    mono: bool = True,
    min_samples: int = MIN_SAMPLES,
    frame_offset: int = 0,
    num_frames: int = -1,
    dtype: str = "float32",
) -> tuple[np.ndarray, int]:
    """Read a corpus audio file after checking it.

    Args:
        path: the audio file (any format libsndfile reads: WAV, FLAC, ...).
        sample_rate: the rate the file must have (None: any, for readers that resample explicitly).
        mono: whether the file must have one channel (False: any, for readers that mix down explicitly).
        min_samples: the fewest samples the whole file may have.
        frame_offset, num_frames: the part to read (``num_frames < 0``: to the end).
        dtype: ``float32`` (samples in [-1, 1]) or an integer type for raw PCM.

    Returns:
        The samples as ``[channels, time]`` (one channel unless ``mono=False``) and the sample rate.

    Raises:
        AudioError: naming the file, for anything but a readable, finite, long enough mono file at ``sample_rate``.
    """
    path = Path(path)
    info = _open_info(path)
    _check_format(path, int(info.samplerate), int(info.channels), int(info.frames), sample_rate, min_samples, mono)
    frames = -1 if num_frames is None or num_frames < 0 else int(num_frames)
    try:
        data, rate = soundfile.read(str(path), start=int(frame_offset), frames=frames, dtype=dtype, always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
        raise AudioError(f"{path} could not be read ({error}); the file is damaged: re-create it") from None
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path} holds {bad} NaN/infinite sample(s); the file is damaged: re-create it")
    return np.ascontiguousarray(data.T), int(rate)
