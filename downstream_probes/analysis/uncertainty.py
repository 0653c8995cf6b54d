"""Spread and chance levels of the layer-wise analysis, and the uncertainty of a rank agreement.

Scores (``summarise``): a score is the mean over sample sets (independent draws of the sampled segments), each
set's score being the mean of its CCA test splits. The sample set is the independent unit (the test splits of one
set share its sample), so the 95 % interval is t-based over the sample-set scores (``N - 1`` degrees of freedom).

Chance levels, each the distribution of the REPORTED score (a mean over the sample sets) when the features carry
nothing about the labels:

* CCA (``chance_summary``): the protocol re-run with the label (or embedding) rows permuted across the sample,
  ``P`` permutations; the interval is a 95 % prediction interval for a mean over ``N`` sets,
  ``mean +- t(P-1) sd sqrt(1/N + 1/P)``;
* MI (``mi_chance``): the fitted clusters' assignments of the analysed sample permuted (random clusters with the
  fitted clusters' sizes); the chance level is the exact expectation (``expected_mutual_information``, the
  hypergeometric formula of Vinh et al. 2010) over ``H(label)``, its interval the 2.5-97.5 % percentiles of the
  permuted scores (each a mean over the sets); ``adjusted = (MI - chance) / (1 - chance)``;
* spoken STS (``sts_uncertainty``): Spearman's rho with the human similarities permuted across pairs; the score's
  own interval is a percentile bootstrap over sentence pairs.

Rank agreement (``agreement_uncertainty``): Spearman's rho and Kendall's tau of two layer curves, with a 95 %
percentile interval from a bootstrap that resamples each side's replicates (CCA: sample sets, and the test splits
within each; downstream: seeds), the resampled deviations scaled by ``sqrt(n / (n - 1))`` and by ``t(df) / z``
with ``df`` the two sides' units minus one each (with 3 sample sets a plain bootstrap is too narrow); and a p-value against "no relation" from phase-randomised surrogates of one
curve (its Fourier amplitudes kept, phases drawn at random, after mirroring the curve so that its two ends meet),
which keeps the smoothness of neighbouring layers; a permutation test would treat 15 correlated layers as 15
independent ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln
from scipy.stats import rankdata
from scipy.stats import t as student_t

SCORE_INTERVAL = "t over the sample-set scores (N - 1 degrees of freedom), 95 %"
CCA_CHANCE = (
    "PWCCA protocol with the label/embedding rows permuted (P permutations, sample sets in turn); interval: 95 % "
    "prediction interval of a mean over N sample sets, mean +- t(P-1) sd sqrt(1/N + 1/P)"
)
MI_CHANCE = (
    "random clusters with the fitted clusters' sizes: exact expected MI / H(label) (mean); 2.5-97.5 % percentiles "
    "of the permuted assignments' scores, each a mean over the sample sets (interval)"
)
STS_INTERVAL = "percentile bootstrap over sentence pairs, 95 %"
STS_CHANCE = "Spearman's rho with the human similarities permuted across pairs; 2.5-97.5 % percentiles"
AGREEMENT_INTERVAL = (
    "percentile bootstrap (CCA sample sets and their test splits, downstream seeds; deviations scaled by "
    "sqrt(n/(n-1)) and t(df)/z, df = both sides' units - 1), 95 %"
)
AGREEMENT_TEST = "phase-randomised surrogates of the second curve (mirrored), two-sided, on Spearman's rho"


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarise(set_scores: Sequence[float]) -> dict:
    """``{"mean", "sd", "ci95": [lo, hi], "count"}`` of a score measured once per sample set; sd and interval are
    None with one set."""
    return _t_summary(set_scores, lambda count: 1.0 / np.sqrt(count))


def chance_summary(null_scores: Sequence[float], n_sets: int) -> dict:
    """The chance level of a score averaged over ``n_sets`` sample sets, from ``P`` null scores (each one sample
    set's score): mean, sd, count and the 95 % prediction interval (None with fewer than 2 null scores)."""
    return _t_summary(null_scores, lambda count: np.sqrt(1.0 / max(n_sets, 1) + 1.0 / count))


def _t_summary(values: Sequence[float], scale) -> dict:
    """Mean, sd (ddof 1), count and ``mean +- t(count - 1) sd scale(count)``."""
    array = np.asarray(values, dtype=float)
    count, mean = len(array), float(array.mean())
    if count < 2:
        return {"mean": mean, "sd": None, "ci95": None, "count": count}
    sd = float(array.std(ddof=1))
    half = float(student_t.ppf(0.975, count - 1)) * sd * float(scale(count))
    return {"mean": mean, "sd": sd, "ci95": [mean - half, mean + half], "count": count}


def adjusted_score(score: float, chance: float) -> float | None:
    """``(score - chance) / (1 - chance)``: 0 at chance, 1 at a perfect score (None when chance is 1)."""
    return None if chance >= 1.0 else float((score - chance) / (1.0 - chance))


# --------------------------------------------------------------------------------------------- MI


def _codes(values) -> tuple[np.ndarray, int]:
    _, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1 if len(codes) else 0


def entropy(labels) -> float:
    """``H(labels)`` in nats (what ``mutual_info_score(labels, labels)`` gives)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def expected_mutual_information(clusters, labels) -> float:
    """The exact expectation (nats) of ``I(cluster; label)`` when the cluster assignments are permuted at random,
    i.e. random clusters with the given clusters' sizes (the hypergeometric model of Vinh et al. 2010).

    Cells are grouped by their (cluster size, label size) pair, so the cost grows with the number of DISTINCT
    sizes, not with clusters x labels.
    """
    cluster_codes, _ = _codes(clusters)
    label_codes, _ = _codes(labels)
    n = len(cluster_codes)
    a_sizes, a_count = np.unique(np.bincount(cluster_codes), return_counts=True)
    b_sizes, b_count = np.unique(np.bincount(label_codes), return_counts=True)
    a_count, b_count = a_count[a_sizes > 0], b_count[b_sizes > 0]
    a_sizes, b_sizes = a_sizes[a_sizes > 0], b_sizes[b_sizes > 0]
    a = a_sizes[:, None, None].astype(float)
    b = b_sizes[None, :, None].astype(float)
    nij = np.arange(1, int(min(a_sizes.max(), b_sizes.max())) + 1, dtype=float)[None, None, :]
    valid = (nij <= np.minimum(a, b)) & (nij >= a + b - n)
    # log P(nij) = log C(a, nij) + log C(n - a, b - nij) - log C(n, b)
    with np.errstate(invalid="ignore"):
        log_p = (
            gammaln(a + 1)
            - gammaln(nij + 1)
            - gammaln(a - nij + 1)
            + gammaln(n - a + 1)
            - gammaln(b - nij + 1)
            - gammaln(n - a - b + nij + 1)
            - gammaln(n + 1)
            + gammaln(b + 1)
            + gammaln(n - b + 1)
        )
        terms = np.where(valid, nij / n * np.log(n * nij / (a * b)) * np.exp(np.where(valid, log_p, 0.0)), 0.0)
    return float((terms.sum(axis=2) * a_count[:, None] * b_count[None, :]).sum())


def permuted_mutual_information(clusters, labels, rng: np.random.Generator, permutations: int) -> np.ndarray:
    """``I(cluster; label)`` (nats) of ``permutations`` random permutations of the cluster assignments."""
    cluster_codes, k = _codes(clusters)
    label_codes, n_labels = _codes(labels)
    n = len(cluster_codes)
    a = np.bincount(cluster_codes, minlength=k).astype(float)
    b = np.bincount(label_codes, minlength=n_labels).astype(float)
    shuffled = np.argsort(rng.random((permutations, n)), axis=1)
    keys = (np.arange(permutations)[:, None] * k + cluster_codes[shuffled]) * n_labels + label_codes[None, :]
    cells, counts = np.unique(keys.reshape(-1), return_counts=True)
    row, rest = np.divmod(cells, k * n_labels)
    cluster, label = np.divmod(rest, n_labels)
    counts = counts.astype(float)
    contribution = counts / n * np.log(n * counts / (a[cluster] * b[label]))
    return np.bincount(row, weights=contribution, minlength=permutations)


def mi_chance(
    clusters_per_set: Sequence, labels_per_set: Sequence, rng: np.random.Generator, permutations: int = 200
) -> dict:
    """Chance level of the normalised MI averaged over sample sets: ``mean`` = mean over sets of the exact
    ``E[I] / H(label)``; ``sd``, ``ci95`` (2.5-97.5 %) and ``count`` from ``permutations`` permuted assignments."""
    exact, permuted = [], np.zeros(permutations)
    for clusters, labels in zip(clusters_per_set, labels_per_set, strict=True):
        h = entropy(labels)
        exact.append(expected_mutual_information(clusters, labels) / h)
        permuted += permuted_mutual_information(clusters, labels, rng, permutations) / h
    permuted /= len(exact)
    low, high = np.percentile(permuted, [2.5, 97.5]) if permutations else (np.nan, np.nan)
    return {
        "mean": float(np.mean(exact)),
        "sd": float(permuted.std(ddof=1)) if permutations > 1 else None,
        "ci95": [float(low), float(high)] if permutations else None,
        "count": permutations,
    }


# --------------------------------------------------------------------------------------------- STS


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of ``a`` with the same row of ``b`` (ties: average ranks); NaN for constants."""
    ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
    ra = ra - ra.mean(axis=-1, keepdims=True)
    rb = rb - rb.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(axis=-1) / np.sqrt((ra**2).sum(axis=-1) * (rb**2).sum(axis=-1))


def _kendall_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row of ``a`` with the same row of ``b`` (scipy's default variant)."""
    i, j = np.triu_indices(a.shape[-1], k=1)
    sa, sb = np.sign(a[..., j] - a[..., i]), np.sign(b[..., j] - b[..., i])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sa * sb).sum(axis=-1) / np.sqrt((sa**2).sum(axis=-1) * (sb**2).sum(axis=-1))


def sts_uncertainty(
    similarities: np.ndarray | Sequence[float],
    judgements: np.ndarray | Sequence[float],
    rng: np.random.Generator,
    resamples: int = 1000,
) -> tuple[dict, dict]:
    """(spread, chance) of the spoken STS score: a percentile bootstrap over the pairs, and rho under permuted
    human similarities (``resamples`` of each)."""
    x, y = np.asarray(similarities, dtype=float), np.asarray(judgements, dtype=float)
    picks = rng.integers(0, len(x), (resamples, len(x)))
    boot = _spearman_rows(x[picks], y[picks])
    boot = boot[np.isfinite(boot)]
    null = _spearman_rows(np.broadcast_to(x, (resamples, len(x))), y[np.argsort(rng.random((resamples, len(y))), 1)])
    spread = {
        "sd": float(boot.std(ddof=1)),
        "ci95": [float(v) for v in np.percentile(boot, [2.5, 97.5])],
        "count": len(x),
    }
    chance = {
        "mean": float(null.mean()),
        "sd": float(null.std(ddof=1)),
        "ci95": [float(v) for v in np.percentile(null, [2.5, 97.5])],
        "count": resamples,
    }
    return spread, chance


# --------------------------------------------------------------------------------------------- rank agreement


def phase_surrogates(curve: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, layers)`` curves with the Fourier amplitudes of ``curve`` mirrored (``curve`` then its reverse, so
    that the ends meet) and random phases, cut back to the curve's length."""
    curve = np.asarray(curve, dtype=float)
    mirrored = np.concatenate([curve, curve[::-1]])
    spectrum = np.fft.rfft(mirrored - mirrored.mean())
    phases = rng.uniform(0.0, 2.0 * np.pi, (count, len(spectrum)))
    phases[:, 0] = 0.0
    phases[:, -1] = 0.0  # the mirrored length is even: the Nyquist term stays real
    return np.fft.irfft(np.abs(spectrum) * np.exp(1j * phases), n=len(mirrored))[:, : len(curve)]


def surrogate_p_value(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, surrogates: int = 999) -> float:
    """Two-sided p-value of Spearman's rho between curves ``a`` and ``b`` against independence of smooth curves:
    the share of phase-randomised surrogates of ``b`` whose |rho| with ``a`` reaches the observed one."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    observed = abs(float(_spearman_rows(a[None], b[None])[0]))
    if not np.isfinite(observed):
        return float("nan")
    null = np.abs(_spearman_rows(np.broadcast_to(a, (surrogates, len(a))), phase_surrogates(b, surrogates, rng)))
    return float((1 + np.sum(null >= observed - 1e-12)) / (surrogates + 1))


def _units(replicates: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.atleast_2d(np.asarray(r, dtype=float)) for r in replicates]


def degrees_of_freedom(replicates: Sequence[np.ndarray]) -> int:
    """The spread's degrees of freedom: units - 1, or rows - 1 with a single unit (0: nothing varies)."""
    units = _units(replicates)
    return len(units) - 1 if len(units) > 1 else len(units[0]) - 1


def bootstrap_curves(
    replicates: Sequence[np.ndarray], resamples: int, rng: np.random.Generator, widen: float = 1.0
) -> np.ndarray:
    """``(resamples, layers)`` bootstrap draws of a mean curve.

    ``replicates``: one ``(splits, layers)`` array per independent unit (a CCA sample set with its test splits, or
    one downstream seed as a single row); units are resampled, then the rows within each; the mean curve of each
    draw. With ``n`` units the deviations from the mean curve are scaled by ``sqrt(n / (n - 1))`` (the bootstrap's
    variance is ``(n - 1) / n`` of the mean's), and by ``widen``; with one unit of one row the curve itself comes
    back.
    """
    units = _units(replicates)
    centre = np.mean([u.mean(axis=0) for u in units], axis=0)
    n = len(units)
    if n == 1 and len(units[0]) == 1:
        return np.broadcast_to(centre, (resamples, len(centre))).copy()
    picks = rng.integers(0, n, (resamples, n))
    total = np.zeros((resamples, len(centre)))
    for index, unit in enumerate(units):
        rows = rng.integers(0, len(unit), (resamples, len(unit)))
        means = unit[rows].mean(axis=1)  # this unit, rows resampled: (resamples, layers)
        total += (picks == index).sum(axis=1)[:, None] * means
    draws = total / n
    scale = np.sqrt(n / (n - 1)) if n > 1 else np.sqrt(len(units[0]) / (len(units[0]) - 1))
    return centre + widen * scale * (draws - centre)


def agreement_uncertainty(
    replicates_a: Sequence[np.ndarray],
    replicates_b: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    resamples: int = 2000,
    surrogates: int = 999,
) -> dict:
    """Point rho and tau of the two mean curves, their bootstrap 95 % intervals and the surrogate p-value.

    ``replicates_*``: as :func:`bootstrap_curves` (one ``(splits, layers)`` array per unit). Both sides' draws
    are widened by ``t(df) / z`` at 97.5 %, ``df`` the two sides' degrees of freedom together (as a two-sample t
    interval): a spread estimated from 3 sample sets and 3 seeds is itself uncertain.
    """
    df = degrees_of_freedom(replicates_a) + degrees_of_freedom(replicates_b)
    widen = float(student_t.ppf(0.975, df) / 1.959963984540054) if df > 0 else 1.0
    curve_a = np.mean([np.atleast_2d(r).mean(axis=0) for r in replicates_a], axis=0)
    curve_b = np.mean([np.atleast_2d(r).mean(axis=0) for r in replicates_b], axis=0)
    draws_a = bootstrap_curves(replicates_a, resamples, rng, widen)
    draws_b = bootstrap_curves(replicates_b, resamples, rng, widen)
    rho, tau = _spearman_rows(draws_a, draws_b), _kendall_rows(draws_a, draws_b)

    def interval(values: np.ndarray) -> list[float] | None:
        values = values[np.isfinite(values)]
        return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else None

    return {
        "spearman": _finite_or_none(_spearman_rows(curve_a[None], curve_b[None])[0]),
        "kendall": _finite_or_none(_kendall_rows(curve_a[None], curve_b[None])[0]),
        "spearman_ci95": interval(rho),
        "kendall_ci95": interval(tau),
        "p_value": _finite_or_none(surrogate_p_value(curve_a, curve_b, rng, surrogates)),
        "resamples": resamples,
        "surrogates": surrogates,
        "degrees_of_freedom": df,
        "replicates": [len(replicates_a), len(replicates_b)],
    }


def top_k_chance(k: int, layers: int) -> float:
    """Expected top-k overlap share of two unrelated rankings of ``layers`` layers: ``k / layers``."""
    return min(k, layers) / layers if layers else float("nan")
