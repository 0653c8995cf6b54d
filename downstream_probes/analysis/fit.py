"""Fitting PWCCA on one train part: the reference's steps 1-4, with the decompositions shared across epsilons.

Per train part, one ``eigh`` per view (``eig(S + eps I) = eig(S) + eps``, with ``pinv``'s cut-off applied to the
shifted eigenvalues); per (epsilon_x, epsilon_y), the SVD of ``Sxx^-1/2 Sxy Syy^-1/2`` from the eigendecomposition
of its smaller Gram matrix in the two eigenbases, signs fixed canonically (largest entry of each ``Py`` row
positive). ``sign_convention="lapack"`` instead decomposes the very matrix the reference decomposes with
``numpy.linalg.svd`` (its signs, slower). ``stable=True`` first keeps a linearly independent subset of each view's
dimensions (see ``docs/analysis.md``: one-hot labels make the reference's problem singular).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.linalg
from scipy.linalg import lapack

from downstream_probes.analysis.errors import CCAInputError
from downstream_probes.analysis.moments import JointScatter

SIGN_CONVENTIONS = ("canonical", "lapack")
PINV_RCOND = 1e-15  # numpy.linalg.pinv's default cut-off, which the reference relies on
STABLE_TOLERANCE = 1e-10  # stable=True: smallest share of a dimension's variance not explained by the others


@dataclass(frozen=True)
class GramPartner:
    """The x-side singular vectors of ``W = diag(ax) M0 diag(ay)`` (``W`` in the two eigenbases), kept implicit.

    ``U = [W V_good / s_good, weak_left]``: only the few weak directions are stored; the rest follow from the
    y-side vectors ``right`` (columns already sign-fixed). Held-out data rotated into the x eigenbasis can then be
    projected through ``M0`` (shared by all fits of a train part) without forming ``U``.
    """

    ax: np.ndarray
    m0: np.ndarray
    ay: np.ndarray
    right: np.ndarray
    singular_values: np.ndarray
    n_good: int
    weak_left: np.ndarray

    def left(self) -> np.ndarray:
        g = self.n_good
        good = (self.ax[:, None] * self.m0 * self.ay[None, :]) @ (self.right[:, :g] / self.singular_values[:g])
        return np.hstack([good, self.weak_left])


@dataclass(frozen=True)
class PWCCAProjection:
    """Trained PWCCA projections for one train part and one (epsilon_x, epsilon_y).

    ``proj_x`` is ``Px[:n]`` restricted to the kept columns ``x_dims`` of x (likewise y). It is stored as
    ``x_factor @ x_basis.T`` (``x_basis`` orthonormal, None for the identity) so that held-out data rotated once
    into the basis can be projected by every fit of a train part; ``x_factor`` itself may be implicit
    (``x_partner``). ``x_directions``/``y_directions`` are the row counts of the full ``Px``/``Py`` (they decide
    which view weights the score).
    """

    x_dims: np.ndarray
    y_dims: np.ndarray
    y_factor: np.ndarray
    canonical_correlations: np.ndarray
    epsilon_x: float
    epsilon_y: float
    x_factor_matrix: np.ndarray | None = None
    x_basis: np.ndarray | None = None
    y_basis: np.ndarray | None = None
    x_partner: GramPartner | None = None

    @cached_property
    def x_factor(self) -> np.ndarray:
        if self.x_factor_matrix is not None:
            return self.x_factor_matrix
        return self.x_partner.left().T * self.x_partner.ax

    @cached_property
    def proj_x(self) -> np.ndarray:
        return self.x_factor if self.x_basis is None else self.x_factor @ self.x_basis.T

    @cached_property
    def proj_y(self) -> np.ndarray:
        return self.y_factor if self.y_basis is None else self.y_factor @ self.y_basis.T

    @property
    def n_directions(self) -> int:
        return self.y_factor.shape[0]

    @property
    def x_directions(self) -> int:
        return len(self.x_dims)

    @property
    def y_directions(self) -> int:
        return len(self.y_dims)

    def view(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(kept dims, factor, basis) of view ``"x"`` or ``"y"``."""
        if name == "x":
            return self.x_dims, self.x_factor, self.x_basis
        return self.y_dims, self.y_factor, self.y_basis

    def dims(self, name: str) -> np.ndarray:
        return self.x_dims if name == "x" else self.y_dims


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

    def inverse_sqrt(self, epsilon: float) -> np.ndarray:
        return (self.eigvecs * self.inverse_sqrt_scales(epsilon)) @ self.eigvecs.T


