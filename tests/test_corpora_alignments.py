"""Hostile TextGrid alignments (issue 24 item 9): overlapping intervals and alignments longer than their audio are
refused with the file named, instead of being analysed (segments past the end pooled from the last frame)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from downstream_probes.analysis.segments import CorpusLayoutError, Utterance, read_segments
from downstream_probes.corpora.alignments import TextGridError, parse_textgrid


def _grid(intervals: list[tuple[float, float, str]], xmax: float) -> str:
    body = "".join(f'{start} {end} "{label}"\n' for start, end, label in intervals)
    return f'"ooTextFile"\n"TextGrid"\n0 {xmax} <exists> 1\n"IntervalTier" "phones" 0 {xmax} {len(intervals)}\n{body}'


def test_overlapping_intervals_are_refused() -> None:
    with pytest.raises(TextGridError, match=r"a.TextGrid: tier 'phones': interval 'B' \[0.04, 0.1\] overlaps"):
        parse_textgrid(_grid([(0, 0.05, "A"), (0.04, 0.1, "B")], 0.1), source="a.TextGrid")
    with pytest.raises(TextGridError, match="is not a time span"):
        parse_textgrid(_grid([(0.05, 0.01, "A")], 0.1), source="a.TextGrid")
    grid = parse_textgrid(_grid([(0, 0.05, "A"), (0.05, 0.1, "B")], 0.1))  # touching intervals are an alignment
    assert [i.label for i in grid.tier("phones").intervals] == ["A", "B"]


def test_an_alignment_longer_than_its_audio_is_refused(tmp_path: Path) -> None:
    audio = tmp_path / "cut.wav"
    soundfile.write(str(audio), np.zeros(1600, dtype=np.int16), 16000)  # 0.1 s: the recording cut to a third
    alignment = tmp_path / "cut.TextGrid"
    alignment.write_text(_grid([(0, 0.1, "A"), (0.1, 0.3, "B")], 0.3))
    with pytest.raises(CorpusLayoutError, match=r"cut.TextGrid: tier 'phones' runs to 0.300 s, but its audio is 0.100"):
        read_segments([Utterance("u", audio, alignment)], "phones")
    alignment.write_text(_grid([(0, 0.05, "A"), (0.05, 0.1, "B")], 0.1))
    assert [s.label for s in read_segments([Utterance("u", audio, alignment)], "phones")] == ["A", "B"]
