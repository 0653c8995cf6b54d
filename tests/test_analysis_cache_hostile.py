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

    from downstream_probes.analysis.extraction import read_samples
    from downstream_probes.audio import AudioError

    stereo = tmp_path / "stereo.wav"
    soundfile.write(str(stereo), np.zeros((1600, 2), dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"stereo\.wav.*2 channels"):
        read_samples(stereo)
    assert read_samples(_corpus(tmp_path / "c")[0].audio).shape == (1600,)


def test_a_cache_entry_with_other_bytes_is_rebuilt_and_dead_builds_are_cleaned(tmp_path: Path) -> None:
    """An entry overwritten with other values of the same size was read (T0 phone CCA 0.112 -> -0.010); a killed
    build's temporary folder stayed forever (issue 24 item 7)."""
    from downstream_probes.analysis.extraction import load_or_build

    builds = []

    def build(folder: Path) -> dict:
        builds.append(folder)
        np.save(folder / "layer_000.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
        return {"layer_names": ["T0"]}

    cache = tmp_path / "cache"
    entry = load_or_build(cache, "key", build)
    assert len(builds) == 1 and load_or_build(cache, "key", build).layer("T0").sum() == 66
    assert len(builds) == 1  # read, not rebuilt
    array = np.load(entry.folder / "layer_000.npy")
    np.save(entry.folder / "layer_000.npy", array * 0 - 1)  # same size, other values
    dead = cache / f".other.partial-{2**22 + 99}"  # beyond pid_max: no process has it
    dead.mkdir()
    again = load_or_build(cache, "key", build)
    assert len(builds) == 2 and again.layer("T0").sum() == 66
    assert not dead.exists() and not any(p.name.startswith(".key.partial") for p in cache.iterdir())
    (entry.folder / "meta.json").write_text('{"layer_names": ["T0"], "sha256": NaN')  # cut short
    assert load_or_build(cache, "key", build).layer("T0").sum() == 66 and len(builds) == 3
