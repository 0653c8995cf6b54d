"""Which stretches of which utterances the layer-wise analysis looks at, and how a segment becomes one vector.

Corpus: a LibriSpeech-style tree of audio (``<corpus>/LibriSpeech/<split>/**/<utt>.flac``) with one MFA-style
TextGrid per utterance (``<corpus>/alignments/<split>/**/<utt>.TextGrid``, tiers ``words`` and ``phones``), the
layout ``mrsuperb corpus asr`` writes; ``--alignments`` may point elsewhere.

Samples, as the reference draws them (seeded here): phone level, every phone with at most 200 segments each;
word level, the 500 most frequent words with at most 15 segments each; frame level, 500 whole utterances.

Pooling (reference): a segment ``[t0, t1]`` covers the frames ``floor(t0 / s) .. ceil(t1 / s)`` of a state with
frame period ``s``; phones keep the middle third (``floor((n + 1) / 3)`` frames dropped at each end); a segment
keeps at least one frame, clipped to the utterance; its vector is the mean over those frames.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from downstream_probes.corpora.alignments import TextGridError, read_textgrid

AUDIO_SUFFIXES = (".flac", ".wav")
SILENCE_LABELS = frozenset({"", "sil", "sp", "spn", "<unk>", "<eps>"})


class CorpusLayoutError(ValueError):
    """The corpus folder or its alignments are missing or incomplete."""


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    audio: Path
    alignment: Path | None


@dataclass(frozen=True)
class Segment:
    """One phone or word occurrence: utterance index (into the utterance list), times in seconds, label."""

    utterance: int
    start: float
    end: float
    label: str


@dataclass(frozen=True)
class SamplingSettings:
    max_per_phone: int = 200
    n_words: int = 500
    max_per_word: int = 15
    n_utterances: int = 500


def list_utterances(
    corpus: str | Path,
    split: str = "dev-clean",
    alignments: str | Path | None = None,
    *,
    need_alignments: bool = True,
) -> list[Utterance]:
    """The utterances of ``split``, sorted by id, each with its TextGrid (required when ``need_alignments``)."""
    corpus = Path(corpus)
    audio_root = corpus / "LibriSpeech" / split
    if not audio_root.is_dir():
        audio_root = corpus / split
    if not audio_root.is_dir():
        raise CorpusLayoutError(
            f"no audio for split {split!r} under {corpus} "
            f"(looked for {corpus}/LibriSpeech/{split} and {corpus}/{split}); "
            "give the folder written by `mrsuperb corpus asr` or a LibriSpeech root"
        )
    alignment_root = Path(alignments) / split if alignments is not None else corpus / "alignments" / split
    if alignments is not None and not alignment_root.is_dir():
        alignment_root = Path(alignments)
    audio = sorted(p for p in audio_root.rglob("*") if p.suffix in AUDIO_SUFFIXES)
    if not audio:
        raise CorpusLayoutError(f"no .flac or .wav files under {audio_root}")
    utterances = []
    for path in audio:
        grid = alignment_root / path.relative_to(audio_root).with_suffix(".TextGrid")
        if not grid.is_file():
            found = list(alignment_root.rglob(f"{path.stem}.TextGrid")) if alignment_root.is_dir() else []
            grid = found[0] if found else None
        if grid is None and need_alignments:
            raise CorpusLayoutError(
                f"no alignment for {path}: "
                f"expected {alignment_root / path.relative_to(audio_root).with_suffix('.TextGrid')} "
                "(phone and word analyses need MFA-style TextGrids; pass --alignments DIR)"
            )
        utterances.append(Utterance(path.stem, path, grid))
    return utterances


def read_segments(utterances: Sequence[Utterance], tier: str) -> list[Segment]:
    """Every labelled interval of ``tier`` ("phones" or "words") in the utterances, silence excluded."""
    segments = []
    for index, utterance in enumerate(utterances):
        if utterance.alignment is None:
            raise CorpusLayoutError(f"no alignment for {utterance.audio}")
        try:
            intervals = read_textgrid(utterance.alignment).tier(tier).intervals
        except KeyError as error:
            raise CorpusLayoutError(f"{utterance.alignment}: {error.args[0]}") from None
        except TextGridError as error:
            raise CorpusLayoutError(str(error)) from None
        for interval in intervals:
            label = _normalise(interval.label, tier)
            if label not in SILENCE_LABELS and interval.end > interval.start:
                segments.append(Segment(index, interval.start, interval.end, label))
    return segments


def _normalise(label: str, tier: str) -> str:
    label = label.strip()
    if tier == "phones":
        return label.rstrip("012").upper() if label.lower() not in SILENCE_LABELS else label.lower()
    return label.lower()


def sample_phones(segments: Sequence[Segment], rng: np.random.Generator, max_per_phone: int) -> list[Segment]:
    """At most ``max_per_phone`` segments of every phone, drawn without replacement."""
    return _cap_per_label(segments, sorted({s.label for s in segments}), rng, max_per_phone)


def sample_words(
    segments: Sequence[Segment], rng: np.random.Generator, n_words: int, max_per_word: int
) -> list[Segment]:
    """At most ``max_per_word`` segments of each of the ``n_words`` most frequent words (ties: alphabetical)."""
    counts = Counter(s.label for s in segments)
    words = sorted(counts, key=lambda word: (-counts[word], word))[:n_words]
    return _cap_per_label(segments, words, rng, max_per_word)


def sample_utterances(n_available: int, rng: np.random.Generator, n_utterances: int) -> np.ndarray:
    """Indices of ``min(n_utterances, n_available)`` utterances drawn without replacement, sorted."""
    return np.sort(rng.choice(n_available, size=min(n_utterances, n_available), replace=False))


def _cap_per_label(segments, labels, rng, cap) -> list[Segment]:
    by_label: dict[str, list[Segment]] = defaultdict(list)
    for segment in segments:
        by_label[segment.label].append(segment)
    chosen = []
    for label in labels:
        pool = by_label[label]
        picks = rng.choice(len(pool), size=min(cap, len(pool)), replace=False)
        chosen.extend(pool[i] for i in sorted(picks))
    return sorted(chosen, key=lambda s: (s.utterance, s.start, s.label))


def frame_span(
    start: float, end: float, frame_seconds: float, n_frames: int, *, middle_third: bool = False
) -> tuple[int, int]:
    """The frames ``[first, last)`` of a state with ``n_frames`` frames of ``frame_seconds`` covering a segment."""
    first = int(math.floor(start / frame_seconds + 1e-9))
    last = int(math.ceil(end / frame_seconds - 1e-9))
    if middle_third:
        trim = (last - first + 1) // 3
        first, last = first + trim, last - trim
    if last <= first:
        last = first + 1
    last = min(last, n_frames)
    first = min(first, last - 1)
    return max(first, 0), last


def pool_segments(
    features: np.ndarray, frame_seconds: float, segments: Sequence[tuple[float, float]], *, middle_third: bool = False
) -> np.ndarray:
    """Mean of ``features`` (frames, dims) over each segment's frames: ``(segments, dims)`` float32."""
    pooled = np.empty((len(segments), features.shape[1]), dtype=np.float32)
    for row, (start, end) in enumerate(segments):
        first, last = frame_span(start, end, frame_seconds, len(features), middle_third=middle_third)
        pooled[row] = features[first:last].mean(axis=0, dtype=np.float64)
    return pooled
