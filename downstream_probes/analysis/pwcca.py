"""Projection-weighted CCA (PWCCA) and the held-out protocol of Pasad et al. (2023), fast and seeded.

The math is the reference's (ankitapasad/layerwise-analysis, itself after google/svcca; see
``docs/analysis.md`` and ``reference-notes.md`` section 3):

1. joint covariance of the two training views; ``Sxx /= max|Sxx|``, ``Syy /= max|Syy|``,
   ``Sxy /= sqrt(xmax * ymax)``;
2. drop the dimensions whose (rescaled) variance is below epsilon;
3. add ``epsilon * I`` to ``Sxx`` and ``Syy``; symmetric inverse square roots with ``pinv`` semantics
   (eigenvalues at or below ``1e-15 * max`` are dropped); SVD of ``Sxx^-1/2 Sxy Syy^-1/2``;
4. projections ``Px = U^T Sxx^-1/2`` and ``Py = V^T Syy^-1/2``;
5. on held-out data: centre each view by that data's mean, project onto the first
   ``n = min(dims x, dims y)`` directions, correlate direction by direction; weights from the QR of the
   projected rows with the view means added back, ``w_i = sum_j |q_i . a_j|`` over the first ``n`` uncentred
   input dimensions ``a_j``; score ``sum(w * corr) / sum(w)`` with the weights of the view with fewer
   directions (y on a tie).

What differs is only how it is computed (``moments.py``: the covariance is accumulated once, in float64 chunks,
for each of the ten splits, and every train part is the sum of its splits; ``fit.py``: each regularisation value
reuses one eigendecomposition per view, and the SVD comes from the smaller Gram matrix; ``held_out.py``: held-out
parts are scored from their moments, or from rows kept in memory, or in chunks). The reference leaves the sign of
every canonical pair to the LAPACK build, and its weighting is not sign invariant (it adds the means back);
``sign_convention="canonical"`` fixes the signs (largest entry of each ``Py`` row positive), ``"lapack"``
decomposes the very matrix the reference decomposes with ``numpy.linalg.svd``, which reproduces the reference's
numbers to rounding but is slower.

With one-hot label views the reference problem is singular (the one-hot columns sum to one), and its score
depends on rounding noise; ``stable=True`` keeps a linearly independent subset of each view's dimensions first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
from threadpoolctl import threadpool_limits

from downstream_probes.analysis.errors import CCAFitError, CCAInputError
from downstream_probes.analysis.fit import SIGN_CONVENTIONS, PWCCAProjection, TrainedCovariance
from downstream_probes.analysis.held_out import HeldOutPart, held_out_score
from downstream_probes.analysis.moments import DEFAULT_CHUNK_ROWS, JointScatter, View, joint_scatter
from downstream_probes.analysis.splits import epsilon_schedule, stratified_splits
from downstream_probes.progress import progress_bar

FIT_THREADS = 1  # BLAS threads of the fits and the held-out scoring (see cca_protocol)

__all__ = [
    "CCAFitError",
    "CCAInputError",
    "CCAResult",
    "CCATrial",
    "HeldOutPart",
    "PWCCAProjection",
    "TrainedCovariance",
    "cca_protocol",
    "cca_score",
    "held_out_score",
    "pwcca",
    "validate_views",
]


def pwcca(
    x_train: np.ndarray | View,
    y_train: np.ndarray | View,
    x_eval: np.ndarray | View,
    y_eval: np.ndarray | View,
    epsilon_x: float,
    epsilon_y: float,
    *,
    stable: bool = False,
    sign_convention: str = "canonical",
    mean_score: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> float:
    """PWCCA similarity of ``(x_eval, y_eval)`` under projections fitted on ``(x_train, y_train)``.

    Views are ``(samples, dims)`` arrays (any float dtype; read in float64 chunks) or :class:`View` objects.
    ``epsilon_x``/``epsilon_y`` regularise the two covariances (and drop dimensions whose rescaled variance is
    below them).
    """
    x_train, y_train = validate_views(x_train, y_train, "train")
    x_eval, y_eval = validate_views(x_eval, y_eval, "eval")
    if x_eval.shape[1] != x_train.shape[1] or y_eval.shape[1] != y_train.shape[1]:
        raise CCAInputError(
            f"train and eval views differ in dimensions: x {x_train.shape[1]} vs {x_eval.shape[1]}, "
            f"y {y_train.shape[1]} vs {y_eval.shape[1]}"
        )
    require_more_samples_than_dims(x_train.shape[0], x_train.shape[1], y_train.shape[1], "training")
    rows = np.arange(x_train.shape[0])
    scatter = joint_scatter(x_train, y_train, rows, _reference_shift(x_train, y_train, rows), chunk_rows)
    _require_finite(scatter)
    covariance = TrainedCovariance.from_scatter(scatter, x_train.shape[1], stable=stable)
    projection = covariance.fit(epsilon_x, epsilon_y, sign_convention)
    return held_out_score(projection, x_eval, y_eval, mean_score=mean_score, chunk_rows=chunk_rows)


@dataclass(frozen=True)
class CCATrial:
    """One (dev, test) pair of the protocol: the epsilon pairs fitted, their dev scores, the test score."""

    dev_split: int
    test_split: int
    epsilons: tuple[tuple[float, float], ...]
    dev_scores: tuple[float, ...]
    best_epsilon: tuple[float, float]
    test_score: float


@dataclass(frozen=True)
class CCAResult:
    """Outcome of :func:`cca_protocol`: ``score`` is the mean test score over the trials; ``splits`` holds the
    sample indices of every part (``trials`` refer to them by position)."""

    score: float
    trials: tuple[CCATrial, ...]
    seed: int
    splits: tuple[np.ndarray, ...] = ()
    settings: dict = field(default_factory=dict)


def cca_protocol(
    x: np.ndarray | View,
    y: np.ndarray | View,
    labels: Sequence | np.ndarray | None = None,
    seed: int = 0,
    *,
    n_splits: int = 10,
    n_trials: int = 3,
    n_epsilons: int = 6,
    stable: bool = False,
    sign_convention: str = "canonical",
    mean_score: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = False,
    fit_threads: int | None = FIT_THREADS,
) -> CCAResult:
    """The reference's held-out PWCCA protocol, seeded.

    Samples are split into ``n_splits`` parts stratified by ``labels``; for up to ``n_splits // 2`` disjoint
    (dev, test) pairs, PWCCA is fitted on the other parts with the first ``n_epsilons`` epsilon pairs that
    succeed, the best pair on dev is scored on test; the protocol stops after ``n_trials`` successful pairs and
    returns the mean test score. ``fit_threads`` caps the BLAS/LAPACK threads of the fits and the held-out
    scoring (None: the libraries' own setting); the covariance pass keeps them all.
    """
    x, y = validate_views(x, y, "input")
    n_samples = x.shape[0]
    if labels is not None and len(labels) != n_samples:
        raise CCAInputError(f"labels has {len(labels)} entries but the views have {n_samples} samples")
    if n_splits < 3:
        raise CCAInputError(f"n_splits must be at least 3 (train, dev and test parts), got {n_splits}")
    if n_samples < n_splits:
        raise CCAInputError(f"{n_samples} samples cannot be split into {n_splits} parts")
    if sign_convention not in SIGN_CONVENTIONS:
        raise CCAInputError(f"sign_convention must be one of {SIGN_CONVENTIONS}, got {sign_convention!r}")
    rng = np.random.default_rng(seed)
    splits = stratified_splits(n_samples, labels, n_splits, rng)
    sizes = sorted(len(split) for split in splits)
    require_more_samples_than_dims(n_samples - sizes[-1] - sizes[-2], x.shape[1], y.shape[1], "smallest training")

    shift = _reference_shift(x, y, np.arange(n_samples))
    scatters = [
        joint_scatter(x, y, split, shift, chunk_rows) for split in progress_bar(splits, progress, "covariance", "split")
    ]
    total = JointScatter.total(scatters)
    _require_finite(total)
    dx = x.shape[1]

    trials: list[CCATrial] = []
    remaining = list(range(n_splits))
    # The fits and the held-out scoring are many small LAPACK/BLAS calls: on a few cores, extra threads only
    # contend (word level: 4.0 s at 2 threads against 3.0 s at 1 on this project's 2-core machine).
    limit = threadpool_limits(limits=fit_threads, user_api="blas") if fit_threads else contextlib.nullcontext()
    with limit:
        for _ in progress_bar(range(n_splits // 2), progress, "trials", "trial"):
            dev, test = (int(i) for i in rng.choice(remaining, size=2, replace=False))
            remaining = [i for i in remaining if i not in (dev, test)]
            trial = _run_trial(
                x,
                y,
                splits,
                scatters,
                total,
                dev,
                test,
                dx,
                rng,
                n_epsilons=n_epsilons,
                stable=stable,
                sign_convention=sign_convention,
                mean_score=mean_score,
                chunk_rows=chunk_rows,
            )
            if trial is not None:
                trials.append(trial)
            if len(trials) == n_trials:
                break
    if not trials:
        raise CCAFitError(
            "PWCCA failed for every epsilon pair on every train part; the views are probably degenerate "
            "(constant or non-finite); try stable=True"
        )
    settings = {
        "n_splits": n_splits,
        "n_trials": n_trials,
        "n_epsilons": n_epsilons,
        "stable": stable,
        "sign_convention": sign_convention,
        "mean_score": mean_score,
        "n_samples": n_samples,
    }
    return CCAResult(float(np.mean([t.test_score for t in trials])), tuple(trials), seed, tuple(splits), settings)


def cca_score(
    x: np.ndarray,
    y: np.ndarray,
    labels: Sequence | np.ndarray | None = None,
    seed: int = 0,
    **options,
) -> float:
    """Mean held-out PWCCA score of the reference protocol (see :func:`cca_protocol` for ``options``)."""
    return cca_protocol(x, y, labels, seed, **options).score


def _run_trial(
    x, y, splits, scatters, total, dev, test, dx, rng, *, n_epsilons, stable, sign_convention, mean_score, chunk_rows
) -> CCATrial | None:
    covariance = TrainedCovariance.from_scatter(total.without(scatters[dev], scatters[test]), dx, stable=stable)
    fits: list[PWCCAProjection] = []
    for epsilon_x, epsilon_y in epsilon_schedule(rng):
        try:
            fits.append(covariance.fit(epsilon_x, epsilon_y, sign_convention))
        except np.linalg.LinAlgError:
            continue
        if len(fits) == n_epsilons:
            break
    if not fits:
        return None

    def held_out(split: int) -> HeldOutPart:
        mean = scatters[split].mean()
        return HeldOutPart(x, y, splits[split], mean[:dx], mean[dx:], scatter=scatters[split], chunk_rows=chunk_rows)

    dev_part = held_out(dev)
    dev_scores = np.array([dev_part.score(fit, mean_score) for fit in fits])
    del dev_part
    if np.all(np.isnan(dev_scores)):
        return None
    # The reference's argmax would pick a NaN score; skipping NaNs is the one deliberate difference.
    best = int(np.nanargmax(dev_scores))
    return CCATrial(
        dev,
        test,
        tuple((f.epsilon_x, f.epsilon_y) for f in fits),
        tuple(float(s) for s in dev_scores),
        (fits[best].epsilon_x, fits[best].epsilon_y),
        held_out(test).score(fits[best], mean_score),
    )


# --------------------------------------------------------------------------------------------- checks


def validate_views(x, y, what: str) -> tuple[View, View]:
    """Both views as :class:`View` objects, checked to be 2-D with the same number of samples.

    Dense float arrays are not copied (they are read in float64 chunks); mostly-zero views become sparse.
    """
    views = []
    for name, data in (("x", x), ("y", y)):
        if isinstance(data, View):
            views.append(data)
            continue
        if not scipy.sparse.issparse(data):
            data = np.asarray(data)
            if data.ndim == 2 and not np.issubdtype(data.dtype, np.floating):
                data = data.astype(np.float64)
        if data.ndim != 2:
            raise CCAInputError(f"{what} view {name} must be a (samples, dims) array, got shape {data.shape}")
        if data.shape[1] == 0:
            raise CCAInputError(f"{what} view {name} has no dimensions (shape {data.shape})")
        views.append(View(data))
    if views[0].shape[0] != views[1].shape[0]:
        raise CCAInputError(
            f"{what} views have different sample counts: x has {views[0].shape[0]}, y has {views[1].shape[0]} "
            f"(rows must be paired samples)"
        )
    return views[0], views[1]


def require_more_samples_than_dims(n_samples: int, dx: int, dy: int, what: str) -> None:
    if n_samples <= max(dx, dy):
        raise CCAInputError(
            f"{what} part has {n_samples} samples but the views have {dx} and {dy} dimensions; PWCCA needs more "
            f"samples than dimensions (give more samples, or reduce the dimensions)"
        )


def _require_finite(scatter: JointScatter) -> None:
    if not (np.all(np.isfinite(scatter.cross)) and np.all(np.isfinite(scatter.sum_z))):
        raise CCAInputError("the views contain NaN or infinite values")


def _reference_shift(x: View, y: View, rows: np.ndarray) -> np.ndarray:
    return np.concatenate([x.reference_shift(rows), y.reference_shift(rows)])
