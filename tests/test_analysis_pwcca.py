"""PWCCA: parity with a plain NumPy statement of the reference math, the protocol, stability, bad input."""

from __future__ import annotations

from importlib import import_module

import numpy as np
import pytest
import scipy.sparse
from threadpoolctl import threadpool_limits

from downstream_probes.analysis import CCAInputError, cca_protocol, cca_score, pwcca
from downstream_probes.analysis.moments import View, joint_scatter
from downstream_probes.analysis.splits import epsilon_schedule, stratified_splits
from downstream_probes.testing.reference_pwcca import reference_projections, reference_pwcca

# the package exports the function ``pwcca``, which hides the module of the same name from attribute access
pwcca_module = import_module("downstream_probes.analysis.pwcca")
held_out_module = import_module("downstream_probes.analysis.held_out")
fit_module = import_module("downstream_probes.analysis.fit")


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """Small matrices: threads only contend on the shared test machine."""
    with threadpool_limits(limits=1):
        yield


# ----------------------------------------------------------------------------- the math, stated plainly


def paired_views(rng, n, dx, dy, latent=6, offset=(3.0, -1.0)):
    """Two noisy views of one latent signal, with non-zero means (the means matter to the weighting)."""
    z = rng.standard_normal((n, latent))
    x = z @ rng.standard_normal((latent, dx)) + rng.standard_normal((n, dx)) + offset[0]
    y = z @ rng.standard_normal((latent, dy)) + 0.5 * rng.standard_normal((n, dy)) + offset[1]
    return x, y


@pytest.mark.parametrize(("dx", "dy"), [(24, 10), (10, 24), (16, 16)])
def test_pwcca_equals_the_plain_numpy_statement(dx, dy):
    x, y = paired_views(np.random.default_rng(dx * 100 + dy), 900, dx, dy)
    train, held = slice(0, 700), slice(700, None)
    lapack = pwcca(x[train], y[train], x[held], y[held], 1e-10, 1e-9, sign_convention="lapack")
    assert lapack == pytest.approx(reference_pwcca(x[train], y[train], x[held], y[held], 1e-10, 1e-9), abs=1e-6)
    canonical = pwcca(x[train], y[train], x[held], y[held], 1e-10, 1e-9)
    expected = reference_pwcca(x[train], y[train], x[held], y[held], 1e-10, 1e-9, fix_signs=True)
    assert canonical == pytest.approx(expected, abs=1e-6)


def test_sign_convention_is_the_only_difference_when_held_out_means_are_zero():
    x, y = paired_views(np.random.default_rng(3), 800, 12, 9)
    x_eval, y_eval = x[600:] - x[600:].mean(axis=0), y[600:] - y[600:].mean(axis=0)
    plain = reference_pwcca(x[:600], y[:600], x_eval, y_eval, 1e-11, 1e-11)
    assert pwcca(x[:600], y[:600], x_eval, y_eval, 1e-11, 1e-11) == pytest.approx(plain, abs=1e-9)


def test_float32_views_and_small_chunks_give_the_same_score():
    x, y = paired_views(np.random.default_rng(4), 700, 14, 8)
    x32 = x.astype(np.float32)
    reference = reference_pwcca(x32[:500], y[:500], x32[500:], y[500:], 1e-10, 1e-10, fix_signs=True)
    ours = pwcca(x32[:500], y[:500], x32[500:], y[500:], 1e-10, 1e-10, chunk_rows=37)
    assert ours == pytest.approx(reference, abs=1e-6)


