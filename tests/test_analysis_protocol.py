"""The reference protocol's details, one test each (issue 12, fixes 2-9): word ranking, GloVe lookup, frame
spans, MI clustering, spoken STS pairs, CNN windows, and curves placed by layer name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import mutual_info_score
from threadpoolctl import threadpool_limits

from downstream_probes.analysis import segments
from downstream_probes.analysis.embeddings import read_embeddings
from downstream_probes.analysis.extraction import average_windows, cnn_window
from downstream_probes.analysis.mutual_info import PHONE_CLUSTERING, WORD_CLUSTERING, mutual_information_score
from downstream_probes.analysis.sts import STSInputError, read_spoken_sts, spoken_sts_pair_score


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def _segments(words: str, utterance: int = 0) -> list[segments.Segment]:
    return [segments.Segment(utterance, 0.1 * i, 0.1 * i + 0.05, w) for i, w in enumerate(words.split())]


# ------------------------------------------------------------------------------ fix 3: which words


def test_word_sample_follows_a_training_ranking_not_the_analysed_split():
    train = _segments("the the the the of of of and and cat")
    dev = _segments("cat cat cat cat and and of the dog dog dog dog dog")
    ranking = segments.rank_words(s.label for s in train)
    assert ranking == ["the", "of", "and", "cat"]
    rng = np.random.default_rng(0)
    chosen = segments.sample_words(dev, rng, n_words=2, max_per_word=15, ranking=ranking)
    # the two top TRAINING words, every dev segment of each (<= 15); dev's own top words (dog, cat) are not taken
    assert sorted(s.label for s in chosen) == ["of", "the"]
    # a ranked word the analysed split lacks is skipped; the cap applies per word
    chosen = segments.sample_words(dev, rng, n_words=4, max_per_word=2, ranking=["zebra", "cat", "and", "of"])
    assert sorted(s.label for s in chosen) == ["and", "and", "cat", "cat", "of"]
    # without a ranking: the analysed split's own counts (the old behaviour, still available)
    assert {s.label for s in segments.sample_words(dev, rng, 2, 15)} == {"cat", "dog"}


def test_word_list_file_is_the_references_word_lst(tmp_path):
    (tmp_path / "word.lst").write_text("the\n<unk>\nof\n\nand\n")
    assert segments.read_word_list(tmp_path / "word.lst") == ["the", "of", "and"]
    with pytest.raises(segments.CorpusLayoutError, match="not found"):
        segments.read_word_list(tmp_path / "none.lst")


def test_training_sample_draws_randint_low_high_per_label():
    pool = _segments(" ".join(["a"] * 50 + ["b"] * 3 + ["c"] * 20))
    rng = np.random.default_rng(1)
    counts = [
        {k: sum(s.label == k for s in segments.sample_training_segments(pool, ["a", "b"], rng, 5, 10)) for k in "ab"}
        for _ in range(40)
    ]
    assert all(5 <= c["a"] <= 10 for c in counts) and len({c["a"] for c in counts}) > 2
    assert all(c["b"] == 3 for c in counts)  # fewer than low: all of them
    assert segments.sample_training_segments(pool, ["zzz"], rng, 5, 10) == []


# ------------------------------------------------------------------------------ fix 4: GloVe lookup


def test_glove_lookup_is_case_sensitive_and_splits_on_single_spaces(tmp_path):
    (tmp_path / "glove.txt").write_text("Hello 1 2\nhello 3 4\nnew\u00a0york 5 6\nhello 7 8\n", encoding="utf-8")
    vectors = read_embeddings(tmp_path / "glove.txt", {"Hello", "hello", "new\u00a0york", "HELLO"})
    assert vectors["Hello"].tolist() == [1.0, 2.0]
    assert vectors["hello"].tolist() == [7.0, 8.0]  # listed twice: the last line wins, as in the reference's dict
    assert vectors["new\u00a0york"].tolist() == [5.0, 6.0]
    assert "HELLO" not in vectors


# ------------------------------------------------------------------------------ fix 6: frame spans


def test_frame_spans_are_plain_floor_and_ceil():
    # 0.58 / 0.02 = 28.999999999999996 and 0.14 / 0.02 = 7.000000000000001 in floating point: the reference's
    # np.floor / np.ceil give 28 and 8 (a guard of 1e-9 would give 29 and 7)
    assert segments.frame_span(0.58, 0.7, 0.02, 100) == (28, 35)
    assert segments.frame_span(0.1, 0.14, 0.02, 100) == (5, 8)
    assert segments.frame_span(0.05, 0.13, 0.02, 100) == (2, 7)
    assert segments.frame_span(0.05, 0.13, 0.02, 100, middle_third=True) == (4, 5)


# ------------------------------------------------------------------------------ fix 7: MI


def test_mi_is_the_references_clustering_with_three_initialisations():
    assert (PHONE_CLUSTERING.n_clusters, PHONE_CLUSTERING.batch_size, PHONE_CLUSTERING.max_iter) == (500, 1500, 500)
    assert (WORD_CLUSTERING.n_clusters, WORD_CLUSTERING.batch_size, WORD_CLUSTERING.max_iter) == (5000, 4000, 500)
    assert PHONE_CLUSTERING.n_init == WORD_CLUSTERING.n_init == 3
    assert PHONE_CLUSTERING.train_per_label == (3000, 7000) and WORD_CLUSTERING.train_per_label == (600, 1200)
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((6, 5)) * 2
    train_labels, eval_labels = rng.integers(0, 6, 500), rng.integers(0, 6, 200)
    train = centres[train_labels] + rng.standard_normal((500, 5))
    held_out = centres[eval_labels] + rng.standard_normal((200, 5))
    ours = mutual_information_score(train, held_out, eval_labels, n_clusters=15, batch_size=100, seed=7)
    kmeans = MiniBatchKMeans(n_clusters=15, batch_size=100, max_iter=500, n_init=3, random_state=7)
    clusters = kmeans.fit(train).predict(held_out)
    assert ours == mutual_info_score(clusters, eval_labels) / mutual_info_score(eval_labels, eval_labels)
    # one initialisation (today's scikit-learn default) is another clustering
    single = MiniBatchKMeans(n_clusters=15, batch_size=100, max_iter=500, n_init=1, random_state=7)
    assert not np.array_equal(single.fit(train).predict(held_out), clusters)


# ------------------------------------------------------------------------------ fix 8: spoken STS


def _write_sts(root, pairs, speakers=4):
    import soundfile

    rows = []
    for pair_id, similarity in enumerate(pairs):
        for speaker in range(speakers):
            row = {"task": "t", "subtask": "s", "pair_id": pair_id, "speaker_id": f"spk{speaker}",
                   "audio_a": f"audio/{pair_id}_{speaker}_a.wav", "audio_b": f"audio/{pair_id}_{speaker}_b.wav",
                   "similarity": similarity}  # fmt: skip
            for side in "ab":
                (root / "audio").mkdir(parents=True, exist_ok=True)
                soundfile.write(str(root / row[f"audio_{side}"]), np.zeros(800, dtype=np.int16), 16000)
            rows.append(row)
    (root / "sts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_spoken_sts_is_spearman_of_the_mean_of_16_speaker_combinations(tmp_path):
    similarities = [4.5, 0.5, 2.0, 3.0, 1.0]
    _write_sts(tmp_path, similarities)
    pairs = read_spoken_sts(tmp_path)
    assert [p.key for p in pairs] == [f"t_s_{i}" for i in range(5)]
    assert all(len(p.audio_a) == len(p.audio_b) == 4 for p in pairs)
    rng = np.random.default_rng(5)
    vectors = {path: rng.standard_normal(6) for p in pairs for path in (*p.audio_a, *p.audio_b)}

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    by_hand = []
    for pair in pairs:
        combos = [cosine(vectors[a], vectors[b]) for a in pair.audio_a for b in pair.audio_b]
        assert len(combos) == 16
        by_hand.append(sum(combos) / 16)
    expected = spearmanr(by_hand, similarities).statistic
    assert spoken_sts_pair_score(vectors, pairs) == pytest.approx(expected, abs=1e-12)
    # the mean of the 16 is not the cosine of one speaker's recordings
    first = [cosine(vectors[p.audio_a[0]], vectors[p.audio_b[0]]) for p in pairs]
    assert spearmanr(first, similarities).statistic != pytest.approx(expected)


def test_spoken_sts_reader_errors(tmp_path):
    with pytest.raises(STSInputError, match="sts.jsonl not found"):
        read_spoken_sts(tmp_path)
    _write_sts(tmp_path, [1.0, 2.0, 3.0], speakers=1)
    lines = (tmp_path / "sts.jsonl").read_text().splitlines()
    row = json.loads(lines[0])
    row["similarity"] = 9.0
    (tmp_path / "sts.jsonl").write_text("\n".join([*lines, json.dumps(row)]) + "\n")
    with pytest.raises(STSInputError, match="pair t_s_0 has similarity 9.0"):
        read_spoken_sts(tmp_path)
    del row["similarity"]
    (tmp_path / "sts.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(STSInputError, match="missing field"):
        read_spoken_sts(tmp_path)


def test_synthetic_spoken_sts_corpus_has_the_published_layout(tmp_path):
    from downstream_probes.corpora import build_corpus, load_manifest, minimum_utterances
    from downstream_probes.corpora.spoken_sts import sentence_pair

    root = build_corpus("sts", tmp_path / "sts", utterances=minimum_utterances("sts"), seed=0)
    rows = [json.loads(line) for line in (root / "sts.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"task", "subtask", "pair_id", "speaker_id", "audio_a", "audio_b", "similarity"}
    pairs = read_spoken_sts(root)
    assert len(pairs) == 6 and all(len(p.audio_a) == len(p.audio_b) == 4 for p in pairs)
    assert sorted(p.similarity for p in pairs)[0] == 0.0 and max(p.similarity for p in pairs) == 5.0
    assert load_manifest(root)["task"] == "sts"
    rng = np.random.default_rng(0)
    for level in range(6):
        a, b, similarity = sentence_pair(rng, level)
        shared = sum(x == y for x, y in zip(a.split(), b.split(), strict=False))
        assert similarity == (0.0 if level == 0 else pytest.approx(5 * shared / len(a.split()), abs=1e-4))


# ------------------------------------------------------------------------------ fix 9: CNN layers


def test_cnn_windows_match_each_layers_receptive_field_and_stride():
    # wav2vec 2.0 / HuBERT / MR-HuBERT CNN: [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    strides, fields = [5, 10, 20, 40, 80, 160, 320], [10, 20, 40, 80, 160, 240, 400]
    windows = [cnn_window(s, f) for s, f in zip(strides, fields, strict=True)]
    # the reference's per-layer (kernel, stride) table, then C7 against every other mel frame
    assert [(k, step) for k, step, _ in windows] == [(79, 32), (39, 16), (19, 8), (9, 4), (4, 2), (2, 1), (1, 1)]
    assert [mel for _, _, mel in windows] == [160] * 6 + [320]
    features = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.testing.assert_allclose(average_windows(features, 4, 2), [features[i : i + 4].mean(0) for i in range(0, 17, 2)])


# ------------------------------------------------------------------------------ fix 2: curves by layer name


MONO = ["T0", "T1", "T2", "T3", "T4", "D0", "T5", "T6", "T7", "T8", "U0", "T9", "T10", "T11", "T12"]
B2A = ["T0", "T1", "T2", "T3", "D0", "T4", "T5", "D1", "T6", "T7", "U0", "T8", "T9", "T10", "U1", "T11", "T12"]


def test_curves_are_placed_by_layer_name():
    from downstream_probes.analysis.plots import merged_layer_order, plot_cca_curves

    assert merged_layer_order([["T0", "T4", "T12"], MONO]) == MONO
    assert merged_layer_order([MONO, B2A]) is None  # T4/D0 in opposite orders
    curves = {"small": {"T0": 0.1, "T4": 0.5, "T12": 0.2}, "mono": dict.fromkeys(MONO, 0.3)}
    figure = plot_cca_curves(curves, "word")
    axis = figure.axes[0]
    ticks = [label.get_text() for label in axis.get_xticklabels()]
    for line in axis.get_lines():
        names = list(curves[line.get_label()])
        # every point sits above the tick that names its own layer
        assert [ticks[int(x)] for x in line.get_xdata()] == names
    # conflicting orders: by position, each model's names in its own row under the axis
    layers = {"mono": MONO, "b2a": B2A}
    figure = plot_cca_curves({model: dict.fromkeys(names, 0.3) for model, names in layers.items()}, "word")
    texts = [(t.get_position()[0], t.get_text(), t.get_color()) for t in figure.axes[0].texts]
    for line in figure.axes[0].get_lines():
        row = {x: name for x, name, colour in texts if colour == line.get_color()}
        assert [row[int(x)] for x in line.get_xdata()] == layers[line.get_label()]
