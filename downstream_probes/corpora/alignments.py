"""MFA-style alignments: Praat TextGrids with a ``words`` and a ``phones`` interval tier.

Montreal Forced Aligner writes one TextGrid per utterance with tiers ``words`` (lower-case words) and ``phones``
(ARPAbet); silences are intervals with an empty label and the tiers cover the whole file without gaps. We write the
same thing from espeak-ng's own timings (exact, not forced-aligned): phones are the 39-phone ARPAbet set of
``phones.py`` without stress digits. Boundaries lie on the 16 kHz sample grid, and are written as exact decimals.

We write and parse Praat's long text format ourselves (``write_textgrid``/``read_textgrid``); the reader also
accepts TextGrids written by Praat or MFA in that format. ``textgrid_from_synthesis`` builds the tiers.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from downstream_probes.corpora.espeak import SAMPLE_RATE, Synthesis
from downstream_probes.corpora.phones import SPLIT_FRACTION, to_arpabet
from upstream_mrhubert.errors import MrsuperbError


class TextGridError(MrsuperbError, ValueError):
    """A TextGrid file is malformed, or intervals overlap / leave gaps."""


class Interval(NamedTuple):
    """A span of a tier in seconds and its label: the (xmin, xmax, text) triple of a TextGrid interval."""

    start: float
    end: float
    label: str


@dataclass(frozen=True)
class Tier:
    """An interval tier covering ``[xmin, xmax]`` without gaps (silence has label ``""``)."""

    name: str
    intervals: tuple[Interval, ...]

    def labelled(self) -> list[Interval]:
        """The intervals with a non-empty label (words or phones, not silence)."""
        return [interval for interval in self.intervals if interval.label]


@dataclass(frozen=True)
class TextGrid:
    xmin: float
    xmax: float
    tiers: tuple[Tier, ...]

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(f"TextGrid has no tier {name!r}; tiers: {[t.name for t in self.tiers]}")


# ----------------------------------------------------------------------------------------------------------------
# building from a synthesis


def _cover(spans: Sequence[tuple[int, int, str]], total: int) -> list[tuple[int, int, str]]:
    """Fill gaps between sorted, non-overlapping sample spans with silence so that ``[0, total]`` is covered."""
    covered: list[tuple[int, int, str]] = []
    cursor = 0
    for start, end, label in spans:
        if start < cursor:
            raise TextGridError(f"span {label!r} [{start}, {end}) overlaps the previous one ending at {cursor}")
        if start > cursor:
            covered.append((cursor, start, ""))
        covered.append((start, end, label))
        cursor = end
    if cursor < total:
        covered.append((cursor, total, ""))
    return covered


def _phone_spans(synthesis: Synthesis) -> list[tuple[int, int, str]]:
    spans = []
    for phoneme in synthesis.phonemes:
        arpabet = to_arpabet(phoneme.mnemonic)
        if not arpabet or phoneme.end <= phoneme.start:
            continue  # pauses become silence; a zero-length event has nothing to align
        if len(arpabet) == 2 and phoneme.end - phoneme.start >= 2:
            split = phoneme.start + max(1, round((phoneme.end - phoneme.start) * SPLIT_FRACTION))
            split = min(split, phoneme.end - 1)
            spans += [(phoneme.start, split, arpabet[0]), (split, phoneme.end, arpabet[1])]
        else:
            spans.append((phoneme.start, phoneme.end, arpabet[0]))
    return spans


def textgrid_from_synthesis(synthesis: Synthesis) -> TextGrid:
    """``words`` (lower-case) and ``phones`` (ARPAbet) tiers covering the whole synthesised audio."""
    total = synthesis.num_samples
    word_spans = [(w.start, w.end, w.text.lower()) for w in synthesis.words if w.end > w.start]
    tiers = []
    for name, spans in (("words", word_spans), ("phones", _phone_spans(synthesis))):
        intervals = tuple(
            Interval(start / SAMPLE_RATE, end / SAMPLE_RATE, label) for start, end, label in _cover(spans, total)
        )
        tiers.append(Tier(name, intervals))
    return TextGrid(0.0, total / SAMPLE_RATE, tuple(tiers))


# ----------------------------------------------------------------------------------------------------------------
# Praat long text format


def _number(value: float) -> str:
    """Shortest exact decimal for times on the sample grid (1/16000 s has a finite decimal expansion)."""
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _quote(label: str) -> str:
    return '"' + label.replace('"', '""') + '"'


def format_textgrid(grid: TextGrid) -> str:
    lines = [
        'File type = "ooTextFile"',
        'Object class = "TextGrid"',
        "",
        f"xmin = {_number(grid.xmin)} ",
        f"xmax = {_number(grid.xmax)} ",
        "tiers? <exists> ",
        f"size = {len(grid.tiers)} ",
        "item []: ",
    ]
    for tier_index, tier in enumerate(grid.tiers, start=1):
        lines += [
            f"    item [{tier_index}]:",
            '        class = "IntervalTier" ',
            f"        name = {_quote(tier.name)} ",
            f"        xmin = {_number(grid.xmin)} ",
            f"        xmax = {_number(grid.xmax)} ",
            f"        intervals: size = {len(tier.intervals)} ",
        ]
        for interval_index, interval in enumerate(tier.intervals, start=1):
            lines += [
                f"        intervals [{interval_index}]:",
                f"            xmin = {_number(interval.start)} ",
                f"            xmax = {_number(interval.end)} ",
                f"            text = {_quote(interval.label)} ",
            ]
    return "\n".join(lines) + "\n"


def write_textgrid(path: str | Path, grid: TextGrid) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_textgrid(grid), encoding="utf-8")
    return path


# Quoted strings, numbers, <exists>/<absent>, and bracketed item numbers ("item [1]:"), which are skipped.
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(\[[^\]"]*\])|<exists>|<absent>')


# Praat writes times with up to 17 significant digits; aligners round them to the millisecond
TIME_TOLERANCE = 1e-3


def _check_intervals(intervals: Sequence[Interval], where: str) -> None:
    """Intervals in time order, each ending after it starts, none overlapping the one before."""
    previous_end = -math.inf
    for interval in intervals:
        if not (math.isfinite(interval.start) and math.isfinite(interval.end)) or interval.end < interval.start:
            raise TextGridError(
                f"{where}: interval {interval.label!r} [{interval.start}, {interval.end}] is not a time span"
            )
        if interval.start < previous_end - TIME_TOLERANCE:
            raise TextGridError(
                f"{where}: interval {interval.label!r} [{interval.start}, {interval.end}] overlaps the previous one, "
                f"which ends at {previous_end}; an alignment's intervals follow each other"
            )
        previous_end = interval.end


def check_fits_audio(grid: TextGrid, seconds: float, source: str, tolerance: float = 0.02) -> None:
    """Refuse an alignment whose intervals end after its audio (an alignment of another or a cut recording): their
    segments would be pooled from frames that do not exist. ``tolerance`` allows one 20 ms frame of rounding.

    Raises:
        TextGridError: naming the file, the tier and both lengths.
    """
    for tier in grid.tiers:
        end = max((interval.end for interval in tier.intervals), default=0.0)
        if end > seconds + tolerance:
            raise TextGridError(
                f"{source}: tier {tier.name!r} runs to {end:.3f} s, but its audio is {seconds:.3f} s long; the "
                "alignment belongs to another (or an uncut) recording: align the audio again"
            )


def parse_textgrid(text: str, source: str = "<string>") -> TextGrid:
    """Parse Praat's long (or short) text format: the values in order are all that matter."""
    tokens = []
    for match in _TOKEN.finditer(text):
        if match.group(1) is not None:
            tokens.append(match.group(1).replace('""', '"'))
        elif match.group(2) is not None:
            tokens.append(float(match.group(2)))
        elif match.group(3) is not None:
            continue
        else:
            tokens.append(match.group(0))
    if tokens[:2] != ["ooTextFile", "TextGrid"]:
        raise TextGridError(f"{source}: not a Praat TextGrid (header {tokens[:2]!r})")
    try:
        xmin, xmax, exists, size = tokens[2], tokens[3], tokens[4], int(tokens[5])
        if exists != "<exists>":
            return TextGrid(float(xmin), float(xmax), ())
        position = 6
        tiers = []
        for _ in range(size):
            tier_class, name, _tier_min, _tier_max, count = tokens[position : position + 5]
            position += 5
            if tier_class != "IntervalTier":
                raise TextGridError(f"{source}: tier {name!r} is a {tier_class}, only IntervalTier is supported")
            intervals = []
            for _ in range(int(count)):
                start, end, label = tokens[position : position + 3]
                intervals.append(Interval(float(start), float(end), str(label)))
                position += 3
            _check_intervals(intervals, f"{source}: tier {name!r}")
            tiers.append(Tier(str(name), tuple(intervals)))
    except (IndexError, TypeError, ValueError) as error:
        if isinstance(error, TextGridError):
            raise
        raise TextGridError(f"{source}: truncated or malformed TextGrid ({error})") from None
    return TextGrid(float(xmin), float(xmax), tuple(tiers))


# Byte-order marks Praat writes: UTF-16 (big- or little-endian) when a label is not ASCII, e.g. IPA phones.
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_textgrid(path: str | Path) -> TextGrid:
    """Read a TextGrid saved as UTF-8 or, as Praat saves non-ASCII labels, UTF-16 with a byte-order mark."""
    path = Path(path)
    raw = path.read_bytes()
    encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), "utf-8")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as error:
        raise TextGridError(
            f"{path}: not UTF-8, nor UTF-16 with a byte-order mark ({error.reason} at byte {error.start}); save it "
            "from Praat again (it writes UTF-8 or UTF-16)"
        ) from None
    return parse_textgrid(text, source=str(path))