def test_three_ways_of_scoring_a_held_out_part_agree(monkeypatch):
    """In memory, in chunks and from the part's moments alone: the same number."""
    x, y = paired_views(np.random.default_rng(5), 1200, 20, 11)
    xv, yv = View(x), View(y)
    train, held = np.arange(900), np.arange(900, 1200)
    shift = np.zeros(31)
    fit = pwcca_module.TrainedCovariance.from_scatter(joint_scatter(xv, yv, train, shift), 20).fit(1e-10, 1e-10)
    scatter = joint_scatter(xv, yv, held, shift, chunk_rows=50)
    mean = scatter.mean()
    parts = {
        "moments": pwcca_module.HeldOutPart(xv, yv, held, mean[:20], mean[20:], scatter=scatter),
        "memory": pwcca_module.HeldOutPart(xv, yv, held, mean[:20], mean[20:]),
    }
    monkeypatch.setattr(held_out_module, "CACHE_BYTES", 0)
    parts["chunks"] = pwcca_module.HeldOutPart(xv, yv, held, mean[:20], mean[20:], chunk_rows=64)
    assert [part.strategy for part in parts.values()] == ["moments", "memory", "chunks"]
    scores = {name: part.score(fit) for name, part in parts.items()}
    expected = reference_pwcca(x[train], y[train], x[held], y[held], 1e-10, 1e-10, fix_signs=True)
    for name, score in scores.items():
        assert score == pytest.approx(expected, abs=1e-9), name


def test_scoring_ways_agree_when_a_canonical_direction_is_exactly_uncorrelated(monkeypatch):
    """A y column uncorrelated with x on the training rows gives a zero singular value (an arbitrary x partner,
    orthonormally completed): every way of scoring must use the same completion."""
    rng = np.random.default_rng(12)
    x, y = paired_views(rng, 1200, 20, 6)
    train, held = np.arange(900), np.arange(900, 1200)
    xc = x[train] - x[train].mean(axis=0)
    last = y[train, -1] - y[train, -1].mean()
    y[train, -1] = last - xc @ np.linalg.lstsq(xc, last, rcond=None)[0] + 2.0  # exactly uncorrelated with x
    xv, yv = View(x), View(y)
    fit = pwcca_module.TrainedCovariance.from_scatter(joint_scatter(xv, yv, train, np.zeros(26)), 20).fit(1e-10, 1e-10)
    assert fit.x_rows is not None and fit.x_rows.n_good == 5  # one weak direction
    mean = np.concatenate([x[held].mean(axis=0), y[held].mean(axis=0)])
    in_memory = pwcca_module.HeldOutPart(xv, yv, held, mean[:20], mean[20:]).score(fit)
    monkeypatch.setattr(held_out_module, "CACHE_BYTES", 0)
    chunked = pwcca_module.HeldOutPart(xv, yv, held, mean[:20], mean[20:], chunk_rows=50).score(fit)
    assert chunked == pytest.approx(in_memory, abs=1e-9)
    # a valid set of canonical directions: orthonormal under the regularised training covariance of x
    sxx = pwcca_module.TrainedCovariance.from_scatter(joint_scatter(xv, yv, train, np.zeros(26)), 20).sxx
    np.testing.assert_allclose(fit.proj_x @ (sxx + 1e-10 * np.eye(20)) @ fit.proj_x.T, np.eye(6), atol=1e-9)


