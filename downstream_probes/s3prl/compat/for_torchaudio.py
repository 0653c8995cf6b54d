"""Fixes for torchaudio 2.9+ (``set_audio_backend``, ``load``/``info``/``save`` and ``sox_effects`` removed or
moved to TorchCodec): s3prl's datasets read and write audio through soundfile instead."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass

import numpy as np
import soundfile
import torch
import torch.utils.data

from downstream_probes.audio import read_audio
from downstream_probes.s3prl.compat.marks import is_ours, mark


def restore_set_audio_backend() -> None:
    """``torchaudio.set_audio_backend`` was removed in torchaudio 2.9.

    ``s3prl.hub`` imports upstreams (byol_s, ...) that call ``torchaudio.set_audio_backend("sox_io")`` at import
    time and ``s3prl.run_downstream.main`` calls it too, so importing the hub fails with AttributeError. There is a
    single I/O path now (soundfile, see ``load_audio_with_soundfile``), so the call becomes a no-op;
    ``get_audio_backend`` reports ``"soundfile"``.
    """
    import torchaudio

    if not is_ours(getattr(torchaudio, "set_audio_backend", None)):

        @mark
        def set_audio_backend(backend: str | None) -> None:
            """Accepted for compatibility; audio I/O always goes through soundfile."""

        torchaudio.set_audio_backend = set_audio_backend
    if not is_ours(getattr(torchaudio, "get_audio_backend", None)):
        torchaudio.get_audio_backend = mark(lambda: "soundfile")
    if not is_ours(getattr(torchaudio, "list_audio_backends", None)):
        torchaudio.list_audio_backends = mark(lambda: ["soundfile"])


@dataclass(frozen=True)
class AudioMetaData:
    """What ``torchaudio.info`` used to return."""

    sample_rate: int
    num_frames: int
    num_channels: int
    bits_per_sample: int
    encoding: str


_SUBTYPE_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}
_SUBTYPE_ENCODING = {
    "PCM_S8": "PCM_S",
    "PCM_U8": "PCM_U",
    "PCM_16": "PCM_S",
    "PCM_24": "PCM_S",
    "PCM_32": "PCM_S",
    "FLOAT": "PCM_F",
    "DOUBLE": "PCM_F",
}


def _audio_path(uri) -> str:
    if hasattr(uri, "read"):
        return uri
    path = os.fspath(uri)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    return path


@mark
def soundfile_load(
    uri,
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format: str | None = None,
    buffer_size: int = 4096,
    backend: str | None = None,
) -> tuple[torch.Tensor, int]:
    """``torchaudio.load`` through soundfile: float32 in [-1, 1] ([channels, time]) and the sample rate.

    A file named by its path is read by :func:`downstream_probes.audio.read_audio`, so s3prl's datasets
    get 16 kHz mono audio or an error naming the file (a wrong rate was used silently before).

    With ``normalize=False`` integer PCM comes back as int16/int32 like torchaudio's sox backend did.
    """
    source = _audio_path(uri)
    dtype = "float32"
    if not normalize:
        subtype = soundfile.info(source).subtype if isinstance(source, str) else "FLOAT"
        dtype = {"PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32"}.get(subtype, "float32")
    frames = -1 if num_frames is None or num_frames < 0 else int(num_frames)
    if isinstance(source, str) and format is None:
        # Corpus files: the one checked reader (16 kHz, mono, long enough, finite; errors name the file).
        samples, sample_rate = read_audio(source, frame_offset=int(frame_offset), num_frames=frames, dtype=dtype)
        return torch.from_numpy(samples if channels_first else np.ascontiguousarray(samples.T)), sample_rate
    data, sample_rate = soundfile.read(
        source, start=int(frame_offset), frames=frames, dtype=dtype, always_2d=True, format=format
    )
    tensor = torch.from_numpy(np.ascontiguousarray(data.T if channels_first else data))
    return tensor, int(sample_rate)


@mark
def soundfile_info(
    uri, format: str | None = None, buffer_size: int = 4096, backend: str | None = None
) -> AudioMetaData:
    """``torchaudio.info`` through soundfile."""
    info = soundfile.info(_audio_path(uri))
    return AudioMetaData(
        sample_rate=int(info.samplerate),
        num_frames=int(info.frames),
        num_channels=int(info.channels),
        bits_per_sample=_SUBTYPE_BITS.get(info.subtype, 0),
        encoding=_SUBTYPE_ENCODING.get(info.subtype, "UNKNOWN"),
    )


@mark
def soundfile_save(
    uri,
    src: torch.Tensor,
    sample_rate: int,
    channels_first: bool = True,
    format: str | None = None,
    encoding: str | None = None,
    bits_per_sample: int | None = None,
    buffer_size: int = 4096,
    backend: str | None = None,
    compression=None,
) -> None:
    """``torchaudio.save`` through soundfile (16-bit PCM when asked for 16 bits or given int16, else 32-bit float)."""
    data = src.detach().cpu()
    data = data.T if channels_first and data.ndim == 2 else data
    if bits_per_sample == 16 or data.dtype == torch.int16:
        subtype = "PCM_16"
    elif bits_per_sample in (24, 32) and encoding == "PCM_S":
        subtype = f"PCM_{bits_per_sample}"
    else:
        subtype = "FLOAT"
    soundfile.write(os.fspath(uri), data.numpy(), int(sample_rate), subtype=subtype, format=format)


def load_audio_with_soundfile() -> None:
    """``torchaudio.load``/``save`` need torchcodec + FFmpeg since torchaudio 2.9; ``torchaudio.info`` is gone.

    s3prl's ASR, SF, IC datasets call ``torchaudio.load`` (and ``s3prl.util.audio_info`` calls ``torchaudio.info``);
    without FFmpeg shared libraries they fail at the first utterance. soundfile (libsndfile, bundled in its wheel)
    reads the WAV/FLAC files every SUPERB corpus uses, so the three functions are routed through it.
    """
    import torchaudio

    torchaudio.load = soundfile_load
    torchaudio.info = soundfile_info
    torchaudio.save = soundfile_save


def provide_sox_effects() -> None:
    """``torchaudio.sox_effects`` was removed in torchaudio 2.9.

    s3prl's Speech Commands dataset (KS) and the MOS-prediction upstream import ``apply_effects_file`` /
    ``apply_effects_tensor`` from it at import time. ``downstream_probes.s3prl.compat.sox_effects`` implements the SoX effects
    those recipes use and is installed under the old module name.
    """
    import torchaudio

    standin = importlib.import_module("downstream_probes.s3prl.compat.sox_effects")
    sys.modules["torchaudio.sox_effects"] = standin
    torchaudio.sox_effects = standin
