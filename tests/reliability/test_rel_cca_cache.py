"""The CCA feature cache must not serve stale features (issue 14, item 3).

The cache key covers the corpus through ``extraction.corpus_fingerprint``; alignments edited in place (same size, so
a fingerprint of names and sizes does not move) must give another key, and so must a changed audio file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile

from downstream_probes.analysis.extraction import corpus_fingerprint
from downstream_probes.analysis.segments import Utterance


def _corpus(root: Path) -> list[Utterance]:
    root.mkdir()
    utterances = []
    for index in range(2):
        audio = root / f"{index:04d}.wav"
        soundfile.write(str(audio), np.zeros(1600, dtype=np.int16), 16000, subtype="PCM_16")
        alignment = root / f"{index:04d}.TextGrid"
        alignment.write_text(
            f'"ooTextFile"\n"TextGrid"\n0 0.1 <exists> 1\n"IntervalTier" "phones" 0 0.1 1\n0 0.05 "a{index}"\n'
        )
        utterances.append(Utterance(f"u{index}", audio, alignment))
    return utterances


def test_an_alignment_edited_in_place_changes_the_fingerprint(tmp_path: Path) -> None:
    utterances = _corpus(tmp_path / "corpus")
    before = corpus_fingerprint(utterances)
    grid = utterances[1].alignment
    assert grid is not None
    text = grid.read_text()
    grid.write_text(text.replace("0.05", "0.06"))  # one boundary moved: same size
    assert len(grid.read_text()) == len(text)
    assert corpus_fingerprint(utterances) != before


def test_audio_rewritten_with_the_same_size_and_time_changes_the_fingerprint(tmp_path: Path) -> None:
    utterances = _corpus(tmp_path / "corpus")
    before = corpus_fingerprint(utterances)
    audio = utterances[0].audio
    stat = audio.stat()
    samples = np.full(1600, 1000, dtype=np.int16)
    soundfile.write(str(audio), samples, 16000, subtype="PCM_16")
    os.utime(audio, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # rsync -t / cp -p keep the time
    assert audio.stat().st_size == stat.st_size
    assert corpus_fingerprint(utterances) != before


def test_same_names_in_different_folders_are_different_files(tmp_path: Path) -> None:
    first = _corpus(tmp_path / "a")
    second = _corpus(tmp_path / "b")
    (tmp_path / "b" / "0000.TextGrid").write_text((tmp_path / "b" / "0000.TextGrid").read_text().replace("a0", "b0"))
    assert corpus_fingerprint(first) != corpus_fingerprint(second)


def test_analysis_reads_audio_through_the_checked_reader(tmp_path: Path) -> None:
    """Layer-wise analyses read utterances through the same checked reader as the runs: a stereo file is an error
    naming it (it was averaged silently), and so is an 8 kHz one."""
    import pytest

    from downstream_probes.analysis.extraction import read_audio
    from downstream_probes.corpora.checks import AudioError

    stereo = tmp_path / "stereo.wav"
    soundfile.write(str(stereo), np.zeros((1600, 2), dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"stereo\.wav.*2 channels"):
        read_audio(stereo)
    assert read_audio(_corpus(tmp_path / "c")[0].audio).shape == (1600,)