@pytest.mark.parametrize(("dx", "dy"), [(20, 6), (6, 20)])
def test_lapack_signs_with_an_exactly_uncorrelated_direction_take_numpys_partner(dx, dy):
    """A zero singular value: its partner in the larger view is numpy's SVD's own vector (any unit vector of a
    15-dimensional complement, so the reference's is arbitrary too), mapped back through ``Sxx^-1/2``; the other
    directions' partners come from ``u = W v / s`` and equal the reference's, signs included."""
    rng = np.random.default_rng(14)
    x, y = paired_views(rng, 1200, dx, dy)
    small, big = (y, x) if dy < dx else (x, y)
    train = np.arange(900)
    centred = big[train] - big[train].mean(axis=0)
    last = small[train, -1] - small[train, -1].mean()
    small[train, -1] = last - centred @ np.linalg.lstsq(centred, last, rcond=None)[0] + 2.0  # uncorrelated
    covariance = pwcca_module.TrainedCovariance.from_scatter(
        joint_scatter(View(x), View(y), train, np.zeros(dx + dy)), dx
    )
    fit = covariance.fit(1e-10, 1e-10, "lapack")
    big_rows, big_cov = (fit.x_rows, covariance.sxx) if dy < dx else (fit.y_rows, covariance.syy)
    assert big_rows.n_good == 5 and big_rows.weak.shape[1] == 1
    proj_x, proj_y, _, _ = reference_projections(x[train], y[train], 1e-10, 1e-10)
    np.testing.assert_allclose(fit.proj_x[:5], proj_x[:5], atol=1e-6 * np.abs(proj_x).max())
    np.testing.assert_allclose(fit.proj_y[:5], proj_y[:5], atol=1e-6 * np.abs(proj_y).max())
    big_proj = big_rows.matrix()  # (directions, dims)
    regularised = big_cov + 1e-10 * np.eye(len(big_cov))
    np.testing.assert_allclose(big_proj @ regularised @ big_proj.T, np.eye(6), atol=1e-9)


def test_one_hot_labels_are_whitened_without_an_eigendecomposition(monkeypatch):
    """One-hot views (here with unlabelled rows, so that the problem is well-conditioned) take the
    diagonal-plus-rank-one whitening; it gives the reference's score, and the eigenbasis' on a whole protocol."""
    rng = np.random.default_rng(16)
    labels = rng.integers(0, 31, 1500)
    one_hot = np.eye(31)[labels][:, :30]  # label 30 has no column: its rows are all zeros
    x = one_hot @ rng.standard_normal((30, 40)) * 0.5 + rng.standard_normal((1500, 40)) + 1.0
    taken = []
    original = fit_module.TrainedCovariance._fit_labels

    def spy(self, *args):
        taken.append(True)
        return original(self, *args)

    monkeypatch.setattr(fit_module.TrainedCovariance, "_fit_labels", spy)
    score = pwcca(x[:1200], one_hot[:1200], x[1200:], one_hot[1200:], 1e-10, 1e-9)
    assert taken == [True]
    expected = reference_pwcca(x[:1200], one_hot[:1200], x[1200:], one_hot[1200:], 1e-10, 1e-9, fix_signs=True)
    assert score == pytest.approx(expected, abs=1e-6)
    with_labels = cca_protocol(x, one_hot, labels, seed=2)
    monkeypatch.setattr(fit_module._LabelWhitening, "build", classmethod(lambda *args: None))
    with_eigenbasis = cca_protocol(x, one_hot, labels, seed=2)
    assert with_labels.score == pytest.approx(with_eigenbasis.score, abs=1e-10)
    for ours, theirs in zip(with_labels.trials, with_eigenbasis.trials, strict=True):
        np.testing.assert_allclose(ours.dev_scores, theirs.dev_scores, atol=1e-10)


def test_label_whitening_inverts_the_regularised_covariance():
    counts = np.array([5.0, 1.0, 7.0, 3.0])
    for rows in (16, 20):  # every row labelled (the constant direction is only regularised), or some not
        covariance = (np.diag(counts) - np.outer(counts, counts) / rows) / (rows - 1)
        scale = (rows - 1) * np.abs(covariance).max()
        whitening = fit_module._LabelWhitening.build(np.arange(4), counts, rows, scale, 1e-9)
        f = whitening.times(np.eye(4))
        np.testing.assert_allclose(f.T @ f @ (covariance / np.abs(covariance).max() + 1e-9 * np.eye(4)), np.eye(4),
                                   atol=1e-6)  # fmt: skip
        np.testing.assert_allclose(whitening.transposed_times(np.eye(4)), f.T)
        gram = np.cov(np.random.default_rng(rows).standard_normal((4, 9)))
        np.testing.assert_allclose(whitening.congruence(gram), f @ gram @ f.T, rtol=1e-12)
    assert fit_module._LabelWhitening.build(np.arange(4), counts, 16, scale, 0.0) is None  # pinv would cut


