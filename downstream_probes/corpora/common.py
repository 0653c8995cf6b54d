"""What every corpus builder shares: the build context, seeded randomness, split sizes, audio finishing and writing,
and the result a builder hands back for the manifest.

Randomness: ``BuildContext.rng(*key)`` derives an independent generator from the corpus seed and a key (task, split,
utterance number...), so one part of a corpus never shifts the random draws of another.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from downstream_probes.corpora.espeak import SAMPLE_RATE, Synthesis, SynthesisRequest, Voice, synthesize_many
from upstream_mrhubert.errors import MrsuperbError


class CorpusError(MrsuperbError, ValueError):
    """Bad input to a corpus build: unknown task, occupied output folder, too few utterances."""


@dataclass(frozen=True)
class PlannedUtterance:
    """An utterance a builder has planned: the split it goes to, its speaker and what espeak-ng is to say. Each
    corpus adds the fields of its own layout."""

    split: str
    speaker: str
    request: SynthesisRequest


@dataclass(frozen=True)
class BuildContext:
    """``work``: the folder being written (a temporary sibling of the destination); ``final``: the absolute
    destination, for the files that must hold absolute paths (Libri2Mix's metadata)."""

    task: str
    work: Path
    final: Path
    seed: int
    utterances: int
    workers: int = 1
    progress: bool = False

    def rng(self, *key: object) -> np.random.Generator:
        return np.random.default_rng([self.seed, *(stable_int(part) for part in (self.task, *key))])

    def final_path(self, relative: str | Path) -> str:
        return str(self.final / relative)

    def synthesize(self, requests: Sequence[SynthesisRequest], description: str) -> Iterator[Synthesis]:
        results = synthesize_many(requests, workers=self.workers)
        return iter(tqdm(results, total=len(requests), desc=description, disable=not self.progress, unit="utt"))


def stable_int(value: object) -> int:
    """A process-independent integer for seeding (``hash`` of a str changes between runs)."""
    return value if isinstance(value, int) and value >= 0 else zlib.crc32(str(value).encode("utf-8"))


# ----------------------------------------------------------------------------------------------------------------
# split sizes


def allocate(total: int, fractions: Mapping[str, float], minimum: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` items by ``fractions`` (largest remainder), then lift every split to its ``minimum`` by taking
    from the largest split. The caller checks ``total >= sum(minimum)`` first."""
    raw = {name: total * share / sum(fractions.values()) for name, share in fractions.items()}
    counts = {name: math.floor(value) for name, value in raw.items()}
    for name in sorted(raw, key=lambda n: (counts[n] - raw[n], list(raw).index(n)))[: total - sum(counts.values())]:
        counts[name] += 1
    for name in fractions:
        while counts[name] < minimum.get(name, 0):
            donor = max((n for n in counts if counts[n] > minimum.get(n, 0)), key=lambda n: counts[n])
            counts[donor] -= 1
            counts[name] += 1
    return counts


def speaker_count(utterances: int, per_speaker: int, least: int, most: int) -> int:
    """How many speakers a split of ``utterances`` gets: about ``per_speaker`` each, within ``[least, most]``
    and never more speakers than utterances."""
    return max(min(math.ceil(utterances / per_speaker), most, utterances), min(least, utterances))


def spread(items: int, bins: int) -> list[int]:
    """``items`` shared as evenly as possible among ``bins`` (earlier bins get the extra ones)."""
    return [items // bins + (1 if index < items % bins else 0) for index in range(bins)]


# ----------------------------------------------------------------------------------------------------------------
# audio


def to_float(audio: np.ndarray) -> np.ndarray:
    return audio.astype(np.float64) / 32768.0


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)


def finish(
    synthesis: Synthesis,
    rng: np.random.Generator,
    *,
    lead: tuple[float, float] = (0.10, 0.30),
    trail: tuple[float, float] = (0.10, 0.30),
    peak_dbfs: tuple[float, float] = (-6.0, -2.0),
    floor_dbfs: float = -66.0,
) -> Synthesis:
    """A recording-like utterance: silence before and after (seconds drawn from ``lead``/``trail``), a peak level
    drawn from ``peak_dbfs`` and a faint noise floor (espeak's digital silence is exactly zero)."""
    before = int(round(rng.uniform(*lead) * SAMPLE_RATE))
    after = int(round(rng.uniform(*trail) * SAMPLE_RATE))
    padded = synthesis.shifted(before, after)
    audio = to_float(padded.audio)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio *= 10 ** (rng.uniform(*peak_dbfs) / 20) / peak
    audio += rng.standard_normal(audio.shape[0]) * 10 ** (floor_dbfs / 20)
    return Synthesis(padded.text, padded.voice, to_int16(audio), padded.words, padded.phonemes)


def write_audio(path: Path, audio: np.ndarray, audio_format: str = "WAV") -> None:
    """16-bit PCM mono at 16 kHz; ``audio`` is int16. libsndfile writes no dates, so the bytes are reproducible."""
    if audio.dtype != np.int16:
        raise TypeError(f"write_audio wants int16 samples, got {audio.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16", format=audio_format)


def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# what a builder reports


@dataclass
class SplitSummary:
    utterances: int = 0
    seconds: float = 0.0
    speakers: set[str] = field(default_factory=set)

    def add(self, speaker: str, samples: int) -> None:
        self.utterances += 1
        self.seconds += samples / SAMPLE_RATE
        self.speakers.add(speaker)

    def to_json(self) -> dict:
        return {"utterances": self.utterances, "seconds": round(self.seconds, 3), "speakers": sorted(self.speakers)}


@dataclass
class TaskResult:
    """A builder's account of what it wrote.

    ``s3prl``: the ``downstream_expert`` config entries that point s3prl at this corpus, with paths relative to the
    corpus root; ``path_keys`` names (dotted) which of those entries are paths. ``layout``: other notable relative
    paths (alignments, raw folders). ``extra``: task-specific facts (label sets, SNRs...)."""

    splits: dict[str, SplitSummary]
    voices: dict[str, Voice]
    s3prl: dict
    path_keys: list[str]
    layout: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def format_seconds(samples: int) -> str:
    """A sample count at 16 kHz as exact decimal seconds (1/16000 s = 0.0000625 s has 7 decimals)."""
    return f"{samples / SAMPLE_RATE:.7f}".rstrip("0").rstrip(".") or "0"
