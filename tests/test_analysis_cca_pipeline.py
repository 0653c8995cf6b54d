"""``mrsuperb cca`` end to end on a small synthetic corpus: tiny MR-HuBERT, a planted-signal upstream, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from downstream_probes import cli
from downstream_probes.analysis import segments
from downstream_probes.analysis.analyze import AnalysisSettings, run_cca
from downstream_probes.analysis.extraction import LayerOutput
from downstream_probes.analysis.mel import log_mel
from downstream_probes.corpora.alignments import read_textgrid

SPLIT = "train-clean-100"  # the largest split of a small corpus


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from downstream_probes.corpora.api import build_corpus

    return build_corpus("asr", tmp_path_factory.mktemp("corpus") / "asr", utterances=40, seed=0)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", "base_2res", seed=0)


def _cca(corpus, checkpoint, out, cache, *extra) -> int:
    """One sample set and no chance runs (what these tests check is per score; test_analysis_analyze.py checks the
    sample sets and chance levels)."""
    return cli.main(
        ["cca", "-u", "mrhubert_local", "-k", str(checkpoint), "--corpus", str(corpus), "--split", SPLIT,
         "--out", str(out), "--cache-dir", str(cache), "-q", "--sample-sets", "1", "--chance-permutations", "0", *extra]
    )  # fmt: skip


def test_cca_command_scores_every_layer_and_reuses_its_cache(corpus, tiny_checkpoint, tmp_path, capsys):
    from upstream_mrhubert.hub import build_upstream

    names = build_upstream("mrhubert_local", ckpt=tiny_checkpoint).layer_names
    assert _cca(corpus, tiny_checkpoint, tmp_path / "out", tmp_path / "cache", "--property", "phone") == 0
    scores = json.loads((tmp_path / "out" / "cca_phone.json").read_text())
    assert list(scores) == names and all(0.0 < s < 1.0 for s in scores.values())
    assert (tmp_path / "out" / "cca_phone.png").stat().st_size > 1000
    provenance = json.loads((tmp_path / "out" / "provenance_cca_phone.json").read_text())
    assert provenance["upstream"]["name"] == "mrhubert_local" and provenance["seed"] == 0
    assert provenance["upstream"]["identity"] == "mrhubert_local:tiny"
    # default state rate: the 20 ms vectors s3prl's featurizer weights (D0 repeated), recorded
    assert provenance["state_rate"] == "20ms" and set(provenance["layer_strides"].values()) == {320}
    assert provenance["word_ranking"] is None  # a phone run needs no word ranking (nor training alignments)
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(entries) == 1
    # same inputs, same numbers; the second run reads the cached layers (no new entry)
    assert _cca(corpus, tiny_checkpoint, tmp_path / "again", tmp_path / "cache", "--property", "phone",
                "--layers", "D0,T12", "--threads", "1") == 0  # fmt: skip
    assert json.loads((tmp_path / "again" / "cca_phone.json").read_text()) == {k: scores[k] for k in ("D0", "T12")}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries
    # native rate: D0 at 40 ms, its own cache entry, another score for D0 (the 20 ms one repeats its frames)
    assert _cca(corpus, tiny_checkpoint, tmp_path / "native", tmp_path / "cache", "--property", "phone",
                "--layers", "T0,D0", "--state-rate", "native") == 0  # fmt: skip
    native = json.loads((tmp_path / "native" / "provenance_cca_phone.json").read_text())
    assert native["state_rate"] == "native" and native["layer_strides"]["D0"] == 640
    assert native["scores"]["T0"] == scores["T0"] and native["scores"]["D0"] != scores["D0"]
    assert len(list((tmp_path / "cache").iterdir())) == 2

    assert _cca(corpus, tiny_checkpoint, tmp_path / "out", tmp_path / "cache", "--property", "mel",
                "--layers", "T0,D0,T12") == 0  # fmt: skip
    mel = json.loads((tmp_path / "out" / "cca_mel.json").read_text())
    # the waveform CNN's C1..C7 first (paper Fig. 4), then the asked layers
    assert list(mel) == [f"C{i}" for i in range(1, 8)] + ["T0", "D0", "T12"]
    assert all(0.0 < s < 1.0 for s in mel.values())
    assert "T12" in capsys.readouterr().out


def test_glove_style_embeddings_drop_missing_words(corpus, tiny_checkpoint, tmp_path):
    words = sorted({s.label for s in segments.read_segments(segments.list_utterances(corpus, SPLIT), "words")})
    rng = np.random.default_rng(0)
    kept = words[: len(words) * 3 // 4]
    lines = [f"{w} " + " ".join(f"{v:.4f}" for v in rng.standard_normal(4)) for w in kept]
    (tmp_path / "vectors.txt").write_text(f"{len(kept)} 4\n" + "\n".join(lines) + "\n")
    assert _cca(corpus, tiny_checkpoint, tmp_path / "out", tmp_path / "cache", "--property", "glove",
                "--embeddings", str(tmp_path / "vectors.txt"), "--layers", "T0,T12") == 0  # fmt: skip
    provenance = json.loads((tmp_path / "out" / "provenance_cca_glove.json").read_text())
    all_words = len(segments.read_segments(segments.list_utterances(corpus, SPLIT), "words"))
    assert 0 < provenance["samples_per_layer"]["T0"] < all_words


def _frame_phones(corpus: Path) -> dict[int, np.ndarray]:
    """Phone index of every 20 ms frame of every utterance, keyed by the utterance's audio length."""
    utterances = segments.list_utterances(corpus, SPLIT)
    inventory = sorted({s.label for s in segments.read_segments(utterances, "phones")})
    by_length = {}
    for utterance in utterances:
        import soundfile

        length = soundfile.info(str(utterance.audio)).frames
        frames = (length - 400) // 320 + 1
        labels = np.zeros(frames, dtype=int)  # 0 = silence
        for interval in read_textgrid(utterance.alignment).tier("phones").intervals:
            if interval.label:
                first, last = int(interval.start / 0.02), int(np.ceil(interval.end / 0.02))
                labels[first:last] = 1 + inventory.index(interval.label.rstrip("012").upper())
        assert length not in by_length
        by_length[length] = labels
    return by_length, len(inventory) + 1