def test_covariance_blocks_are_the_blocks_of_the_joint_covariance():
    rng = np.random.default_rng(15)
    labels = rng.integers(0, 30, 400)
    x, y = View(rng.standard_normal((400, 9)) + 4.0), View(np.eye(30)[labels])
    assert y.sparse
    scatter = joint_scatter(x, y, np.arange(400), np.concatenate([x.reference_shift(np.arange(400)), np.zeros(30)]))
    joint = scatter.covariance()
    for block, expected in zip(
        scatter.covariance_blocks(9), (joint[:9, :9], joint[9:, 9:], joint[:9, 9:]), strict=True
    ):
        np.testing.assert_array_equal(block, expected)
    np.testing.assert_allclose(joint, np.cov(np.hstack([x.dense_rows(np.arange(400)), y.dense_rows(np.arange(400))]).T))


@pytest.mark.parametrize(("dx", "dy"), [(24, 10), (10, 24)])
def test_cholesky_and_eigenbasis_whitening_of_the_larger_view_agree(monkeypatch, dx, dy):
    x, y = paired_views(np.random.default_rng(dx + dy), 900, dx, dy)
    train, held = slice(0, 700), slice(700, None)
    with_cholesky = pwcca(x[train], y[train], x[held], y[held], 1e-10, 1e-9)
    monkeypatch.setattr(fit_module, "CHOLESKY_MIN_RCOND", np.inf)  # every view whitened in its eigenbasis
    with_eigh = pwcca(x[train], y[train], x[held], y[held], 1e-10, 1e-9)
    assert with_cholesky == pytest.approx(with_eigh, abs=1e-10)


def test_pinv_cut_off_of_a_singular_larger_view_falls_back_to_the_eigenbasis():
    """x has a duplicated column and epsilon_x = 0: pinv drops the null direction, as the reference does."""
    x, y = paired_views(np.random.default_rng(13), 900, 16, 5)
    x[:, -1] = x[:, 0]
    train, held = slice(0, 700), slice(700, None)
    covariance = np.cov(x[train].T)
    assert fit_module._cholesky_if_pinv_keeps_all(covariance / np.abs(covariance).max(), 0.0) is None
    for smallest, cholesky in ((1e-10, True), (1e-17, False)):  # pinv cuts eigenvalues below 1e-15 * largest
        matrix = np.diag([1.0, 0.5, smallest, 0.2, 0.1])  # positive definite: only the condition guard refuses
        assert (fit_module._cholesky_if_pinv_keeps_all(matrix, 0.0) is not None) == cholesky, smallest
    ours = pwcca(x[train], y[train], x[held], y[held], 0.0, 1e-10)
    expected = reference_pwcca(x[train], y[train], x[held], y[held], 0.0, 1e-10, fix_signs=True)
    assert ours == pytest.approx(expected, abs=1e-6)


def test_sparse_label_view_is_scored_like_the_dense_one():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 25, 1000)
    one_hot = np.eye(25)[labels]
    x = one_hot @ rng.standard_normal((25, 30)) + rng.standard_normal((1000, 30))
    train, held = np.arange(800), np.arange(800, 1000)
    dense_fit = pwcca_module.TrainedCovariance.from_scatter(
        joint_scatter(View(x), View(one_hot, detect_sparse=False), train, np.zeros(55)), 30, stable=True
    ).fit(1e-10, 1e-10)
    assert View(one_hot).sparse
    sparse_score = pwcca_module.held_out_score(dense_fit, x, scipy.sparse.csr_matrix(one_hot), held)
    dense_score = pwcca_module.held_out_score(dense_fit, View(x), View(one_hot, detect_sparse=False), held)
    assert sparse_score == pytest.approx(dense_score, abs=1e-10)


# ----------------------------------------------------------------------------- the protocol


