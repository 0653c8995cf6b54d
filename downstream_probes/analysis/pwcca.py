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

What differs is only how it is computed: the covariance is accumulated once, in float64 chunks, for each of
the ten splits, and every train part is the sum of its splits; each regularisation value reuses one
eigendecomposition per view (``eig(S + eps I) = eig(S) + eps``); the SVD comes from the eigendecomposition of
the smaller Gram matrix. The reference leaves the sign of every canonical pair to the LAPACK build, and its
weighting is not sign invariant (it adds the means back); ``sign_convention="canonical"`` fixes the signs
(largest entry of each ``Py`` row positive), ``"lapack"`` takes numpy's SVD of the very matrix the reference
decomposes, which reproduces the reference bit for bit but is slower.

With one-hot label views the reference problem is singular (the one-hot columns sum to one), and its score
depends on rounding noise; ``stable=True`` keeps a linearly independent subset of each view's dimensions first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.linalg import lapack

from downstream_probes.analysis.moments import (
    DEFAULT_CHUNK_ROWS,
    JointScatter,
    View,
    iter_row_chunks,
    joint_scatter,
)
from downstream_probes.analysis.splits import epsilon_schedule, stratified_splits

SIGN_CONVENTIONS = ("canonical", "lapack")
PINV_RCOND = 1e-15  # numpy.linalg.pinv's default cut-off, which the reference relies on
STABLE_TOLERANCE = 1e-10  # stable=True: smallest share of a dimension's variance not explained by the others


class CCAInputError(ValueError):
    """The views given to PWCCA cannot be analysed (shapes, sample counts, values)."""


class CCAFitError(ValueError):
    """No regularisation value gave a usable PWCCA fit."""


# --------------------------------------------------------------------------------------------- the fit


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
        good = (self.ax[:, None] * self.m0 * self.ay[None, :]) @ (self.right[:, : self.n_good] / self.singular_values[: self.n_good])
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


# --------------------------------------------------------------------------------------------- scoring


CACHE_BYTES = 64 * 2**20  # held-out parts up to this size are kept in memory (centred, float64)


