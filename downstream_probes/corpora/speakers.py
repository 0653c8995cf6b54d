"""The pool of synthetic speakers: espeak-ng voice variants crossed with base pitch and speaking rate.

A speaker is a ``Voice`` (variant, pitch, pitch range, rate). ``draw_voices`` hands out distinct speakers, using
every variant once before re-using a variant with another pitch/rate, so small corpora get the most different
voices. Each utterance then jitters the rate a little (``utterance_voice``), as people do.
"""

from __future__ import annotations

import itertools

import numpy as np

from downstream_probes.corpora.espeak import Voice
from upstream_mrhubert.errors import UsageError

MALE_VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "klatt", "klatt3")
FEMALE_VARIANTS: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5")
_PITCHES = {"male": (45, 30, 60), "female": (55, 40, 70)}
_RATES = (175, 160, 190)
_PITCH_RANGES = (50, 35, 65)
RATE_JITTER = 0.06  # per-utterance rate varies by up to +-6 %


def pool_size(gender: str | None = None) -> int:
    """How many distinct speakers ``draw_voices`` can hand out."""
    per_variant = len(_RATES) * len(_PITCHES["male"])
    male, female = len(MALE_VARIANTS) * per_variant, len(FEMALE_VARIANTS) * per_variant
    return {"male": male, "female": female, None: male + female}[gender]


def _rounds(gender: str, variants: tuple[str, ...], rng: np.random.Generator) -> list[Voice]:
    """All voices of one gender: round k gives every variant its k-th (pitch, rate) setting, variants shuffled."""
    settings = itertools.product(_PITCHES[gender], _RATES)
    voices = []
    for round_index, (pitch, rate) in enumerate(settings):
        pitch_range = _PITCH_RANGES[round_index % len(_PITCH_RANGES)]
        order = rng.permutation(len(variants))
        voices += [Voice(variants[i], gender, pitch=pitch, pitch_range=pitch_range, rate=rate) for i in order]
    return voices


def draw_voices(rng: np.random.Generator, genders: list[str | None]) -> list[Voice]:
    """One distinct voice per entry of ``genders`` ("male", "female", or None for alternating while both last).
    Asking for more voices than ``pool_size`` is an error."""
    male = _rounds("male", MALE_VARIANTS, rng)
    female = _rounds("female", FEMALE_VARIANTS, rng)
    voices = []
    flip = bool(rng.integers(2))
    for wanted in genders:
        if wanted is None:
            wanted = "female" if flip else "male"
            flip = not flip
            if not (male if wanted == "male" else female):  # one gender used up: take the other
                wanted = "female" if wanted == "male" else "male"
        source = male if wanted == "male" else female
        if not source:
            raise UsageError(f"the synthetic speaker pool has only {pool_size(wanted)} {wanted} voices")
        voices.append(source.pop(0))
    return voices


def utterance_voice(voice: Voice, rng: np.random.Generator) -> Voice:
    """The speaker's voice with this utterance's speaking rate."""
    return voice.with_rate(round(voice.rate * (1.0 + rng.uniform(-RATE_JITTER, RATE_JITTER))))
