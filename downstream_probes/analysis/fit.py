"""Fitting PWCCA on one train part: the reference's steps 1-4, with the decompositions shared across epsilons.

The SVD of ``W = Sxx^-1/2 Sxy Syy^-1/2`` comes from the eigendecomposition of its smaller Gram matrix. Any
whitening ``F`` with ``F^T F = (S + eps I)^-1`` has the same singular values and canonical directions as the
symmetric root the reference uses, so each view is whitened the cheapest way that keeps the reference's result:

* the view with fewer kept dimensions (y on a tie) in its eigenbasis: one ``eigh`` per train part, and every
  epsilon is a diagonal rescaling (``eig(S + eps I) = eig(S) + eps``, with ``pinv``'s cut-off applied to the
  shifted eigenvalues), so that the Gram matrix of each fit is a rescaled copy of one matrix;
* the other view by a Cholesky factor of ``S + eps I`` per epsilon (a fraction of an ``eigh``), where LAPACK's
  condition estimate shows that ``pinv`` would keep every eigenvalue; otherwise in its eigenbasis with the cut-off.

Its singular vectors (the other view's) stay implicit (:class:`ImplicitRows`). Signs are fixed canonically
(largest entry of each ``Py`` row positive); ``sign_convention="lapack"`` instead decomposes the very matrix the
reference decomposes with ``numpy.linalg.svd`` (its signs, slower). ``stable=True`` first keeps a linearly
independent subset of each view's dimensions (see ``docs/analysis.md``: one-hot labels make the reference's
problem singular).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import scipy.linalg
from scipy.linalg import blas, lapack

from downstream_probes.analysis.errors import CCAInputError
from downstream_probes.analysis.moments import JointScatter
from upstream_mrhubert.errors import UsageError

SIGN_CONVENTIONS = ("canonical", "lapack")
PINV_RCOND = 1e-15  # numpy.linalg.pinv's default cut-off, which the reference relies on
# Cholesky whitening only when the estimated reciprocal 1-norm condition number exceeds this: 1/rcond bounds
# (up to the estimator's small factor) the 2-norm condition number, and pinv cuts nothing below 1/PINV_RCOND.
CHOLESKY_MIN_RCOND = 1e3 * PINV_RCOND
STABLE_TOLERANCE = 1e-10  # stable=True: smallest share of a dimension's variance not explained by the others


@dataclass(frozen=True)
class ImplicitRows:
    """Projection rows of one view kept as factors: ``P^T = [through @ diag(scale) @ good, weak]``.

    ``through`` (``(S + eps I)^-1 S_vo V_o``: this view's inverse covariance times the cross-covariance in the
    other view's eigenbasis) is shared by every fit of a train part with this view's epsilon, so held-out rows
    multiplied by it once serve all those fits. ``good`` holds the other side's singular vectors divided by the
    singular values; ``weak`` the directions whose singular value is too small for that division (orthonormally
    completed, as a full SVD would), already in this view's coordinates.
    """

    through: np.ndarray
    scale: np.ndarray
    good: np.ndarray
    weak: np.ndarray

    @property
    def n_good(self) -> int:
        return self.good.shape[1]

    def matrix(self) -> np.ndarray:
        """The projection rows themselves, ``(directions, dims)``."""
        return np.hstack([self.through @ (self.scale[:, None] * self.good), self.weak]).T

    def project(self, rows: np.ndarray, rows_through: np.ndarray) -> np.ndarray:
        """``rows @ P^T`` given ``rows_through = rows @ through`` (which the caller shares between fits)."""
        if self.weak.shape[1] == 0:
            return rows_through @ (self.scale[:, None] * self.good)
        projected = np.empty((rows.shape[0], self.n_good + self.weak.shape[1]))
        projected[:, : self.n_good] = rows_through @ (self.scale[:, None] * self.good)
        projected[:, self.n_good :] = rows @ self.weak
        return projected

    def flipped(self, flip: np.ndarray) -> ImplicitRows:
        return replace(self, good=self.good * flip[: self.n_good], weak=self.weak * flip[self.n_good :])


@dataclass(frozen=True)
class PWCCAProjection:
    """Trained PWCCA projections for one train part and one (epsilon_x, epsilon_y).

    ``proj_x`` is ``Px[:n]`` restricted to the kept columns ``x_dims`` of x (likewise y), given either as a
    matrix or as :class:`ImplicitRows` (then formed only when asked for). ``x_directions``/``y_directions`` are
    the row counts of the full ``Px``/``Py`` (they decide which view weights the score).
    """

    x_dims: np.ndarray
    y_dims: np.ndarray
    canonical_correlations: np.ndarray
    epsilon_x: float
    epsilon_y: float
    x_matrix: np.ndarray | None = None
    y_matrix: np.ndarray | None = None
    x_rows: ImplicitRows | None = None
    y_rows: ImplicitRows | None = None

    @cached_property
    def proj_x(self) -> np.ndarray:
        return _view_matrix(self.x_matrix, self.x_rows)

    @cached_property
    def proj_y(self) -> np.ndarray:
        return _view_matrix(self.y_matrix, self.y_rows)

    @property
    def n_directions(self) -> int:
        return len(self.canonical_correlations)

    @property
    def x_directions(self) -> int:
        return len(self.x_dims)

    @property
    def y_directions(self) -> int:
        return len(self.y_dims)

    def dims(self, name: str) -> np.ndarray:
        return self.x_dims if name == "x" else self.y_dims

    def matrix(self, name: str) -> np.ndarray:
        """Projection rows of view ``"x"`` or ``"y"``, ``(directions, kept dims)``."""
        return self.proj_x if name == "x" else self.proj_y

    def implicit(self, name: str) -> ImplicitRows | None:
        return self.x_rows if name == "x" else self.y_rows


@dataclass(frozen=True)
class _Whitening:
    """Eigendecomposition of one view's rescaled covariance, cropped to ``dims``."""

    dims: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray

    def inverse_sqrt_scales(self, epsilon: float) -> np.ndarray:
        """Diagonal of ``pinv(S + eps I)^1/2`` in the eigenbasis (zero where pinv cuts the eigenvalue off)."""
        shifted = self.eigvals + epsilon
        kept = np.abs(shifted) > PINV_RCOND * np.max(np.abs(shifted))
        if np.any(shifted[kept] <= 0):
            # The reference takes sqrt of a negative eigenvalue of the pseudo-inverse here; the NaNs make its SVD
            # raise LinAlgError and the protocol moves on to the next epsilon. Same outcome, said plainly.
            raise np.linalg.LinAlgError(f"covariance + {epsilon:g} I is not positive semi-definite")
        scales = np.zeros_like(shifted)
        scales[kept] = 1.0 / np.sqrt(shifted[kept])
        return scales


@dataclass(frozen=True)
class _LabelWhitening:
    """Whitening of a one-hot label view without an eigendecomposition: ``F = (I + g w w^T) A^-1/2``.

    The rescaled covariance of one-hot columns with counts ``c`` over ``N`` rows is ``diag(c) / k - c c^T / (N k)``
    (``k = (N - 1) * max``), so ``S + eps I = A - v v^T`` with ``A`` diagonal: with ``w = A^-1/2 v`` and
    ``rho = |w|^2 < 1``, ``F^T F = (S + eps I)^-1`` for ``g = 1 / (sqrt(1 - rho) (1 + sqrt(1 - rho)))``. Applying
    ``F`` costs one pass over a matrix instead of a product with an eigenbasis. ``1 - rho`` (about eps when every
    row has a kept label: the constant direction) is computed without cancellation.
    """

    dims: np.ndarray
    inverse_sqrt: np.ndarray  # A^-1/2
    w: np.ndarray
    g: float

    @classmethod
    def build(cls, dims: np.ndarray, counts: np.ndarray, rows: int, scale: float, epsilon: float):
        """The whitening, or None where pinv might cut an eigenvalue of ``S + eps I`` (then the eigenbasis is used).

        ``counts``: the kept columns' counts; ``rows``: ``N``; ``scale``: ``(N - 1) * max`` of the covariance."""
        if epsilon <= 0 or np.any(counts <= 0):
            return None
        diagonal = counts / scale + epsilon
        share = counts / rows
        ratio = epsilon * scale / counts  # eps / (c / scale)
        one_minus_rho = (rows - float(np.sum(counts))) / rows + float(np.sum(share * ratio / (1.0 + ratio)))
        # eig(S + eps I) lies in [(1 - rho) min A, max A]: pinv cuts nothing when that ratio is above its cut-off
        if not one_minus_rho * np.min(diagonal) > PINV_RCOND * np.max(diagonal):
            return None
        root = np.sqrt(one_minus_rho)
        return cls(dims, 1.0 / np.sqrt(diagonal), np.sqrt(share / (1.0 + ratio)), 1.0 / (root * (1.0 + root)))

    def transposed_times(self, vectors: np.ndarray) -> np.ndarray:
        """``F^T @ vectors``."""
        result = np.array(vectors, order="C")
        _add_outer(result, self.w, self.w @ vectors, self.g)
        result *= self.inverse_sqrt[:, None]
        return result

    def times(self, matrix: np.ndarray) -> np.ndarray:
        """``F @ matrix``."""
        scaled = self.inverse_sqrt[:, None] * matrix
        _add_outer(scaled, self.w, self.w @ scaled, self.g)
        return scaled

    def congruence(self, gram: np.ndarray) -> np.ndarray:
        """``F G F^T`` for a symmetric ``G``: ``H + w y^T + y w^T`` with ``H = A^-1/2 G A^-1/2``, ``u = H w`` and
        ``y = g u + g^2 (w . u) w / 2`` (three passes over the matrix)."""
        result = gram * self.inverse_sqrt
        result *= self.inverse_sqrt[:, None]
        u = result @ self.w
        y = self.g * u + (0.5 * self.g**2 * float(self.w @ u)) * self.w
        _add_outer(result, self.w, y, 1.0)
        _add_outer(result, y, self.w, 1.0)
        return result


def _add_outer(matrix: np.ndarray, left: np.ndarray, right: np.ndarray, alpha: float) -> None:
    """``matrix += alpha * outer(left, right)`` in place (BLAS ``dger`` on the C-ordered matrix's transpose)."""
    if matrix.flags.c_contiguous and matrix.dtype == np.float64:
        blas.dger(
            alpha, np.asarray(right, dtype=np.float64), np.asarray(left, dtype=np.float64), a=matrix.T, overwrite_a=1
        )
    else:
        matrix += alpha * np.outer(left, right)


@dataclass(frozen=True)
class _WhitenedCross:
    """One view's side of a fit for one epsilon, against the other view's eigenbasis ``V_o``.

    With ``F`` this view's whitening (``F^T F = pinv(S + eps I)``) and ``B = S_vo V_o``: ``whitened = F B``,
    ``gram = B^T F^T F B``, ``through = F^T F B``; ``to_view`` maps whitened coordinates back (``u -> F^T u``).
    """

    whitened: np.ndarray
    gram: np.ndarray
    through: np.ndarray
    to_view: Callable[[np.ndarray], np.ndarray]


class TrainedCovariance:
    """Rescaled covariance blocks of one train part, with the decompositions shared by every epsilon."""

    def __init__(self, joint_cov: np.ndarray, dx: int, *, stable: bool = False) -> None:
        blocks = (joint_cov[:dx, :dx], joint_cov[dx:, dx:], joint_cov[:dx, dx:])
        self._rescale(*(np.array(block) for block in blocks), stable=stable)

    @classmethod
    def from_scatter(cls, scatter: JointScatter, dx: int, *, stable: bool = False) -> TrainedCovariance:
        """From a train part's scatter, its covariance blocks built directly (the joint matrix is never formed)."""
        covariance = cls.__new__(cls)
        covariance._rescale(*scatter.covariance_blocks(dx), stable=stable)
        covariance.rows = scatter.count
        covariance.label_counts = {
            "x": _one_hot_counts(scatter, slice(None, dx)),
            "y": _one_hot_counts(scatter, slice(dx, None)),
        }
        return covariance

    def _rescale(self, sxx: np.ndarray, syy: np.ndarray, sxy: np.ndarray, *, stable: bool) -> None:
        """Take the three covariance blocks (new arrays, rescaled in place) and rescale them as the reference."""
        xmax = float(np.max(np.abs(sxx)))
        ymax = float(np.max(np.abs(syy)))
        if xmax == 0.0 or ymax == 0.0:
            view = "x" if xmax == 0.0 else "y"
            raise CCAInputError(f"view {view} is constant on the training samples: there is nothing to correlate")
        sxx /= xmax
        syy /= ymax
        sxy /= np.sqrt(xmax * ymax)
        self.blocks = {"x": sxx, "y": syy}
        self.maxima = {"x": xmax, "y": ymax}
        self.sxy = sxy
        self.stable = stable
        self.rows = 0
        self.label_counts: dict[str, np.ndarray | None] = {"x": None, "y": None}  # one-hot views' column counts
        self._whitenings: dict[tuple[str, bytes], _Whitening] = {}
        self._crosses: dict[tuple, np.ndarray] = {}
        self._whitened_crosses: dict[tuple, _WhitenedCross] = {}
        self._label_whitenings: dict[tuple[str, bytes, float], _LabelWhitening] = {}

    @property
    def sxx(self) -> np.ndarray:
        return self.blocks["x"]

    @property
    def syy(self) -> np.ndarray:
        return self.blocks["y"]

    def kept_dims(self, view: str, epsilon: float) -> np.ndarray:
        """Columns whose rescaled variance reaches epsilon (and, when stable, a linearly independent subset)."""
        cov = self.blocks[view]
        dims = np.flatnonzero(np.abs(np.diagonal(cov)) >= epsilon)
        if self.stable and len(dims) > 1:
            dims = _independent_subset(cov[np.ix_(dims, dims)], dims)
        return dims

    def whitening(self, view: str, dims: np.ndarray) -> _Whitening:
        key = (view, dims.tobytes())
        if key not in self._whitenings:
            block = _submatrix(self.blocks[view], dims, dims)
            eigvals, eigvecs = scipy.linalg.eigh(block, check_finite=False, driver="evd")
            self._whitenings[key] = _Whitening(dims, eigvals, eigvecs)
        return self._whitenings[key]

    def cross(self, view: str, dims: np.ndarray, other: _Whitening | _LabelWhitening) -> np.ndarray:
        """``S_vo`` (rows: ``view``'s kept dims) times the other view's eigenvectors (its own columns for labels)."""
        key = (view, dims.tobytes(), other.dims.tobytes(), isinstance(other, _Whitening))
        if key not in self._crosses:
            block = _submatrix(self.sxy if view == "x" else self.sxy.T, dims, other.dims)
            self._crosses[key] = block @ other.eigvecs if isinstance(other, _Whitening) else np.array(block)
        return self._crosses[key]

    def whitened_cross(
        self, view: str, dims: np.ndarray, epsilon: float, other: _Whitening | _LabelWhitening
    ) -> _WhitenedCross:
        """``view``'s side of every fit with this epsilon (Cholesky whitening where pinv would cut nothing)."""
        key = (view, dims.tobytes(), other.dims.tobytes(), isinstance(other, _Whitening), epsilon)
        if key in self._whitened_crosses:
            return self._whitened_crosses[key]
        cross = self.cross(view, dims, other)
        factor = _cholesky_if_pinv_keeps_all(_submatrix(self.blocks[view], dims, dims), epsilon)
        if factor is not None:
            whitened = _solve_lower(factor, cross)

            def to_view(u: np.ndarray) -> np.ndarray:
                return _solve_lower(factor, u, transposed=True)

        else:
            whitening = self.whitening(view, dims)
            scales = whitening.inverse_sqrt_scales(epsilon)  # LinAlgError where the reference's fit fails
            whitened = scales[:, None] * (whitening.eigvecs.T @ cross)

            def to_view(u: np.ndarray) -> np.ndarray:
                return whitening.eigvecs @ (scales[:, None] * u)

        result = _WhitenedCross(whitened, whitened.T @ whitened, to_view(whitened), to_view)
        self._whitened_crosses[key] = result
        return result

    def fit(self, epsilon_x: float, epsilon_y: float, sign_convention: str = "canonical") -> PWCCAProjection:
        """Projections for one regularisation pair; ``np.linalg.LinAlgError`` when the reference's fit fails."""
        if sign_convention not in SIGN_CONVENTIONS:
            raise UsageError(f"sign_convention must be one of {SIGN_CONVENTIONS}, got {sign_convention!r}")
        dims = {"x": self.kept_dims("x", epsilon_x), "y": self.kept_dims("y", epsilon_y)}
        if len(dims["x"]) == 0 or len(dims["y"]) == 0:
            raise np.linalg.LinAlgError("every dimension of a view has variance below epsilon")
        epsilons = {"x": epsilon_x, "y": epsilon_y}
        small, big = ("y", "x") if len(dims["y"]) <= len(dims["x"]) else ("x", "y")
        if sign_convention != "lapack":
            labels = self.label_whitening(small, dims[small], epsilons[small])
            if labels is not None:
                return self._fit_labels(small, big, dims, epsilons, labels)
        small_whitening = self.whitening(small, dims[small])
        scales = small_whitening.inverse_sqrt_scales(epsilons[small])
        if sign_convention == "lapack":
            through, vectors, singular_values, big_weak = self._lapack_directions(
                small, big, dims, epsilons, small_whitening, scales
            )
        else:
            big_side = self.whitened_cross(big, dims[big], epsilons[big], small_whitening)
            gram = big_side.gram * scales
            gram *= scales[:, None]
            vectors, singular_values = _gram_eigenvectors(gram)
            n_good = int(np.sum(~_weak(singular_values)))
            weak = _weak_completion(
                big_side.whitened, _scaling(scales), _scaling(scales), vectors, singular_values, n_good
            )
            big_weak = big_side.to_view(weak)
            through = big_side.through
        n_good = len(singular_values) - big_weak.shape[1]
        small_matrix = (vectors.T * scales) @ small_whitening.eigvecs.T
        good = vectors[:, :n_good] / singular_values[:n_good]
        big_rows = ImplicitRows(through, scales, good, big_weak)
        matrices = {small: small_matrix, big: None if big == "x" else big_rows.matrix()}
        if sign_convention != "lapack":
            big_rows = _flip_canonically(matrices, big_rows)
        return PWCCAProjection(
            dims["x"],
            dims["y"],
            singular_values,
            epsilon_x,
            epsilon_y,
            x_matrix=matrices["x"],
            y_matrix=matrices["y"],
            **{f"{big}_rows": big_rows},
        )

    def label_whitening(self, view: str, dims: np.ndarray, epsilon: float) -> _LabelWhitening | None:
        """The eigendecomposition-free whitening of a one-hot view, where it gives pinv's result."""
        counts = self.label_counts[view]
        if counts is None:
            return None
        key = (view, dims.tobytes(), epsilon)
        if key not in self._label_whitenings:
            scale = (self.rows - 1) * self.maxima[view]
            self._label_whitenings[key] = _LabelWhitening.build(dims, counts[dims], self.rows, scale, epsilon)
        return self._label_whitenings[key]

    def _fit_labels(
        self, small: str, big: str, dims: dict[str, np.ndarray], epsilons: dict[str, float], labels: _LabelWhitening
    ) -> PWCCAProjection:
        """The canonical fit when the view with fewer dimensions is one-hot labels (:class:`_LabelWhitening`)."""
        big_side = self.whitened_cross(big, dims[big], epsilons[big], labels)
        gram = labels.congruence(big_side.gram)
        vectors, singular_values = _gram_eigenvectors(gram)
        n_good = int(np.sum(~_weak(singular_values)))
        weak = _weak_completion(
            big_side.whitened, labels.transposed_times, labels.times, vectors, singular_values, n_good
        )
        in_view = labels.transposed_times(vectors)  # F^T V: Py^T, and the partners' factor
        ones = np.ones(len(singular_values))
        big_rows = ImplicitRows(
            big_side.through, ones, in_view[:, :n_good] / singular_values[:n_good], big_side.to_view(weak)
        )
        matrices = {small: np.ascontiguousarray(in_view.T), big: None if big == "x" else big_rows.matrix()}
        big_rows = _flip_canonically(matrices, big_rows)
        return PWCCAProjection(
            dims["x"],
            dims["y"],
            singular_values,
            epsilons["x"],
            epsilons["y"],
            x_matrix=matrices["x"],
            y_matrix=matrices["y"],
            **{f"{big}_rows": big_rows},
        )

    def _lapack_directions(
        self,
        small: str,
        big: str,
        dims: dict[str, np.ndarray],
        epsilons: dict[str, float],
        small_whitening: _Whitening,
        small_scales: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The reference's own decomposition: numpy's SVD of ``Sxx^-1/2 Sxy Syy^-1/2`` (x rows, its signs).

        The matrix is assembled from both eigenbases (``E_x D_x (E_x^T Sxy E_y) D_y E_y^T``, the middle factor
        shared by every epsilon); the larger view's singular vectors are only used for the weak directions, the
        others follow from ``u = W v / s`` through the same shared ``through`` factor as the canonical route.
        Returns ``through``, the small view's singular vectors in its eigenbasis, the singular values and the
        weak directions' projection columns of the larger view.
        """
        big_whitening = self.whitening(big, dims[big])
        big_scales = big_whitening.inverse_sqrt_scales(epsilons[big])
        middle = self.eigen_cross(big, big_whitening, small_whitening)  # E_b^T S_bs E_s
        scaled = big_scales[:, None] * middle * small_scales
        symmetric = big_whitening.eigvecs @ (scaled @ small_whitening.eigvecs.T)  # (big dims, small dims)
        if big == "x":
            big_vectors, singular_values, small_rows = np.linalg.svd(symmetric, full_matrices=False)
            small_vectors = small_rows.T
        else:
            small_vectors, singular_values, big_rows = np.linalg.svd(symmetric.T, full_matrices=False)
            big_vectors = big_rows.T
        weak = _weak(singular_values)
        vectors = small_whitening.eigvecs.T @ small_vectors
        big_weak = big_whitening.eigvecs @ (big_scales[:, None] * (big_whitening.eigvecs.T @ big_vectors[:, weak]))
        through = self.eigen_through(big, big_whitening, small_whitening, epsilons[big], big_scales)
        return through, vectors, np.abs(singular_values), big_weak

    def eigen_cross(self, view: str, own: _Whitening, other: _Whitening) -> np.ndarray:
        """``E_v^T S_vo E_o``: the cross-covariance in both views' eigenbases (shared by every epsilon)."""
        key = ("eigen", view, own.dims.tobytes(), other.dims.tobytes())
        if key not in self._crosses:
            self._crosses[key] = own.eigvecs.T @ self.cross(view, own.dims, other)
        return self._crosses[key]

    def eigen_through(
        self, view: str, own: _Whitening, other: _Whitening, epsilon: float, scales: np.ndarray
    ) -> np.ndarray:
        """``pinv(S_v + eps I) S_vo E_o`` from the eigenbasis (``scales``: ``own``'s inverse square roots)."""
        key = ("through", view, own.dims.tobytes(), other.dims.tobytes(), epsilon)
        if key not in self._crosses:
            self._crosses[key] = own.eigvecs @ ((scales**2)[:, None] * self.eigen_cross(view, own, other))
        return self._crosses[key]


def _submatrix(matrix: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``matrix[rows][:, columns]``; a view, not a copy, when they are all of its rows and columns in order."""
    if _is_everything(rows, matrix.shape[0]) and _is_everything(columns, matrix.shape[1]):
        return matrix
    return matrix[np.ix_(rows, columns)]


def _is_everything(index: np.ndarray, size: int) -> bool:
    """Whether a sorted index without repeats covers ``range(size)``."""
    return len(index) == size and (size == 0 or (index[0] == 0 and index[-1] == size - 1))


def _cholesky_if_pinv_keeps_all(cov: np.ndarray, epsilon: float) -> np.ndarray | None:
    """Lower Cholesky factor of ``cov + eps I``, or None when it fails or the matrix is too ill-conditioned for
    ``pinv`` to be a plain inverse (then the eigenbasis, with pinv's cut-off, is used)."""
    shifted = np.array(cov, order="F")  # the LAPACK calls below work on it in place
    shifted[np.diag_indices_from(shifted)] += epsilon
    norm = float(np.max(np.sum(np.abs(shifted), axis=0)))
    factor, info = lapack.dpotrf(shifted, lower=1, clean=1, overwrite_a=1)
    if info != 0 or not np.isfinite(norm):
        return None
    rcond, info = lapack.dpocon(factor, norm, uplo="L")
    return factor if info == 0 and rcond > CHOLESKY_MIN_RCOND else None


def _solve_lower(factor: np.ndarray, rhs: np.ndarray, *, transposed: bool = False) -> np.ndarray:
    """``L^-1 rhs`` (or ``L^-T rhs``) for a lower-triangular ``L``."""
    if rhs.shape[1] == 0:
        return np.zeros((factor.shape[0], 0))
    return scipy.linalg.solve_triangular(factor, rhs, lower=True, trans="T" if transposed else "N", check_finite=False)


def _canonical_signs(proj_y: np.ndarray) -> np.ndarray:
    """The flip of each canonical pair that makes the largest |entry| of its ``Py`` row positive."""
    flip = np.sign(proj_y[np.arange(len(proj_y)), np.argmax(np.abs(proj_y), axis=1)])
    flip[flip == 0] = 1.0
    return flip


def _weak(singular_values: np.ndarray) -> np.ndarray:
    """Directions whose singular value is at most 1e-6 of the largest: ``W v / s`` amplifies rounding there."""
    return singular_values <= 1e-6 * max(float(singular_values[0]), np.finfo(float).tiny)


def _weak_completion(
    matrix: np.ndarray,
    to_basis: Callable[[np.ndarray], np.ndarray],
    from_basis: Callable[[np.ndarray], np.ndarray],
    vectors: np.ndarray,
    singular_values: np.ndarray,
    n_good: int,
) -> np.ndarray:
    """Orthonormal partner vectors for the weak directions, orthogonal to the good partners ``M v / s``, where
    ``M = matrix @ F^T`` is never formed (``to_basis`` applies ``F^T``, ``from_basis`` applies ``F``).

    The good partners span ``M V_g``, whose projector is ``M V_g S_g^-2 V_g^T M^T``: the weak vectors are
    orthogonalised against them without forming them.
    """
    k = vectors.shape[1] - n_good
    if k == 0:
        return np.zeros((matrix.shape[0], 0))
    good = vectors[:, :n_good] / singular_values[:n_good] ** 2
    rest = matrix @ to_basis(vectors[:, n_good:])
    rest = rest / np.maximum(np.linalg.norm(rest, axis=0), np.finfo(float).tiny)
    for _ in range(2):  # project out the good partners twice ("twice is enough" for Gram-Schmidt)
        back = from_basis(matrix.T @ rest)
        rest = rest - matrix @ to_basis(good @ (vectors[:, :n_good].T @ back))
    if np.min(np.linalg.norm(rest, axis=0)) > 1e-3:
        return np.linalg.qr(rest)[0]
    # a remainder vanished: complete the basis from the full partner vectors
    return _partner_vectors(from_basis(matrix.T).T, vectors, singular_values)[:, n_good:]


def _scaling(scales: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Multiplication by ``diag(scales)`` (the eigenbasis whitening's ``F``, which is its own transpose there)."""
    return lambda matrix: scales[:, None] * matrix


def _view_matrix(matrix: np.ndarray | None, rows: ImplicitRows | None) -> np.ndarray:
    """A view's projection rows, from the matrix when it was formed, else from its factors."""
    if matrix is not None:
        return matrix
    assert rows is not None, "every fit stores each view either as a matrix or as ImplicitRows"
    return rows.matrix()


def _flip_canonically(matrices: dict[str, np.ndarray | None], big_rows: ImplicitRows) -> ImplicitRows:
    """Flip every canonical pair (in place in ``matrices``) so that the largest |entry| of its Py row is positive."""
    proj_y = matrices["y"]
    assert proj_y is not None, "Py is always formed: it is the small view's matrix or the big view's rows"
    flip = _canonical_signs(proj_y)
    for matrix in matrices.values():
        if matrix is not None:
            matrix *= flip[:, None]
    return big_rows.flipped(flip)


def _one_hot_counts(scatter: JointScatter, columns: slice) -> np.ndarray | None:
    """Column counts when one view of the scatter is one-hot labels (rows without a label allowed), else None.

    Its Gram matrix is then diagonal with the column sums on it (no row with two non-zeros, and those are ones),
    and it is not shifted; its covariance is exactly ``(diag(c) - c c^T / N) / (N - 1)``. Exact in floating point.
    """
    sums = scatter.sum_z[columns]
    gram = scatter.cross[columns, columns]
    if np.any(scatter.shift[columns] != 0):
        return None
    if not np.array_equal(np.diagonal(gram), sums) or np.count_nonzero(gram) != np.count_nonzero(sums):
        return None
    return sums.copy()


def _gram_eigenvectors(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors of a Gram matrix by decreasing eigenvalue, and the singular values (their roots)."""
    # a symmetric C-ordered matrix is its own Fortran-ordered transpose: LAPACK works on it without a copy
    eigvals, eigvecs = scipy.linalg.eigh(gram.T, overwrite_a=True, check_finite=False, driver="evd")
    return eigvecs[:, ::-1], np.sqrt(np.clip(eigvals[::-1], 0.0, None))


def _partner_vectors(matrix: np.ndarray, vectors: np.ndarray, singular_values: np.ndarray) -> np.ndarray:
    """The other side's singular vectors, ``matrix @ v / s``.

    Where ``s`` is tiny compared with the largest (at most 1e-6 of it) the division amplifies rounding, so those
    vectors are orthonormalised against the others by a Householder QR (always orthonormal, even for zero
    columns, like the arbitrary completion a full SVD returns for a zero singular value).
    """
    partners = matrix @ vectors
    weak = _weak(singular_values)
    partners[:, ~weak] /= singular_values[~weak]
    if np.any(weak):
        n_good = int(np.sum(~weak))  # singular values are sorted: the weak ones come last
        good, rest = partners[:, :n_good], partners[:, n_good:]
        rest = rest / np.maximum(np.linalg.norm(rest, axis=0), np.finfo(float).tiny)
        for _ in range(2):  # project out the good vectors twice ("twice is enough" for Gram-Schmidt)
            rest = rest - good @ (good.T @ rest)
        if np.min(np.linalg.norm(rest, axis=0)) > 1e-3:
            partners[:, n_good:] = np.linalg.qr(rest)[0]
        else:  # a remainder vanished: complete the basis from a full Householder QR
            partners[:, n_good:] = np.linalg.qr(partners)[0][:, n_good:]
    return partners


def _independent_subset(cov: np.ndarray, dims: np.ndarray) -> np.ndarray:
    """Greedy linearly independent subset of ``dims`` (pivoted Cholesky of the correlation matrix)."""
    std = np.sqrt(np.diagonal(cov))
    corr = cov / np.outer(std, std)
    _, pivots, rank, _ = lapack.dpstrf(corr, tol=STABLE_TOLERANCE)
    return np.sort(dims[pivots[:rank] - 1])