class HeldOutPart:
    """One held-out set of rows of both views, ready to be scored by several fits.

    Three ways to the same numbers, picked by size:

    * ``moments``: when the part's joint scatter is given and it has more rows than dimensions, every quantity
      of the score is a small matrix product of that scatter (see :meth:`_score_from_moments`): no data pass;
    * ``memory``: small parts keep their centred rows (float64); with ``rotate=True`` also rotated into each
      fit's basis, so that the fits of one train part (which share it) project with one product each;
    * ``chunks``: large parts without a scatter are read again, in chunks, for every fit.

    When the projected directions are too ill-conditioned for the Gram route, the weights fall back to a
    Householder QR of the data, as in the reference.
    """

    def __init__(
        self,
        x: View,
        y: View,
        rows: np.ndarray,
        mean_x: np.ndarray,
        mean_y: np.ndarray,
        *,
        scatter: JointScatter | None = None,
        rotate: bool = False,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        self.views = {"x": x, "y": y}
        self.means = {"x": mean_x, "y": mean_y}
        self.rows = rows
        self.rotate = rotate
        self.chunk_rows = chunk_rows
        dims = x.shape[1] + y.shape[1]
        self._data: dict[str, object] = {}
        self._rotated: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self._centred_scatter: np.ndarray | None = None
        if scatter is not None and len(rows) > dims:
            self.strategy = "moments"
            self._centred_scatter = scatter.centred_cross()
        elif len(rows) * dims * 8 <= CACHE_BYTES:
            self.strategy = "memory"
            self._load()
        else:
            self.strategy = "chunks"

    def _load(self) -> None:
        for name, view in self.views.items():
            rows_data = view.rows(self.rows)
            if not view.sparse:
                rows_data -= self.means[name]  # dense: centred in place; sparse: kept raw
            self._data[name] = rows_data

    def score(self, projection: PWCCAProjection, mean_score: bool = False) -> float:
        n = projection.n_directions
        if len(self.rows) < n:
            raise CCAInputError(
                f"held-out part has {len(self.rows)} samples but PWCCA scores {n} canonical directions; it needs "
                f"at least as many samples as directions (give more samples or fewer dimensions)"
            )
        fewer_x = projection.x_directions < projection.y_directions
        weight_views = ("x", "y") if mean_score else (("x",) if fewer_x else ("y",))
        if self.strategy == "moments":
            scores = self._score_from_moments(projection, weight_views)
            if scores is not None:
                return float(np.mean(scores))
            self.strategy = "memory" if len(self.rows) * sum(v.shape[1] for v in self.views.values()) * 8 <= CACHE_BYTES else "chunks"
            if self.strategy == "memory":
                self._load()
        if self.strategy == "memory":
            projected = {name: self._project(name, projection) for name in ("x", "y")}
            acts = {name: self._acts(name, projection.dims(name)[:n]) for name in weight_views}
        else:
            projected, acts = self._project_in_chunks(projection, weight_views)
        px, py = projected["x"], projected["y"]
        corr = np.einsum("ij,ij->j", px, py) / np.sqrt(
            np.einsum("ij,ij->j", px, px) * np.einsum("ij,ij->j", py, py)
        )
        scores = []
        for name in weight_views:
            dims = projection.dims(name)
            directions = projected[name] + self.means[name][dims][:n]
            weights = _projection_weights(directions, acts[name])
            scores.append(float(np.sum(weights * corr)))
        return float(np.mean(scores))

    def _score_from_moments(self, projection: PWCCAProjection, weight_views: tuple[str, ...]) -> list[float] | None:
        """The score from the part's centred scatter ``T`` (``(N - 1) * covariance``) alone.

        With ``P = Xc Px^T`` the centred projections: ``P_x^T P_y = Px Txy Py^T`` (correlations from its
        diagonal); for the weighting view, ``D = P + 1 mu^T`` and ``A = Xc[:, J] + 1 mu^T`` (``J`` its first
        ``n`` kept columns, ``mu`` their means) give ``D^T D = Px Txx Px^T + N mu mu^T`` and
        ``D^T A = Px Txx[:, J] + N mu mu^T`` because centred columns sum to zero. Returns None when a
        direction's variance is too close to rounding or the weights need the QR fallback.
        """
        n, dx = projection.n_directions, self.views["x"].shape[1]
        scatter = self._centred_scatter
        index = {"x": projection.x_dims, "y": dx + projection.y_dims}
        matrix = {"x": projection.proj_x, "y": projection.proj_y}
        times_scatter = {  # P T[:, kept dims of both views], (n, |x dims| + |y dims|)
            name: matrix[name] @ scatter[np.ix_(index[name], np.concatenate([index["x"], index["y"]]))]
            for name in ("x", "y")
        }
        nx = len(index["x"])
        cross = np.einsum("ij,ij->i", times_scatter["x"][:, nx:], matrix["y"])
        auto_x = np.einsum("ij,ij->i", times_scatter["x"][:, :nx], matrix["x"])
        auto_y = np.einsum("ij,ij->i", times_scatter["y"][:, nx:], matrix["y"])
        for auto, name in ((auto_x, "x"), (auto_y, "y")):
            # A direction whose variance is within 1e8 roundings of cancelling (the null direction of one-hot
            # labels) is not resolved by moments: the data must be projected, as the reference does.
            block = np.diagonal(scatter)[index[name]]
            if np.any(auto <= 1e-8 * np.sum(matrix[name] ** 2, axis=1) * np.max(block)):
                return None
        corr = cross / np.sqrt(auto_x * auto_y)
        scores = []
        for name in weight_views:
            own = times_scatter[name][:, :nx] if name == "x" else times_scatter[name][:, nx:]
            mu = self.means[name][projection.dims(name)[:n]]
            outer = len(self.rows) * np.outer(mu, mu)
            weights = _weights_from_gram(own @ matrix[name].T + outer, own[:, :n] + outer)
            if weights is None:
                return None
            scores.append(float(np.sum(weights * corr)))
        return scores

    def _project(self, name: str, projection: PWCCAProjection) -> np.ndarray:
        """Centred rows of view ``name`` times ``P^T`` (``(rows, n)``), from the in-memory copy."""
        dims = projection.dims(name)
        basis = projection.x_basis if name == "x" else projection.y_basis
        factor = None if name == "x" and projection.x_partner is not None else projection.view(name)[1]
        data, mean = self._data[name], self.means[name]
        if self.views[name].sparse:  # (a - m) P^T = a P^T - m P^T keeps the product sparse
            matrix = projection.proj_x if name == "x" else projection.proj_y
            return np.asarray(data[:, dims] @ matrix.T) - mean[dims] @ matrix.T
        columns = data if len(dims) == data.shape[1] else data[:, dims]
        if self.rotate and basis is not None:  # Px itself is never formed
            rotated = self._cached(("rotated", name, dims.tobytes(), id(basis)), basis, lambda: columns @ basis)
            partner = projection.x_partner if name == "x" else None
            if partner is None:
                return rotated @ factor.T
            # P = Xr diag(ax) U with U = [diag(ax) M0 diag(ay) V_g / s_g, weak]: Xr diag(ax^2) M0 is shared by
            # every fit of this train part with the same epsilon_x
            through = self._cached(
                ("through", id(basis), id(partner.m0), partner.ax.tobytes()), partner.m0,
                lambda: (rotated * partner.ax**2) @ partner.m0,
            )  # fmt: skip
            g = partner.n_good
            projected = np.empty((rotated.shape[0], len(partner.singular_values)))
            projected[:, :g] = (through * partner.ay) @ (partner.right[:, :g] / partner.singular_values[:g])
            projected[:, g:] = (rotated * partner.ax) @ partner.weak_left
            return projected
        return columns @ (projection.proj_x if name == "x" else projection.proj_y).T

    def _cached(self, key: tuple, owner: object, compute):
        """Memoised per held-out part; ``owner`` is kept with the value so that an ``id`` in the key stays valid."""
        entry = self._rotated.get(key)
        if entry is None or entry[0] is not owner:
            entry = (owner, compute())
            self._rotated[key] = entry
        return entry[1]

    def _acts(self, name: str, dims: np.ndarray):
        """The uncentred rows of view ``name`` in columns ``dims`` (sparse for sparse views)."""
        data = self._data[name]
        if self.views[name].sparse:
            return data[:, dims]
        return data[:, dims] + self.means[name][dims]

    def _project_in_chunks(self, projection: PWCCAProjection, weight_views: tuple[str, ...]):
        n = projection.n_directions
        projected = {name: np.empty((len(self.rows), n)) for name in ("x", "y")}
        acts: dict[str, list] = {name: [] for name in weight_views}
        start = 0
        for chunk in iter_row_chunks(self.rows, self.chunk_rows):
            stop = start + len(chunk)
            for name in ("x", "y"):
                view, mean = self.views[name], self.means[name]
                dims = projection.dims(name)
                matrix = projection.proj_x if name == "x" else projection.proj_y
                raw = view.rows(chunk)
                if len(dims) != view.shape[1]:
                    raw = raw[:, dims]
                if name in acts:
                    acts[name].append(raw[:, :n].copy())
                if view.sparse:
                    projected[name][start:stop] = raw @ matrix.T - mean[dims] @ matrix.T
                else:
                    raw -= mean[dims]
                    projected[name][start:stop] = raw @ matrix.T
            start = stop
        stacked = {
            name: scipy.sparse.vstack(parts, format="csr") if self.views[name].sparse else np.concatenate(parts)
            for name, parts in acts.items()
        }
        return projected, stacked


def held_out_score(
    projection: PWCCAProjection,
    x: np.ndarray | View,
    y: np.ndarray | View,
    rows: np.ndarray | None = None,
    *,
    mean_x: np.ndarray | None = None,
    mean_y: np.ndarray | None = None,
    mean_score: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> float:
    """PWCCA score of trained projections on the rows ``rows`` of ``x``/``y`` (all rows when None).

    ``mean_x``/``mean_y`` are the views' means over those rows; they are computed when not given.
    """
    x = x if isinstance(x, View) else View(x)
    y = y if isinstance(y, View) else View(y)
    if rows is None:
        rows = np.arange(x.shape[0])
    if mean_x is None:
        mean_x = x.column_means(rows, chunk_rows)
    if mean_y is None:
        mean_y = y.column_means(rows, chunk_rows)
    return HeldOutPart(x, y, rows, mean_x, mean_y, chunk_rows=chunk_rows).score(projection, mean_score)


def _projection_weights(directions: np.ndarray, acts) -> np.ndarray:
    """``w_i = sum_j |q_i . a_j|`` normalised, with ``Q`` from the QR of the (samples, n) ``directions``."""
    weights = _weights_from_gram(directions.T @ directions, _transposed_product(directions, acts))
    if weights is None:  # ill-conditioned: a Householder QR, as the reference does
        weights = np.sum(np.abs(_transposed_product(np.linalg.qr(directions)[0], acts)), axis=1)
        weights = weights / np.sum(weights)
    return weights


def _weights_from_gram(gram: np.ndarray, directions_t_acts: np.ndarray) -> np.ndarray | None:
    """Projection weights from ``D^T D`` and ``D^T A``: ``Q^T A = R^-T (D^T A)`` with ``R`` the Cholesky factor
    of ``D^T D`` (the QR's ``R`` up to row signs, which the absolute value ignores).

    None when ``D`` is too ill-conditioned for that (Cholesky fails, or its diagonal spans more than 1e4,
    i.e. a condition number of ``D^T D`` beyond about 1e8).
    """
    try:
        r = scipy.linalg.cholesky(gram, lower=False, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    diagonal = np.diagonal(r)
    if not diagonal.min() > 1e-4 * diagonal.max():
        return None
    q_t_acts = scipy.linalg.solve_triangular(r, directions_t_acts, trans="T", check_finite=False)
    weights = np.sum(np.abs(q_t_acts), axis=1)
    return weights / np.sum(weights)


def _transposed_product(dense: np.ndarray, other) -> np.ndarray:
    """``dense^T @ other`` for a dense or sparse ``other``."""
    if scipy.sparse.issparse(other):
        return np.asarray((other.T @ dense).T)
    return dense.T @ other


# --------------------------------------------------------------------------------------------- public API


def pwcca(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    epsilon_x: float,
    epsilon_y: float,
    *,
    stable: bool = False,
    sign_convention: str = "canonical",
    mean_score: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> float:
    """PWCCA similarity of ``(x_eval, y_eval)`` under projections fitted on ``(x_train, y_train)``.

    Views are ``(samples, dims)`` arrays (any float dtype; read in float64 chunks). ``epsilon_x``/``epsilon_y``
    regularise the two covariances (and drop dimensions whose rescaled variance is below them).
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
    x: np.ndarray,
    y: np.ndarray,
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
) -> CCAResult:
    """The reference's held-out PWCCA protocol, seeded.

    Samples are split into ``n_splits`` parts stratified by ``labels``; for up to ``n_splits // 2`` disjoint
    (dev, test) pairs, PWCCA is fitted on the other parts with the first ``n_epsilons`` epsilon pairs that
    succeed, the best pair on dev is scored on test; the protocol stops after ``n_trials`` successful pairs and
    returns the mean test score.
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
    scatters = [joint_scatter(x, y, split, shift, chunk_rows) for split in _progress(splits, progress, "covariance")]
    total = scatters[0]
    for scatter in scatters[1:]:
        total = total + scatter
    _require_finite(total)
    dx = x.shape[1]

    trials: list[CCATrial] = []
    remaining = list(range(n_splits))
    for _ in _progress(range(n_splits // 2), progress, "trials"):
        dev, test = (int(i) for i in rng.choice(remaining, size=2, replace=False))
        remaining = [i for i in remaining if i not in (dev, test)]
        trial = _run_trial(
            x, y, splits, scatters, total, dev, test, dx, rng,
            n_epsilons=n_epsilons, stable=stable, sign_convention=sign_convention,
            mean_score=mean_score, chunk_rows=chunk_rows,
        )  # fmt: skip
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
        "n_splits": n_splits, "n_trials": n_trials, "n_epsilons": n_epsilons, "stable": stable,
        "sign_convention": sign_convention, "mean_score": mean_score, "n_samples": n_samples,
    }  # fmt: skip
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
    covariance = TrainedCovariance.from_scatter(total - scatters[dev] - scatters[test], dx, stable=stable)
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

    def held_out(split: int, rotate: bool) -> HeldOutPart:
        mean = scatters[split].mean()
        return HeldOutPart(
            x, y, splits[split], mean[:dx], mean[dx:], scatter=scatters[split], rotate=rotate, chunk_rows=chunk_rows
        )

    dev_part = held_out(dev, rotate=len(fits) > 1)
    dev_scores = np.array([dev_part.score(fit, mean_score) for fit in fits])
    del dev_part
    if np.all(np.isnan(dev_scores)):
        return None
    # The reference's argmax would pick a NaN score; skipping NaNs is the one deliberate difference.
    best = int(np.nanargmax(dev_scores))
    return CCATrial(
        dev, test,
        tuple((f.epsilon_x, f.epsilon_y) for f in fits), tuple(float(s) for s in dev_scores),
        (fits[best].epsilon_x, fits[best].epsilon_y), held_out(test, rotate=False).score(fits[best], mean_score),
    )  # fmt: skip


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


def _progress(iterable, enabled: bool, description: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=description, leave=False)
