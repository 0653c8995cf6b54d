"""Which stretches of which utterances the layer-wise analysis looks at, and how a segment becomes one vector.

Corpus: a LibriSpeech-style tree of audio (``<corpus>/LibriSpeech/<split>/**/<utt>.flac``) with one MFA-style
TextGrid per utterance (``<corpus>/alignments/<split>/**/<utt>.TextGrid``, tiers ``words`` and ``phones``), the
layout ``mrsuperb corpus asr`` writes; ``--alignments`` may point elsewhere.

Samples, as the reference draws them (seeded here): phone level, every phone with at most 200 segments each;
word level, the first 500 words of a ranking made from ANOTHER split's counts (the reference's ``word.lst`` ranks
LibriSpeech 960h's training words) with at most 15 segments each from the analysed split; frame level, 500 whole
utterances. The MI analysis also needs a training sample: ``randint(lo, hi)`` segments of each label drawn from a
training split (the reference's ranges: phones 3000..7000, words 600..1200, each capped by what the split has).

Pooling (reference): a segment ``[t0, t1]`` covers the frames ``floor(t0 / s) .. ceil(t1 / s)`` of a state with
frame period ``s``, plain floating-point floor and ceil as the reference computes them; phones keep the middle third
(``floor((n + 1) / 3)`` frames dropped at each end); a segment keeps at least one frame, clipped to the utterance;
its vector is the mean over those frames.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from downstream_probes.corpora.alignments import TextGridError, check_fits_audio, read_textgrid
from upstream_mrhubert.errors import MrsuperbError

AUDIO_SUFFIXES = (".flac", ".wav")
SILENCE_LABELS = frozenset({"", "sil", "sp", "spn", "<unk>", "<eps>"})


class CorpusLayoutError(MrsuperbError, ValueError):
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
    alignment_root = alignment_folder(corpus, split, alignments)
    audio = sorted(p for p in audio_root.rglob("*") if p.suffix in AUDIO_SUFFIXES)
    if not audio:
        raise CorpusLayoutError(f"no .flac or .wav files under {audio_root}")
    utterances = []
    for path in audio:
        expected = alignment_root / path.relative_to(audio_root).with_suffix(".TextGrid")
        grid: Path | None = expected
        if not expected.is_file():
            found = list(alignment_root.rglob(f"{path.stem}.TextGrid")) if alignment_root.is_dir() else []
            grid = found[0] if found else None
        if grid is None and need_alignments:
            raise CorpusLayoutError(
                f"no alignment for {path}: "
                f"expected {expected} "
                "(phone and word analyses need MFA-style TextGrids; pass --alignments DIR)"
            )
        utterances.append(Utterance(path.stem, path, grid))
    return utterances


def alignment_folder(corpus: str | Path, split: str, alignments: str | Path | None = None) -> Path:
    """Where the TextGrids of ``split`` live: ``ALIGNMENTS/<split>`` (or ``ALIGNMENTS`` itself when it has no such
    subfolder), by default ``CORPUS/alignments/<split>``."""
    if alignments is None:
        return Path(corpus) / "alignments" / split
    folder = Path(alignments) / split
    return folder if folder.is_dir() else Path(alignments)


def training_splits(corpus: str | Path, alignments: str | Path | None = None, prefix: str = "train") -> list[str]:
    """The aligned splits whose names start with ``prefix``, sorted: ``train`` gives LibriSpeech's 960 h
    (train-clean-100, train-clean-360, train-other-500, the reference's word ranking), ``train-clean`` its
    460 h (the reference's MI training data); a synthetic corpus has train-clean-100 only."""
    root = Path(alignments) if alignments is not None else Path(corpus) / "alignments"
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix)) if root.is_dir() else []
    if not found:
        raise CorpusLayoutError(
            f"no aligned split starting with {prefix!r} under {root}; name the split(s) explicitly "
            "(e.g. --word-counts-split train-clean-100) or give --word-list FILE"
        )
    return found


def resolve_splits(corpus: str | Path, spec: str, alignments: str | Path | None = None) -> list[str]:
    """A split option's value: comma-separated split names, each either present under the alignments or a prefix
    (``train``, ``train-clean``) that :func:`training_splits` expands."""
    root = Path(alignments) if alignments is not None else Path(corpus) / "alignments"
    splits: list[str] = []
    for name in (part.strip() for part in spec.split(",") if part.strip()):
        splits += [name] if (root / name).is_dir() else training_splits(corpus, alignments, name)
    return splits


def read_segments(utterances: Sequence[Utterance], tier: str) -> list[Segment]:
    """Every labelled interval of ``tier`` ("phones" or "words") in the utterances, silence excluded."""
    segments = []
    for index, utterance in enumerate(utterances):
        if utterance.alignment is None:
            raise CorpusLayoutError(f"no alignment for {utterance.audio}")
        try:
            grid = read_textgrid(utterance.alignment)
            check_fits_audio(grid, soundfile.info(str(utterance.audio)).duration, str(utterance.alignment))
            intervals = grid.tier(tier).intervals
        except KeyError as error:
            raise CorpusLayoutError(f"{utterance.alignment}: {error.args[0]}") from None
        except TextGridError as error:
            raise CorpusLayoutError(str(error)) from None
        except (RuntimeError, OSError) as error:  # soundfile's own errors
            raise CorpusLayoutError(f"{utterance.audio}: unreadable audio ({error})") from None
        for interval in intervals:
            label = _normalise(interval.label, tier)
            if label not in SILENCE_LABELS and interval.end > interval.start:
                segments.append(Segment(index, interval.start, interval.end, label))
    return segments