class TrainedCovariance:
    """Rescaled covariance blocks of one train part, with the decompositions shared by every epsilon."""

    def __init__(self, joint_cov: np.ndarray, dx: int, *, stable: bool = False) -> None:
        sxx = joint_cov[:dx, :dx]
        syy = joint_cov[dx:, dx:]
        xmax = float(np.max(np.abs(sxx)))
        ymax = float(np.max(np.abs(syy)))
        if xmax == 0.0 or ymax == 0.0:
            view = "x" if xmax == 0.0 else "y"
            raise CCAInputError(f"view {view} is constant on the training samples: there is nothing to correlate")
        self.sxx = sxx / xmax
        self.syy = syy / ymax
        self.sxy = joint_cov[:dx, dx:] / np.sqrt(xmax * ymax)
        self.stable = stable
        self._whitenings: dict[tuple[str, bytes], _Whitening] = {}
        self._rotated_cross: dict[tuple[bytes, bytes], np.ndarray] = {}
        self._x_whitened_gram: dict[tuple[bytes, bytes, bytes], np.ndarray] = {}

    @classmethod
    def from_scatter(cls, scatter: JointScatter, dx: int, *, stable: bool = False) -> "TrainedCovariance":
        return cls(scatter.covariance(), dx, stable=stable)

    def kept_dims(self, view: str, epsilon: float) -> np.ndarray:
        """Columns whose rescaled variance reaches epsilon (and, when stable, a linearly independent subset)."""
        cov = self.sxx if view == "x" else self.syy
        dims = np.flatnonzero(np.abs(np.diagonal(cov)) >= epsilon)
        if self.stable and len(dims) > 1:
            dims = _independent_subset(cov[np.ix_(dims, dims)], dims)
        return dims

    def whitening(self, view: str, dims: np.ndarray) -> _Whitening:
        key = (view, dims.tobytes())
        if key not in self._whitenings:
            cov = self.sxx if view == "x" else self.syy
            eigvals, eigvecs = np.linalg.eigh(cov[np.ix_(dims, dims)])
            self._whitenings[key] = _Whitening(dims, eigvals, eigvecs)
        return self._whitenings[key]

    def rotated_cross(self, wx: _Whitening, wy: _Whitening) -> np.ndarray:
        """``Sxy`` in the two eigenbases, ``Vx^T Sxy Vy``."""
        key = (wx.dims.tobytes(), wy.dims.tobytes())
        if key not in self._rotated_cross:
            self._rotated_cross[key] = wx.eigvecs.T @ self.sxy[np.ix_(wx.dims, wy.dims)] @ wy.eigvecs
        return self._rotated_cross[key]

    def fit(self, epsilon_x: float, epsilon_y: float, sign_convention: str = "canonical") -> PWCCAProjection:
        """Projections for one regularisation pair; ``np.linalg.LinAlgError`` when the reference's fit fails."""
        if sign_convention not in SIGN_CONVENTIONS:
            raise ValueError(f"sign_convention must be one of {SIGN_CONVENTIONS}, got {sign_convention!r}")
        x_dims = self.kept_dims("x", epsilon_x)
        y_dims = self.kept_dims("y", epsilon_y)
        if len(x_dims) == 0 or len(y_dims) == 0:
            raise np.linalg.LinAlgError("every dimension of a view has variance below epsilon")
        wx, wy = self.whitening("x", x_dims), self.whitening("y", y_dims)
        if sign_convention == "lapack":
            proj_x, proj_y, corr = self._fit_lapack(wx, wy, epsilon_x, epsilon_y)
            return PWCCAProjection(x_dims, y_dims, proj_y, corr, epsilon_x, epsilon_y, x_factor_matrix=proj_x)
        x_factor, partner, proj_y, corr = self._fit_gram(wx, wy, epsilon_x, epsilon_y)
        return PWCCAProjection(
            x_dims, y_dims, proj_y, corr, epsilon_x, epsilon_y,
            x_factor_matrix=x_factor, x_basis=wx.eigvecs, x_partner=partner,
        )  # fmt: skip

    def _fit_lapack(self, wx: _Whitening, wy: _Whitening, epsilon_x: float, epsilon_y: float):
        """The reference's own steps: numpy's SVD of ``Sxx^-1/2 Sxy Syy^-1/2``."""
        invsqrt_x = wx.inverse_sqrt(epsilon_x)
        invsqrt_y = wy.inverse_sqrt(epsilon_y)
        arr = invsqrt_x @ (self.sxy[np.ix_(wx.dims, wy.dims)] @ invsqrt_y)
        u, s, vh = np.linalg.svd(arr, full_matrices=False)
        n = min(len(wx.dims), len(wy.dims))
        return u[:, :n].T @ invsqrt_x, vh[:n] @ invsqrt_y, np.abs(s[:n])

    def _fit_gram(self, wx: _Whitening, wy: _Whitening, epsilon_x: float, epsilon_y: float):
        """The same projections from the eigendecomposition of the smaller Gram matrix, in the eigenbases."""
        ax = wx.inverse_sqrt_scales(epsilon_x)
        ay = wy.inverse_sqrt_scales(epsilon_y)
        m0 = self.rotated_cross(wx, wy)
        whitened = ax[:, None] * m0 * ay[None, :]  # Vx^T (Sxx^-1/2 Sxy Syy^-1/2) Vy
        if whitened.shape[1] <= whitened.shape[0]:
            # the usual case (y has fewer dimensions): the x-side vectors stay implicit. The Gram matrix is
            # diag(ay) (M0^T diag(ax^2) M0) diag(ay); its middle part is shared by the fits with this epsilon_x.
            key = (wx.dims.tobytes(), wy.dims.tobytes(), ax.tobytes())
            if key not in self._x_whitened_gram:
                half = ax[:, None] * m0
                self._x_whitened_gram[key] = half.T @ half
            right, s = _gram_eigenvectors(ay[:, None] * self._x_whitened_gram[key] * ay[None, :])
            n_good = int(np.sum(~_weak(s)))
            weak_left = _weak_completion(whitened, right, s, n_good)
            proj_y, flip = _canonical_signs((right.T * ay) @ wy.eigvecs.T)
            partner = GramPartner(ax, m0, ay, right * flip, s, n_good, weak_left * flip[n_good:])
            return None, partner, proj_y, s
        left, s = _gram_eigenvectors(whitened @ whitened.T)
        right = _partner_vectors(whitened.T, left, s)
        proj_y, flip = _canonical_signs((right.T * ay) @ wy.eigvecs.T)
        return (left.T * ax) * flip[:, None], None, proj_y, s