def test_planted_phone_signal_ranks_its_layer_first(corpus, tmp_path):
    """A fake upstream whose layer 2 is a noisy linear map of one-hot phone labels; the others are noise or
    acoustics. CCA-phone must rank layer 2 first, which also checks that pooling follows the alignments."""
    frame_phones, n_phones = _frame_phones(corpus)
    rng = np.random.default_rng(1)
    mixing = rng.standard_normal((n_phones, 24))
    acoustic = rng.standard_normal((80, 24))
    planted = 2

    def extract(audio: np.ndarray) -> list[LayerOutput]:
        phones = frame_phones[len(audio)]
        noise = np.random.default_rng(len(audio))
        layers = [noise.standard_normal((len(phones), 24)) for _ in range(4)]
        layers[planted] = np.eye(n_phones)[phones] @ mixing + 0.8 * layers[planted]
        layers[1] = log_mel(audio)[::2][: len(phones)] @ acoustic + 0.1 * layers[1]
        return [LayerOutput(f"L{i}", layer.astype(np.float32), 320) for i, layer in enumerate(layers)]

    settings = AnalysisSettings(properties=("phone",), split=SPLIT, cache_dir=tmp_path / "cache", progress=False)
    result = run_cca(extract, corpus, tmp_path / "out", settings, {"name": "planted"})
    assert max(result.scores, key=result.scores.get) == f"L{planted}"
    # acoustics carry some phone information, noise none
    assert result.scores["L1"] > 0.3 and abs(result.scores["L0"]) < 0.1 and abs(result.scores["L3"]) < 0.1


def test_bad_input_gives_one_clear_error(corpus, tiny_checkpoint, tmp_path, capsys):
    assert _cca(corpus, tiny_checkpoint, tmp_path / "o", tmp_path / "c", "--property", "syllable") == 2
    assert "unknown property 'syllable'; choose one of mel, phone, word, glove, agwe" in capsys.readouterr().err
    assert _cca(corpus, tiny_checkpoint, tmp_path / "o", tmp_path / "c", "--property", "word",
                "--word-counts-split", "train-other-500") == 2  # fmt: skip
    assert "no aligned split starting with 'train-other-500'" in capsys.readouterr().err
    assert _cca(corpus, tiny_checkpoint, tmp_path / "o", tmp_path / "c", "--property", "agwe") == 2
    assert "property agwe needs a word-embedding file" in capsys.readouterr().err
    assert _cca(corpus, tiny_checkpoint, tmp_path / "o", tmp_path / "c", "--property", "phone",
                "--layers", "T0,X9") == 2  # fmt: skip
    assert "unknown layer(s) ['X9']" in capsys.readouterr().err
    assert _cca(corpus, tiny_checkpoint, tmp_path / "o", tmp_path / "c", "--property", "phone", "--threads", "0") == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err

    broken = tmp_path / "broken"
    shutil.copytree(corpus, broken)
    victim = sorted((broken / "alignments" / SPLIT).rglob("*.TextGrid"))[0]
    victim.unlink()
    assert _cca(broken, tiny_checkpoint, tmp_path / "o", tmp_path / "c", "--property", "word") == 2
    assert "no alignment for" in (err := capsys.readouterr().err) and victim.name in err
    with pytest.raises(segments.CorpusLayoutError, match="no audio for split 'nope'"):
        run_cca(
            lambda a: [], corpus, tmp_path / "o", AnalysisSettings(properties=("mel",), split="nope"), {"name": "x"}
        )


