"""Mutual information (k-means clusters vs labels) and spoken STS (Spearman's rho of cosine similarities)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import mutual_info_score
from threadpoolctl import threadpool_limits

from downstream_probes.analysis.mutual_info import (
    MutualInfoInputError,
    clustering_for,
    mutual_information_score,
)
from downstream_probes.analysis.sts import STSInputError, mean_pool, read_spoken_sts, spoken_sts_score


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


def clustered(rng, labels, spread, centres=None):
    centres = rng.standard_normal((labels.max() + 1, 8)) * 5 if centres is None else centres
    return centres[labels] + spread * rng.standard_normal((len(labels), 8))


def test_mi_is_high_for_label_clusters_and_low_for_noise():
    rng = np.random.default_rng(0)
    train_labels, eval_labels = rng.integers(0, 10, 600), rng.integers(0, 10, 300)
    centres = rng.standard_normal((10, 8)) * 5
    informative = mutual_information_score(
        clustered(rng, train_labels, 0.3, centres),
        clustered(rng, eval_labels, 0.3, centres),
        eval_labels,
        n_clusters=20,
        seed=0,
    )
    noise = mutual_information_score(
        rng.standard_normal((600, 8)), rng.standard_normal((300, 8)), eval_labels, n_clusters=20
    )
    assert informative > 0.9
    assert noise < 0.3


def test_mi_is_seeded_and_normalised_by_label_entropy():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 400)
    reps = clustered(rng, labels, 2.0)
    first = mutual_information_score(reps[:300], reps[300:], labels[300:], n_clusters=12, seed=3)
    assert first == mutual_information_score(reps[:300], reps[300:], labels[300:], n_clusters=12, seed=3)
    # the same number computed by hand from the same seeded clustering, with scikit-learn's compute_labels=True
    # (the reference's call; ours skips that final labelling pass, the centroids are the same)
    from sklearn.cluster import MiniBatchKMeans

    kmeans = MiniBatchKMeans(n_clusters=12, batch_size=1500, max_iter=500, n_init=3, random_state=3)
    clusters = kmeans.fit(reps[:300]).predict(reps[300:])
    expected = mutual_info_score(clusters, labels[300:]) / mutual_info_score(labels[300:], labels[300:])
    assert first == pytest.approx(expected)
    assert 0.0 <= first <= 1.0


def test_mi_bad_input():
    rng = np.random.default_rng(2)
    with pytest.raises(MutualInfoInputError, match="3 labels for 50"):
        mutual_information_score(rng.random((60, 4)), rng.random((50, 4)), [0, 1, 2], n_clusters=5)
    with pytest.raises(MutualInfoInputError, match="n_clusters=100 needs between 2 and the 60"):
        mutual_information_score(rng.random((60, 4)), rng.random((50, 4)), [0, 1] * 25, n_clusters=100)
    with pytest.raises(MutualInfoInputError, match="every eval label is the same"):
        mutual_information_score(rng.random((60, 4)), rng.random((50, 4)), [1] * 50, n_clusters=5)
    with pytest.raises(MutualInfoInputError, match="differ in dimensions"):
        mutual_information_score(rng.random((60, 4)), rng.random((50, 3)), [0, 1] * 25, n_clusters=5)
    assert clustering_for("word").n_clusters == 5000 and clustering_for("phone").n_clusters == 500
    with pytest.raises(MutualInfoInputError, match="unknown unit"):
        clustering_for("syllable")


def test_spoken_sts_is_spearman_of_cosines_of_mean_pooled_utterances():
    rng = np.random.default_rng(3)
    reps = {f"u{i}": rng.standard_normal((int(rng.integers(3, 9)), 5)) for i in range(8)}
    pairs = [("u0", "u1", 4.0), ("u2", "u3", 1.0), ("u4", "u5", 2.5), ("u6", "u7", 3.0), ("u0", "u7", 0.5)]
    pooled = {k: v.mean(axis=0) for k, v in reps.items()}
    cosines = [pooled[a] @ pooled[b] / np.linalg.norm(pooled[a]) / np.linalg.norm(pooled[b]) for a, b, _ in pairs]
    expected = spearmanr(cosines, [s for _, _, s in pairs]).statistic
    assert spoken_sts_score(reps, pairs) == pytest.approx(expected)
    # representations that order the pairs exactly as the judgements do score 1
    aligned = {}
    for _index, (a, b, score) in enumerate(pairs[:4]):
        angle = (5.0 - score) / 5.0 * np.pi / 2
        aligned[a], aligned[b] = np.array([1.0, 0.0]), np.array([np.cos(angle), np.sin(angle)])
    assert spoken_sts_score(aligned, pairs[:4]) == pytest.approx(1.0)
    assert mean_pool(np.ones((4, 3)) * 2).tolist() == [2.0, 2.0, 2.0]


def test_spoken_sts_bad_input():
    reps = {"a": np.ones((2, 3)), "b": np.ones((2, 3)), "c": np.zeros((2, 3))}
    with pytest.raises(STSInputError, match=r"no representation for utterance\(s\) \['z'\]"):
        spoken_sts_score(reps, [("a", "z", 1.0), ("a", "b", 2.0), ("b", "a", 3.0)])
    with pytest.raises(STSInputError, match="at least 3"):
        spoken_sts_score(reps, [("a", "b", 1.0)])
    with pytest.raises(STSInputError, match="zero vector"):
        spoken_sts_score(reps, [("a", "c", 1.0), ("a", "b", 2.0), ("b", "a", 3.0)])
    with pytest.raises(STSInputError, match="every human judgement is the same"):
        spoken_sts_score(reps, [("a", "b", 1.0), ("a", "b", 1.0), ("b", "a", 1.0)])


def test_mi_training_sample_keeps_the_references_running_minimum_of_its_bounds():
    """The reference's sample_tokens overwrites min_cnt/max_cnt in its loop: a label with fewer segments than the
    lower bound lowers it for every later label. Labels a (10 segments), b (3), c (10), bounds 5..8."""
    from downstream_probes.analysis.segments import Segment, sample_training_segments

    pool = [Segment(i, 0.0, 1.0, label) for i, label in enumerate("a" * 10 + "b" * 3 + "c" * 10)]
    for seed in range(5):
        running = sample_training_segments(
            pool, ["a", "b", "c"], np.random.default_rng(seed), 5, 8, running_bounds=True
        )
        own = sample_training_segments(pool, ["a", "b", "c"], np.random.default_rng(seed), 5, 8)
        count = lambda chosen, label: sum(s.label == label for s in chosen)  # noqa: E731
        assert 5 <= count(running, "a") <= 8 and count(running, "b") == 3
        assert count(running, "c") == 3  # randint(min(5, 3), min(8, 3)): the running minimum carried over
        assert 5 <= count(own, "c") <= 8 and count(own, "b") == 3


def _sts_corpus(root: Path, audio_a: object, similarity: object = 1.0) -> Path:
    import soundfile

    corpus = root / "corpus"
    (corpus / "audio").mkdir(parents=True)
    soundfile.write(str(corpus / "audio" / "b.wav"), np.zeros(800, dtype=np.int16), 16000)
    row = {"task": "t", "subtask": "s", "pair_id": 0, "speaker_id": "spk0", "audio_a": audio_a,
           "audio_b": "audio/b.wav", "similarity": similarity}  # fmt: skip
    (corpus / "sts.jsonl").write_text(json.dumps(row) + "\n")
    return corpus


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "audio/../../secret.wav", "link.wav"])
def test_spoken_sts_audio_resolves_inside_the_corpus(tmp_path: Path, name: str) -> None:
    """Issue 24 item 3: an audio path of ``sts.jsonl`` leading out of the corpus (``..``, absolute, a link) was
    read; now refused, naming the row."""
    import soundfile

    soundfile.write(str(tmp_path / "secret.wav"), np.zeros(800, dtype=np.int16), 16000)
    corpus = _sts_corpus(tmp_path, name)
    (corpus / "link.wav").symlink_to(tmp_path / "secret.wav")
    with pytest.raises(STSInputError, match=r"sts.jsonl:1: audio_a .* leads outside the corpus folder"):
        read_spoken_sts(corpus)


@pytest.mark.parametrize(("audio_a", "similarity"), [(3, 1.0), ("audio/b.wav", "high"), ("audio/b.wav", None)])
def test_spoken_sts_mistyped_rows_are_named(tmp_path: Path, audio_a: object, similarity: object) -> None:
    corpus = _sts_corpus(tmp_path, audio_a, similarity)
    with pytest.raises(STSInputError, match=r"sts.jsonl:1: "):
        read_spoken_sts(corpus)
    (corpus / "sts.jsonl").write_text("[1, 2]\n")
    with pytest.raises(STSInputError, match=r"sts.jsonl:1: a list, not a JSON object"):
        read_spoken_sts(corpus)
