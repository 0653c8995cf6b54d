"""Units of the corpus builders: espeak-ng bindings, merged dictionary words, TextGrid text format, split sizes."""

from __future__ import annotations

import numpy as np
import pytest

from downstream_probes.corpora import common
from downstream_probes.corpora.alignments import (
    Interval,
    TextGrid,
    TextGridError,
    Tier,
    format_textgrid,
    parse_textgrid,
    textgrid_from_synthesis,
)
from downstream_probes.corpora.espeak import SAMPLE_RATE, SynthesisError, SynthesisRequest, Voice, synthesize_many
from downstream_probes.corpora.phones import UnknownPhonemeError, to_arpabet


@pytest.mark.slow  # compares with s3prl's own model or synthesises speech
def test_synthesis_is_16k_with_word_and_phoneme_timings():
    (synthesis,) = synthesize_many([SynthesisRequest("THE QUICK BROWN FOX DIDN'T JUMP", Voice("m3", "male"))])
    assert synthesis.audio.dtype == np.int16 and 1.0 < synthesis.duration < 3.0
    assert [w.text for w in synthesis.words] == ["THE", "QUICK", "BROWN", "FOX", "DIDN'T", "JUMP"]
    starts = [w.start for w in synthesis.words]
    assert starts == sorted(starts) and all(w.end > w.start for w in synthesis.words)
    # phonemes tile the speech: each ends where the next starts
    assert all(a.end == b.start for a, b in zip(synthesis.phonemes, synthesis.phonemes[1:], strict=False))
    fox = [p.mnemonic.lstrip("',") for p in synthesis.phonemes if p.word_index == 3]
    assert [to_arpabet(p)[0] for p in fox] == ["F", "AA", "K", "S"]
    # the speech is there: every word span carries energy well above espeak's digital silence
    for word in synthesis.words:
        span = synthesis.audio[word.start : word.end].astype(float)
        assert np.sqrt(np.mean(span**2)) > 300
    assert np.abs(synthesis.audio[: synthesis.words[0].start - 16]).max() < 50  # near-silence before the speech


def test_words_espeak_merges_get_their_own_spans():
    # "that the" and "on the" are single entries in espeak-ng's English dictionary (one WORD event for two words)
    (synthesis,) = synthesize_many([SynthesisRequest("TURN ON THE LIGHTS THAT THE MAN SAW", Voice("f2", "female"))])
    assert [w.text for w in synthesis.words] == ["TURN", "ON", "THE", "LIGHTS", "THAT", "THE", "MAN", "SAW"]
    for index, word in enumerate(synthesis.words):
        own = [p for p in synthesis.phonemes if p.word_index == index]
        assert own and own[0].start == word.start and own[-1].end == word.end
    the = [[to_arpabet(p.mnemonic)[0] for p in synthesis.phonemes if p.word_index == i] for i in (2, 5)]
    assert the == [["DH", "AH"], ["DH", "AH"]]


def test_workers_and_call_history_do_not_change_results():
    requests = [SynthesisRequest(f"HELLO NUMBER {w}", Voice(v, "x"), seed=i)
                for i, (w, v) in enumerate(zip(["ONE", "TWO", "THREE", "FOUR"], ["f2", "klatt", "m3", "f5"], strict=False))]  # fmt: skip
    one = [s.audio.tobytes() for s in synthesize_many(requests, workers=1, chunk_size=2)]
    two = [s.audio.tobytes() for s in synthesize_many(requests, workers=2, chunk_size=2)]
    again = [s.audio.tobytes() for s in synthesize_many(requests, workers=1, chunk_size=2)]
    assert one == two == again


def test_unspeakable_text_is_a_clear_error():
    with pytest.raises(SynthesisError, match="plain words"):
        list(synthesize_many([SynthesisRequest("PAGE 42 OF NASA", Voice("m1", "male"))]))
    with pytest.raises(UnknownPhonemeError, match="ESPEAK_TO_ARPABET"):
        to_arpabet("qq")
    assert to_arpabet("_:") == () and to_arpabet("'A@") == ("AA", "R")


def test_textgrid_round_trip_and_praat_short_format():
    grid = TextGrid(0.0, 1.5, (
        Tier("words", (Interval(0.0, 0.25, ""), Interval(0.25, 1.0625, 'say "hi"'), Interval(1.0625, 1.5, ""))),
        Tier("phones", (Interval(0.0, 0.5, "S"), Interval(0.5, 1.5, "EY"))),
    ))  # fmt: skip
    text = format_textgrid(grid)
    assert "intervals [2]:" in text and 'text = "say ""hi""" ' in text
    assert parse_textgrid(text) == grid
    short = 'File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1.5\n<exists>\n1\n"IntervalTier"\n"words"\n0\n1.5\n2\n0\n0.5\n"a"\n0.5\n1.5\n""\n'
    assert parse_textgrid(short).tier("words").intervals[0] == Interval(0.0, 0.5, "a")
    with pytest.raises(TextGridError, match="not a Praat TextGrid"):
        parse_textgrid("hello")
    with pytest.raises(TextGridError, match="truncated"):
        parse_textgrid(text[: len(text) // 2])


def test_alignment_splits_r_coloured_vowels_and_covers_the_audio():
    (synthesis,) = synthesize_many([SynthesisRequest("START THE CAR", Voice("m2", "male"))])
    padded = synthesis.shifted(800, 400)
    grid = textgrid_from_synthesis(padded)
    assert grid.xmax == padded.num_samples / SAMPLE_RATE
    phones = [i.label for i in grid.tier("phones").labelled()]
    assert phones[:5] == ["S", "T", "AA", "R", "T"]
    assert grid.tier("words").intervals[0] == Interval(0.0, padded.words[0].start / SAMPLE_RATE, "")


def test_allocate_respects_fractions_and_minimums():
    assert common.allocate(10, {"a": 0.6, "b": 0.2, "c": 0.2}, {}) == {"a": 6, "b": 2, "c": 2}
    assert common.allocate(7, {"a": 0.6, "b": 0.2, "c": 0.2}, {"a": 2, "b": 2, "c": 2}) == {"a": 3, "b": 2, "c": 2}
    assert sum(common.allocate(101, {"a": 0.7, "b": 0.15, "c": 0.15}, {"b": 1}).values()) == 101
    assert common.spread(7, 3) == [3, 2, 2]
    assert common.format_seconds(1) == "0.0000625" and common.format_seconds(16000) == "1"