@pytest.mark.parametrize("signs", ["canonical", "lapack"])
def test_protocol_test_scores_are_pwcca_on_their_parts(signs):
    x, y = paired_views(np.random.default_rng(7), 1500, 15, 6)
    result = cca_protocol(x, y, seed=11, sign_convention=signs)
    assert len(result.trials) == 3 and len(result.splits) == 10
    assert sorted(np.concatenate(result.splits).tolist()) == list(range(1500))
    used = [split for trial in result.trials for split in (trial.dev_split, trial.test_split)]
    assert len(set(used)) == 6  # disjoint (dev, test) pairs
    for trial in result.trials:
        assert len(trial.epsilons) == 6 and all(ex <= 1e-9 and ey <= 1e-9 for ex, ey in trial.epsilons)
        assert trial.best_epsilon == trial.epsilons[int(np.argmax(trial.dev_scores))]
        train = np.concatenate([s for i, s in enumerate(result.splits) if i not in (trial.dev_split, trial.test_split)])
        test = result.splits[trial.test_split]
        train = np.sort(train)
        expected = reference_pwcca(
            x[train], y[train], x[test], y[test], *trial.best_epsilon, fix_signs=signs == "canonical"
        )
        assert trial.test_score == pytest.approx(expected, abs=1e-6)
    assert result.score == pytest.approx(np.mean([t.test_score for t in result.trials]))


def test_protocol_is_seeded():
    x, y = paired_views(np.random.default_rng(8), 600, 8, 5)
    assert cca_score(x, y, seed=3) == cca_score(x, y, seed=3)
    assert cca_score(x, y, seed=3) != cca_score(x, y, seed=4)