def _canonical_signs(proj_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip each canonical pair so that the largest |entry| of its ``Py`` row is positive; returns the flips."""
    flip = np.sign(proj_y[np.arange(len(proj_y)), np.argmax(np.abs(proj_y), axis=1)])
    flip[flip == 0] = 1.0
    return proj_y * flip[:, None], flip


def _weak(singular_values: np.ndarray) -> np.ndarray:
    """Directions whose singular value is at most 1e-6 of the largest: ``W v / s`` amplifies rounding there."""
    return singular_values <= 1e-6 * max(float(singular_values[0]), np.finfo(float).tiny)


def _weak_completion(matrix: np.ndarray, vectors: np.ndarray, singular_values: np.ndarray, n_good: int) -> np.ndarray:
    """Orthonormal partner vectors for the weak directions, orthogonal to the good partners ``matrix v / s``.

    The good partners span ``matrix V_g``, whose projector is ``matrix V_g S_g^-2 V_g^T matrix^T``: the weak
    vectors are orthogonalised against them without forming them.
    """
    k = vectors.shape[1] - n_good
    if k == 0:
        return np.zeros((matrix.shape[0], 0))
    good = vectors[:, :n_good] / singular_values[:n_good] ** 2
    rest = matrix @ vectors[:, n_good:]
    rest = rest / np.maximum(np.linalg.norm(rest, axis=0), np.finfo(float).tiny)
    for _ in range(2):  # project out the good partners twice ("twice is enough" for Gram-Schmidt)
        rest = rest - matrix @ (good @ (vectors[:, :n_good].T @ (matrix.T @ rest)))
    if np.min(np.linalg.norm(rest, axis=0)) > 1e-3:
        return np.linalg.qr(rest)[0]
    return _partner_vectors(matrix, vectors, singular_values)[:, n_good:]  # a remainder vanished


def _gram_eigenvectors(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors of a Gram matrix by decreasing eigenvalue, and the singular values (their roots)."""
    eigvals, eigvecs = scipy.linalg.eigh(gram, overwrite_a=True, check_finite=False, driver="evd")
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