def _normalise(label: str, tier: str) -> str:
    """Phones lose their stress digit (39 ARPAbet classes); words stay as the alignment spells them, because the
    reference looks them up case-sensitively in the embedding files."""
    label = label.strip()
    if tier == "phones":
        return label.rstrip("012").upper() if label.lower() not in SILENCE_LABELS else label.lower()
    return label if label.lower() not in SILENCE_LABELS else label.lower()


def sample_phones(segments: Sequence[Segment], rng: np.random.Generator, max_per_phone: int) -> list[Segment]:
    """At most ``max_per_phone`` segments of every phone, drawn without replacement."""
    return _cap_per_label(segments, sorted({s.label for s in segments}), rng, max_per_phone)


def rank_words(labels: Iterable[str]) -> list[str]:
    """Words by decreasing count (ties alphabetical: the reference's order among ties is its files' glob order)."""
    counts = Counter(labels)
    return sorted(counts, key=lambda word: (-counts[word], word))


def read_word_list(path: str | Path) -> list[str]:
    """A ranked word list, one word a line (the reference's ``word.lst``); ``<unk>`` and blank lines are dropped."""
    path = Path(path)
    if not path.is_file():
        raise CorpusLayoutError(f"word list {path} not found (one word a line, most frequent first: word.lst)")
    words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    words = [word for word in words if word and word != "<unk>"]
    if not words:
        raise CorpusLayoutError(f"word list {path} holds no words")
    return words


def sample_words(
    segments: Sequence[Segment],
    rng: np.random.Generator,
    n_words: int,
    max_per_word: int,
    ranking: Sequence[str] | None = None,
) -> list[Segment]:
    """At most ``max_per_word`` segments of each of the first ``n_words`` words of ``ranking``.

    ``ranking`` is the vocabulary in rank order (:func:`rank_words` of a training split, or :func:`read_word_list`);
    None ranks the words of ``segments`` themselves. Ranked words that ``segments`` lacks are skipped (the
    reference would stop with a KeyError), so fewer than ``n_words`` words can come back.
    """
    words = list(ranking) if ranking is not None else rank_words(s.label for s in segments)
    present = {s.label for s in segments}
    return _cap_per_label(segments, [word for word in words[:n_words] if word in present], rng, max_per_word)


def sample_training_segments(
    segments: Sequence[Segment],
    labels: Sequence[str],
    rng: np.random.Generator,
    low: int,
    high: int,
    *,
    running_bounds: bool = False,
) -> list[Segment]:
    """The MI training sample: for each of ``labels`` in turn, ``randint(min(low, n), min(high, n))`` of its ``n``
    segments (inclusive bounds, as the reference's ``random.randint``), drawn without replacement.

    ``running_bounds``: as the reference's ``sample_tokens``, which overwrites its bounds in the loop, a label with
    fewer segments than ``low`` (``high``) lowers ``low`` (``high``) for every LATER label too (a running minimum;
    with words in rank order, rarer words come later). Otherwise each label is capped on its own.
    """
    by_label: dict[str, list[Segment]] = defaultdict(list)
    for segment in segments:
        by_label[segment.label].append(segment)
    chosen: list[Segment] = []
    for label in labels:
        pool = by_label.get(label, [])
        if not pool:
            continue
        if running_bounds:
            low, high = min(low, len(pool)), min(high, len(pool))
        size = int(rng.integers(min(low, len(pool)), min(high, len(pool)) + 1))
        picks = rng.choice(len(pool), size=size, replace=False)
        chosen.extend(pool[i] for i in sorted(picks))
    return sorted(chosen, key=lambda s: (s.utterance, s.start, s.label))


def read_alignment_labels(alignment_root: str | Path, tier: str) -> list[str]:
    """Every labelled (non-silence) interval of ``tier`` in the TextGrids under ``alignment_root``, in file order:
    what a ranking by counts needs, without the audio."""
    root = Path(alignment_root)
    grids = sorted(root.rglob("*.TextGrid")) if root.is_dir() else []
    if not grids:
        raise CorpusLayoutError(f"no TextGrid alignments under {root}")
    labels = []
    for grid in grids:
        try:
            intervals = read_textgrid(grid).tier(tier).intervals
        except KeyError as error:
            raise CorpusLayoutError(f"{grid}: {error.args[0]}") from None
        except TextGridError as error:
            raise CorpusLayoutError(str(error)) from None
        for interval in intervals:
            label = _normalise(interval.label, tier)
            if label not in SILENCE_LABELS and interval.end > interval.start:
                labels.append(label)
    return labels


def sample_utterances(n_available: int, rng: np.random.Generator, n_utterances: int) -> np.ndarray:
    """Indices of ``min(n_utterances, n_available)`` utterances drawn without replacement, sorted."""
    return np.sort(rng.choice(n_available, size=min(n_utterances, n_available), replace=False))


def _cap_per_label(segments, labels, rng, cap) -> list[Segment]:
    by_label: dict[str, list[Segment]] = defaultdict(list)
    for segment in segments:
        by_label[segment.label].append(segment)
    chosen: list[Segment] = []
    for label in labels:
        pool = by_label[label]
        picks = rng.choice(len(pool), size=min(cap, len(pool)), replace=False)
        chosen.extend(pool[i] for i in sorted(picks))
    return sorted(chosen, key=lambda s: (s.utterance, s.start, s.label))


def frame_span(
    start: float, end: float, frame_seconds: float, n_frames: int, *, middle_third: bool = False
) -> tuple[int, int]:
    """The frames ``[first, last)`` of a state with ``n_frames`` frames of ``frame_seconds`` covering a segment."""
    first = int(math.floor(start / frame_seconds))
    last = int(math.ceil(end / frame_seconds))
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
        # np.mean's own arithmetic (a float64 sum, then one division) without its Python wrapper
        pooled[row] = np.add.reduce(features[first:last], axis=0, dtype=np.float64) / (last - first)
    return pooled
