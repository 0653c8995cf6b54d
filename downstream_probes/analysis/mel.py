"""The log-mel features that frame-level CCA compares representations with (Pasad et al. 2023 settings).

Peak-normalise the waveform to 0.999, pre-emphasis 0.97, magnitude STFT (n_fft 2048, hop 160, window 400,
periodic Hann centred in the FFT frame, signal zero-padded by n_fft/2 at both ends), 80 Slaney mel filters from
50 Hz to Nyquist (Slaney area normalisation), amplitude in dB (floor 1e-5, top 80 dB), then ``dB / 80 + 1``.
These are librosa's ``melspectrogram(power=1)`` and ``amplitude_to_db`` defaults; computed here with NumPy and
torchaudio's filter bank so that librosa is not needed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import lfilter

from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.errors import UsageError

N_FFT = 2048
HOP = 160  # 10 ms
WINDOW = 400  # 25 ms
N_MELS = 80
F_MIN = 50.0
TOP_DB = 80.0
AMPLITUDE_FLOOR = 1e-5
PEAK = 0.999
PREEMPHASIS = 0.97


@lru_cache(maxsize=4)
def mel_filters(
    sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, f_min: float = F_MIN
) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` Slaney mel filter bank (librosa's default)."""
    import torchaudio.functional

    filters = torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, f_min, sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
    )
    return filters.numpy().astype(np.float64).T


def _window() -> np.ndarray:
    periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)
    padded = np.zeros(N_FFT)
    left = (N_FFT - WINDOW) // 2
    padded[left : left + WINDOW] = periodic_hann
    return padded


def log_mel(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(frames, 80)`` log-mel features of a mono waveform, one frame per 10 ms (``1 + len // 160`` frames)."""
    if sample_rate != SAMPLE_RATE:
        raise UsageError(f"log-mel features expect {SAMPLE_RATE} Hz audio, got {sample_rate} Hz; resample it first")
    signal = np.asarray(waveform, dtype=np.float64).reshape(-1)
    peak = np.max(np.abs(signal)) if signal.size else 0.0
    if peak == 0.0:
        raise UsageError("the waveform is silent (all zeros): log-mel features are undefined")
    signal = lfilter([1.0, -PREEMPHASIS], [1.0], signal / peak * PEAK)
    padded = np.pad(signal, N_FFT // 2)
    n_frames = 1 + len(signal) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_frames]
    magnitude = np.abs(np.fft.rfft(frames * _window(), axis=1))
    mel = magnitude @ mel_filters().T
    decibels = 20.0 * np.log10(np.maximum(mel, AMPLITUDE_FLOOR))
    decibels = np.maximum(decibels, decibels.max() - TOP_DB)
    return decibels / TOP_DB + 1.0


def frames_at_stride(features: np.ndarray, stride: int, n_frames: int) -> np.ndarray:
    """Every ``stride / 160``-th 10 ms frame, the first ``n_frames`` of them: the frames of a model state with
    ``stride`` samples per frame (the reference takes every other frame for 20 ms states)."""
    if stride % HOP:
        raise UsageError(f"a stride of {stride} samples is not a whole number of 10 ms mel frames")
    picked = features[:: stride // HOP]
    if len(picked) < n_frames:
        raise UsageError(f"{len(picked)} mel frames at stride {stride} for {n_frames} model frames")
    return picked[:n_frames]