def test_word_sample_is_ranked_by_the_training_split(corpus, tmp_path):
    """Analysing dev-clean, the words come from train-clean-100's ranking (the corpus's training split, the
    default), or from a word list file; each with all its dev-clean segments up to the cap."""
    from downstream_probes.analysis.analyze import AnalysisSettings, _word_ranking

    dev = segments.read_segments(segments.list_utterances(corpus, "dev-clean"), "words")
    train_ranking = segments.rank_words(
        segments.read_alignment_labels(corpus / "alignments" / "train-clean-100", "words")
    )
    ranking, source = _word_ranking(corpus, AnalysisSettings(split="dev-clean"))
    assert ranking == train_ranking and source == "counts in train-clean-100"
    expected = [w for w in train_ranking[:5] if w in {s.label for s in dev}]
    assert expected != segments.rank_words(s.label for s in dev)[: len(expected)]  # the corpus tells them apart
    sample = segments.sample_words(dev, np.random.default_rng(0), 5, 15, ranking)
    assert {s.label for s in sample} == set(expected)
    assert len(sample) == sum(min(15, sum(s.label == w for s in dev)) for w in expected)

    (tmp_path / "word.lst").write_text("\n".join(["<unk>", *reversed(expected)]) + "\n")
    ranking, source = _word_ranking(corpus, AnalysisSettings(word_list=tmp_path / "word.lst"))
    assert ranking == list(reversed(expected)) and source.startswith("word list")
    ranking, source = _word_ranking(corpus, AnalysisSettings(split="dev-clean", word_counts_split=None))
    assert ranking is None and source == "counts in dev-clean"


def test_pooling_follows_the_reference_frame_spans():
    # [0.05, 0.13] s at 20 ms: frames floor(2.5)=2 .. ceil(6.5)=7 -> 2..6; middle third drops (5+1)//3 = 2 each side
    assert segments.frame_span(0.05, 0.13, 0.02, 100) == (2, 7)
    assert segments.frame_span(0.05, 0.13, 0.02, 100, middle_third=True) == (4, 5)
    assert segments.frame_span(0.0, 0.001, 0.02, 100) == (0, 1)  # at least one frame
    assert segments.frame_span(1.99, 2.5, 0.02, 100) == (99, 100)  # clipped to the utterance
    features = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.testing.assert_allclose(segments.pool_segments(features, 0.04, [(0.0, 0.08)]), [[1.0, 2.0]])


def test_log_mel_matches_librosa_settings_of_the_reference():
    librosa = pytest.importorskip("librosa")
    from scipy.signal import lfilter

    rng = np.random.default_rng(0)
    audio = 0.1 * rng.standard_normal(16_000) + np.sin(np.arange(16_000) * 0.3)
    scaled = audio / np.abs(audio).max() * 0.999
    mel = librosa.feature.melspectrogram(
        y=lfilter([1, -0.97], [1], scaled), sr=16_000, n_fft=2048, n_mels=80, hop_length=160, win_length=400,
        fmin=50, power=1,
    )  # fmt: skip
    expected = (librosa.amplitude_to_db(mel, top_db=80) / 80 + 1).T
    np.testing.assert_allclose(log_mel(audio), expected, atol=1e-5)
    with pytest.raises(ValueError, match="silent"):
        log_mel(np.zeros(1600))


def test_embedding_file_reader(tmp_path):
    from downstream_probes.analysis.embeddings import EmbeddingFileError, read_embeddings

    (tmp_path / "e.txt").write_text("2 3\nHello 1 2 3\nworld 4 5 6\n")
    vectors = read_embeddings(tmp_path / "e.txt", {"Hello", "world"})
    assert list(vectors) == ["Hello", "world"] and vectors["Hello"].tolist() == [1.0, 2.0, 3.0]
    (tmp_path / "bad.txt").write_text("a 1 2\nb 1\n")
    with pytest.raises(EmbeddingFileError, match="bad.txt:2: 1 values, the first line had 2"):
        read_embeddings(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_embeddings(tmp_path / "none.txt")


@pytest.mark.parametrize("value", ["nan", "inf", "1e999"])
def test_non_finite_embeddings_are_named(tmp_path, value):
    """NaN or 1e999 in an embeddings file failed later in the CCA with no file named (issue 24)."""
    from downstream_probes.analysis.embeddings import EmbeddingFileError, read_embeddings

    (tmp_path / "e.txt").write_text(f"hello 0.1 0.2\nworld 0.3 {value}\n")
    with pytest.raises(EmbeddingFileError, match=r"e.txt:2: the vector of 'world' holds NaN or infinite values"):
        read_embeddings(tmp_path / "e.txt")
