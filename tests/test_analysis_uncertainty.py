"""Spread and chance levels of the analysis scores, and the uncertainty of a rank agreement (issue 21)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import adjusted_mutual_info_score, mutual_info_score
from threadpoolctl import threadpool_limits

from downstream_probes.analysis import uncertainty
from downstream_probes.analysis.analyze import AnalysisSettings, cca_chance_scores, cca_sample_set_scores, one_hot
from downstream_probes.analysis.mutual_info import ClusteringSettings, assign_clusters, normalised_mutual_information


@pytest.fixture(autouse=True)
def _one_blas_thread():
    with threadpool_limits(limits=1):
        yield


# --------------------------------------------------------------------------------------------- MI chance


def _mi_by_hand(clusters: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """I(cluster; label) in nats of each row of ``clusters`` (small integer codes) against ``labels``, from the
    contingency table: sum over cells of p(c, l) log(p(c, l) / (p(c) p(l)))."""
    n = labels.size
    joint = np.zeros((len(clusters), clusters.max() + 1, labels.max() + 1))
    for row, assignment in enumerate(clusters):
        np.add.at(joint[row], (assignment, labels), 1.0 / n)
    outer = joint.sum(axis=2, keepdims=True) * joint.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(joint > 0, joint * np.log(joint / outer), 0.0).sum(axis=(1, 2))


def test_mi_chance_level_equals_the_mean_over_every_permutation_of_fixed_clusters():
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    labels = np.array([0, 1, 1, 1, 2, 2, 0, 0])
    # by hand: the mean MI over all 8! orders of the cluster assignments (random clusters with these sizes)
    orders = np.array(list(itertools.permutations(range(8))))
    every = _mi_by_hand(clusters[orders], labels)
    assert every[0] == pytest.approx(mutual_info_score(clusters, labels), abs=1e-12)
    by_hand = every.mean()
    assert uncertainty.expected_mutual_information(clusters, labels) == pytest.approx(by_hand, rel=1e-12)
    h = mutual_info_score(labels, labels)
    chance = uncertainty.mi_chance([clusters], [labels], np.random.default_rng(0), permutations=4000)
    assert chance["mean"] == pytest.approx(by_hand / h, rel=1e-12)
    assert chance["ci95"][0] <= chance["mean"] <= chance["ci95"][1]


def test_expected_mi_agrees_with_scikit_learns_adjusted_mutual_information():
    rng = np.random.default_rng(1)
    clusters, labels = rng.integers(0, 40, 600), rng.integers(0, 25, 600)
    mi, h_c, h_l = (mutual_info_score(clusters, labels), uncertainty.entropy(clusters), uncertainty.entropy(labels))
    emi = uncertainty.expected_mutual_information(clusters, labels)
    assert (mi - emi) / ((h_c + h_l) / 2 - emi) == pytest.approx(adjusted_mutual_info_score(labels, clusters), abs=1e-9)
    permuted = uncertainty.permuted_mutual_information(clusters, labels, rng, 3000)
    assert permuted.mean() == pytest.approx(emi, rel=0.01)


def test_mi_of_unrelated_features_is_inside_its_chance_interval_and_of_label_features_far_above():
    rng = np.random.default_rng(2)
    classes = 12
    train_labels, eval_labels = rng.integers(0, classes, 1200), np.repeat(np.arange(classes), 25)
    centres = rng.normal(0.0, 4.0, (classes, 8))
    related = {"train": centres[train_labels] + rng.normal(size=(1200, 8)),
               "eval": centres[eval_labels] + rng.normal(size=(300, 8))}  # fmt: skip
    unrelated = {"train": rng.normal(size=(1200, 8)), "eval": rng.normal(size=(300, 8))}
    results = {}
    for name, features in (("related", related), ("unrelated", unrelated)):
        clusters = [assign_clusters(ClusteringSettings(30, 1500), features["train"], features["eval"], eval_labels, s)
                    for s in range(3)]  # fmt: skip
        score = np.mean([normalised_mutual_information(c, eval_labels) for c in clusters])
        chance = uncertainty.mi_chance(clusters, [eval_labels] * 3, np.random.default_rng(3), permutations=400)
        results[name] = (score, chance)
    score, chance = results["unrelated"]
    assert chance["ci95"][0] <= score <= chance["ci95"][1], (score, chance)
    assert chance["mean"] > 0.15  # the floor of 30 clusters over 12 labels of 25 segments: far from 0
    score, chance = results["related"]
    assert score > chance["ci95"][1] + 0.3
    assert uncertainty.adjusted_score(score, chance["mean"]) > 0.5


# --------------------------------------------------------------------------------------------- CCA chance


def _segment_views(x: np.ndarray, labels: np.ndarray, sets: list[np.ndarray]):
    def views(name: str, sample_set: int):
        rows = sets[sample_set]
        return x[rows], one_hot(labels[rows]), labels[rows]

    return views


@pytest.mark.parametrize("related", [False, True])
def test_cca_of_unrelated_features_is_inside_its_chance_interval_and_of_label_features_far_above(related):
    rng = np.random.default_rng(4)
    classes, per_class, dims = 8, 60, 12
    labels = np.repeat(np.arange(classes), per_class)
    x = rng.normal(size=(len(labels), dims))
    if related:
        x[:, :classes] += 1.5 * one_hot(labels)
    # three sample sets: 40 of each class's 60 segments each
    sets = [np.sort(np.concatenate([np.flatnonzero(labels == c)[rng.permutation(per_class)[:40]]
                                    for c in range(classes)])) for _ in range(3)]  # fmt: skip
    settings = AnalysisSettings(sample_sets=3, chance_permutations=4, seed=0)
    views = _segment_views(x, labels, sets)
    trials, samples = cca_sample_set_scores(views, "L", settings)
    assert samples == classes * 40 and len(trials) == 3 and all(len(t) == 3 for t in trials)
    score = np.mean([np.mean(t) for t in trials])
    chance = uncertainty.chance_summary(cca_chance_scores(views, "L", settings), 3)
    assert chance["count"] == 4
    if related:
        assert score > chance["ci95"][1] + 0.3, (score, chance)
    else:
        assert chance["ci95"][0] <= score <= chance["ci95"][1], (score, chance)
    spread = uncertainty.summarise([np.mean(t) for t in trials])
    assert spread["count"] == 3 and spread["ci95"][0] < score < spread["ci95"][1]


def test_summaries_are_t_intervals_and_one_set_has_no_interval():
    summary = uncertainty.summarise([0.5, 0.6, 0.7])
    assert summary["mean"] == pytest.approx(0.6) and summary["sd"] == pytest.approx(0.1)
    assert summary["ci95"] == pytest.approx([0.6 - 4.302653 * 0.1 / np.sqrt(3), 0.6 + 4.302653 * 0.1 / np.sqrt(3)])
    assert uncertainty.summarise([0.5]) == {"mean": 0.5, "sd": None, "ci95": None, "count": 1}
    chance = uncertainty.chance_summary([0.1, 0.2, 0.3], n_sets=3)
    assert chance["ci95"][1] - 0.2 == pytest.approx(4.302653 * 0.1 * np.sqrt(2 / 3), rel=1e-6)


# --------------------------------------------------------------------------------------------- STS


def test_sts_chance_is_centred_on_zero_and_a_real_relation_is_above_it():
    rng = np.random.default_rng(5)
    judgements = rng.uniform(0, 5, 80)
    unrelated = rng.normal(size=80)
    related = judgements + rng.normal(0, 1.0, 80)
    spread, chance = uncertainty.sts_uncertainty(unrelated, judgements, np.random.default_rng(0), 2000)
    rho = spearmanr(unrelated, judgements).statistic
    assert chance["ci95"][0] <= rho <= chance["ci95"][1] and abs(chance["mean"]) < 0.02
    assert spread["count"] == 80 and spread["ci95"][0] < rho < spread["ci95"][1]
    _, chance = uncertainty.sts_uncertainty(related, judgements, np.random.default_rng(0), 2000)
    assert spearmanr(related, judgements).statistic > chance["ci95"][1] + 0.3


# --------------------------------------------------------------------------------------------- rank agreement


@pytest.mark.parametrize("curves", ["independent values", "random walks"])
def test_independent_layer_curves_reach_p_below_005_in_at_most_9_percent_of_200_pairs(curves):
    rng = np.random.default_rng(6)
    hits = 0
    for _ in range(200):
        a, b = rng.normal(size=15), rng.normal(size=15)
        if curves == "random walks":  # smooth like real layer curves: neighbours strongly correlated
            a, b = np.cumsum(a), np.cumsum(b)
        hits += uncertainty.surrogate_p_value(a, b, rng, surrogates=499) < 0.05
    assert hits / 200 <= 0.09, hits


def test_a_plain_permutation_test_is_far_too_optimistic_on_random_walks():
    """Why the surrogates: the same random walks, tested as if the 15 layers were independent."""
    from scipy.stats import spearmanr as plain

    rng = np.random.default_rng(6)
    hits = sum(plain(np.cumsum(rng.normal(size=15)), np.cumsum(rng.normal(size=15))).pvalue < 0.05 for _ in range(200))
    assert hits / 200 > 0.2


def test_agreement_intervals_cover_the_true_rho_of_a_correlated_pair_in_90_to_99_percent_of_200_draws():
    """A CCA curve measured on 3 sample sets x 3 test splits and weights from 3 downstream seeds, both noisy views of
    two correlated true curves; the interval should hold the true curves' rho about 95 % of the time."""
    rng = np.random.default_rng(7)
    layers, covered = 15, 0
    for _ in range(200):
        common = np.cumsum(rng.normal(0.0, 0.05, layers))
        true_a, true_b = common + rng.normal(0, 0.03, layers), common + rng.normal(0, 0.03, layers)
        true_rho = spearmanr(true_a, true_b).statistic
        cca = true_a + rng.normal(0, 0.005, (3, 1, layers)) + rng.normal(0, 0.005, (3, 3, layers))
        seeds = true_b + rng.normal(0, 0.008, (3, 1, layers))
        result = uncertainty.agreement_uncertainty(list(cca), list(seeds), rng, resamples=1000, surrogates=99)
        low, high = result["spearman_ci95"]
        covered += low <= true_rho <= high
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_agreement_uncertainty_point_values_match_scipy():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(2, 12))
    result = uncertainty.agreement_uncertainty([a[None]], [b[None]], rng, resamples=50, surrogates=99)
    assert result["spearman"] == pytest.approx(spearmanr(a, b).statistic)
    assert result["kendall"] == pytest.approx(kendalltau(a, b).statistic)
    # one replicate on each side: nothing to resample, the interval is the point
    assert result["spearman_ci95"] == pytest.approx([result["spearman"]] * 2)
    assert uncertainty.top_k_chance(3, 15) == pytest.approx(0.2)