def test_fits_run_at_one_blas_thread_and_restore_the_setting(monkeypatch):
    """The fits are capped at FIT_THREADS BLAS threads (they only contend with more); the cap lifts afterwards,
    and the score does not depend on it."""
    from threadpoolctl import threadpool_info

    def _blas_threads() -> int:
        return max(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

    seen: list[int] = []
    original = pwcca_module._run_trial

    def spy(*args, **kwargs):
        seen.append(_blas_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(pwcca_module, "_run_trial", spy)
    x, y = paired_views(np.random.default_rng(8), 600, 8, 5)
    with threadpool_limits(limits=2):
        capped = cca_score(x, y, seed=3)
        assert seen and set(seen) == {pwcca_module.FIT_THREADS}
        assert _blas_threads() == 2
        seen.clear()
        free = cca_score(x, y, seed=3, fit_threads=None)
        assert set(seen) == {2}
    assert capped == pytest.approx(free, abs=1e-12)


def test_splits_are_stratified_by_label():
    labels = np.repeat(np.arange(7), [30, 25, 12, 10, 9, 3, 1])
    splits = stratified_splits(len(labels), labels, 10, np.random.default_rng(0))
    assert sorted(np.concatenate(splits).tolist()) == list(range(len(labels)))
    for split in splits:
        counts = np.bincount(labels[split], minlength=7)
        assert counts[0] == 3 and counts[3] == 1 and counts[2] in (1, 2, 3)


def test_epsilon_schedule_tries_every_small_pair_before_the_large_ones():
    schedule = epsilon_schedule(np.random.default_rng(0))
    assert len(schedule) == 25
    assert all(max(pair) <= 1e-9 for pair in schedule[:9]) and all(min(pair) >= 1e-8 for pair in schedule[9:])


def test_planted_signal_layer_ranks_first():
    """A fake upstream whose layer k is a noisy linear map of one-hot phone labels: CCA-phone ranks it first."""
    rng = np.random.default_rng(9)
    phones = rng.integers(0, 20, 1200)
    one_hot = np.eye(20)[phones]
    layers = [rng.standard_normal((1200, 32)) for _ in range(5)]
    planted = 3
    layers[planted] = one_hot @ rng.standard_normal((20, 32)) + 0.7 * rng.standard_normal((1200, 32))
    layers[1] = 0.3 * (one_hot @ rng.standard_normal((20, 32))) + rng.standard_normal((1200, 32))  # weaker
    scores = [cca_score(layer, one_hot, phones, seed=0, stable=True) for layer in layers]
    assert int(np.argmax(scores)) == planted
    assert scores[1] > max(scores[i] for i in (0, 2, 4))


# ----------------------------------------------------------------------------- conditioning


def test_one_hot_labels_are_ill_conditioned_by_default_and_stable_when_asked():
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 30, 1200)
    one_hot = np.eye(30)[labels]
    x = one_hot @ rng.standard_normal((30, 40)) * 0.5 + rng.standard_normal((1200, 40)) + 1.0
    nudged = x + rng.standard_normal(x.shape) * 1e-12
    stable = cca_score(x, one_hot, labels, stable=True), cca_score(nudged, one_hot, labels, stable=True)
    assert abs(stable[0] - stable[1]) < 1e-9
    fit = pwcca_module.TrainedCovariance(np.cov(np.hstack([x, one_hot]).T), 40, stable=True).fit(1e-10, 1e-10)
    assert fit.y_directions == 29  # the one-hot columns sum to one: one of them is dropped
    default = cca_score(x, one_hot, labels), cca_score(nudged, one_hot, labels)
    assert np.isfinite(default).all()


# ----------------------------------------------------------------------------- bad input


def test_mismatched_sample_counts_are_refused():
    with pytest.raises(CCAInputError, match="different sample counts: x has 100, y has 99"):
        cca_score(np.ones((100, 3)), np.ones((99, 2)))
    with pytest.raises(CCAInputError, match="labels has 5 entries"):
        cca_score(np.random.rand(100, 3), np.random.rand(100, 2), labels=[0] * 5)


def test_fewer_samples_than_dimensions_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(CCAInputError, match="needs more samples than dimensions"):
        pwcca(rng.random((20, 30)), rng.random((20, 4)), rng.random((10, 30)), rng.random((10, 4)), 1e-10, 1e-10)
    with pytest.raises(CCAInputError, match="smallest training part has"):
        cca_score(rng.random((60, 50)), rng.random((60, 3)))


def test_other_bad_views_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(CCAInputError, match=r"must be a \(samples, dims\) array"):
        cca_score(rng.random(100), rng.random((100, 2)))
    bad = rng.random((200, 3))
    bad[5, 1] = np.nan
    with pytest.raises(CCAInputError, match="NaN or infinite"):
        cca_score(bad, rng.random((200, 2)))
    with pytest.raises(CCAInputError, match="constant"):
        pwcca(np.ones((50, 2)), rng.random((50, 2)), np.ones((10, 2)), rng.random((10, 2)), 1e-10, 1e-10)
    with pytest.raises(CCAInputError, match="held-out part has 3 samples"):
        pwcca(rng.random((50, 6)), rng.random((50, 5)), rng.random((3, 6)), rng.random((3, 5)), 1e-10, 1e-10)


def test_large_means_take_the_householder_route_and_still_match(monkeypatch):
    """Means far larger than the spread make ``D = P + 1 mu^T`` ill-conditioned: the Gram route is refused and
    the weights come from a Householder R, still equal to the plain statement."""
    x, y = paired_views(np.random.default_rng(13), 900, 8, 14, offset=(1e5, -1.0))
    refused = []
    original = held_out_module._weights_from_gram

    def spy(*args):
        weights = original(*args)
        refused.append(weights is None)
        return weights

    monkeypatch.setattr(held_out_module, "_weights_from_gram", spy)
    score = pwcca(x[:700], y[:700], x[700:], y[700:], 1e-10, 1e-10)
    assert refused == [True]  # x has fewer directions and weights the score; its D is too ill-conditioned
    expected = reference_pwcca(x[:700], y[:700], x[700:], y[700:], 1e-10, 1e-10, fix_signs=True)
    assert score == pytest.approx(expected, abs=1e-6)
