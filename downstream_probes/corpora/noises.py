"""Synthetic background noises (float64 at 16 kHz, unit RMS) for Speech Commands' ``_background_noise_`` and the
VoiceBank-DEMAND-style noisy speech.

Kinds (``NOISE_KINDS``): ``white``, ``pink`` (1/f), ``brown`` (1/f^2), ``hum`` (50 Hz mains hum with harmonics and a
little hiss), ``fan`` (band-passed noise with a slow rotor modulation), ``babble`` (several voices talking at once;
needs the speech passed in). Every generator draws only from the ``rng`` it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import butter, sosfilt

from downstream_probes.corpora.espeak import SAMPLE_RATE
from upstream_mrhubert.errors import UsageError

NOISE_KINDS: tuple[str, ...] = ("white", "pink", "brown", "hum", "fan", "babble")


def _unit_rms(signal: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(signal**2))) or 1.0
    return signal / rms


def _coloured(samples: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (shaped in the frequency domain)."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples, d=1.0 / SAMPLE_RATE)
    frequencies[0] = frequencies[1] if samples > 1 else 1.0
    spectrum *= frequencies ** (-exponent / 2)
    return np.fft.irfft(spectrum, n=samples)


def _hum(samples: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(samples) / SAMPLE_RATE
    base = 50.0 * (1 + rng.uniform(-0.002, 0.002))
    tone = sum(
        (np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 8)), np.zeros(samples)
    )
    return _unit_rms(tone) + 0.05 * rng.standard_normal(samples)


def _fan(samples: int, rng: np.random.Generator) -> np.ndarray:
    low = rng.uniform(150, 300)
    sos = butter(4, [low, low * rng.uniform(4, 8)], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    band = sosfilt(sos, rng.standard_normal(samples))
    t = np.arange(samples) / SAMPLE_RATE
    rotor = 1.0 + 0.3 * np.sin(2 * np.pi * rng.uniform(3, 12) * t)
    return band * rotor


def _babble(samples: int, rng: np.random.Generator, speech: Sequence[np.ndarray]) -> np.ndarray:
    if not speech:
        raise UsageError("babble noise needs speech to mix")
    mixture = np.zeros(samples)
    for voice in speech:
        voice = _unit_rms(voice.astype(np.float64))
        offset = int(rng.integers(len(voice)))
        looped = np.resize(np.roll(voice, -offset), samples)
        mixture += looped * rng.uniform(0.6, 1.0)
    return mixture


def make_noise(kind: str, samples: int, rng: np.random.Generator, speech: Sequence[np.ndarray] = ()) -> np.ndarray:
    """``samples`` of noise ``kind`` at unit RMS."""
    if kind == "white":
        signal = rng.standard_normal(samples)
    elif kind == "pink":
        signal = _coloured(samples, rng, 1.0)
    elif kind == "brown":
        signal = _coloured(samples, rng, 2.0)
    elif kind == "hum":
        signal = _hum(samples, rng)
    elif kind == "fan":
        signal = _fan(samples, rng)
    elif kind == "babble":
        signal = _babble(samples, rng, speech)
    else:
        raise UsageError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    return _unit_rms(signal - signal.mean())
