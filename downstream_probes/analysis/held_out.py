"""Scoring trained PWCCA projections on held-out data: the reference's step 5, three ways to the same number.

Centre each view by the held-out data's own mean, project onto the ``n`` canonical directions, correlate
direction by direction; weights ``w_i = sum_j |q_i . a_j|`` from the QR of the projected rows with the view's means
added back (``a_j``: the first ``n`` uncentred input dimensions); score ``sum(w * corr) / sum(w)`` with the
weights of the view with fewer directions (y on a tie), or the mean of both (``mean_score``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import scipy.linalg
import scipy.sparse

from downstream_probes.analysis.errors import CCAInputError
from downstream_probes.analysis.fit import PWCCAProjection
from downstream_probes.analysis.moments import (
    DEFAULT_CHUNK_ROWS,
    JointScatter,
    View,
    iter_row_chunks,
    transposed_product,
)

CACHE_BYTES = 64 * 2**20  # held-out parts up to this size are kept in memory (centred, float64)

_Value = TypeVar("_Value")


class HeldOutPart:
    """One held-out set of rows of both views, ready to be scored by several fits.

    Three ways to the same numbers, picked by size:

    * ``moments``: when the part's joint scatter is given and it has more rows than dimensions, every quantity
      of the score is a small matrix product of that scatter (see :meth:`_score_from_moments`): no data pass;
    * ``memory``: small parts keep their centred rows (float64) and the products of those rows with the factors
      that the fits of one train part share, so that each fit projects with one small product;
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
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        self.views = {"x": x, "y": y}
        self.means = {"x": mean_x, "y": mean_y}
        self.rows = rows
        self.chunk_rows = chunk_rows
        dims = x.shape[1] + y.shape[1]
        self._data: dict[str, np.ndarray | scipy.sparse.csr_matrix] = {}
        self._shared: dict[tuple, tuple[object, Any]] = {}  # key -> (owner, value); values of several types
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
            total_dims = sum(view.shape[1] for view in self.views.values())
            self.strategy = "memory" if len(self.rows) * total_dims * 8 <= CACHE_BYTES else "chunks"
            if self.strategy == "memory":
                self._load()
        if self.strategy == "memory":
            projected = {name: self._project(name, projection) for name in ("x", "y")}
            acts = {name: self._acts(name, projection.dims(name)[:n]) for name in weight_views}
        else:
            projected, acts = self._project_in_chunks(projection, weight_views)
        px, py = projected["x"], projected["y"]
        corr = np.einsum("ij,ij->j", px, py) / np.sqrt(np.einsum("ij,ij->j", px, px) * np.einsum("ij,ij->j", py, py))
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
        assert scatter is not None, "the moments strategy is chosen only with a scatter"
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
        mean = self.means[name]
        columns = self._columns(name, dims)
        if self.views[name].sparse:  # (a - m) P^T = a P^T - m P^T keeps the product sparse
            matrix = projection.matrix(name)
            return np.asarray(columns @ matrix.T) - mean[dims] @ matrix.T
        implicit = projection.implicit(name)
        if implicit is None:
            return columns @ projection.matrix(name).T
        # P itself is never formed: rows @ through is shared by every fit of the train part with this epsilon
        rows_through = self._cached(
            ("through", name, dims.tobytes(), id(implicit.through)),
            implicit.through,
            lambda: columns @ implicit.through,
        )
        return implicit.project(columns, rows_through)

    def _cached(self, key: tuple, owner: object, compute: Callable[[], _Value]) -> _Value:
        """Memoised per held-out part; ``owner`` is kept with the value so that an ``id`` in the key stays valid."""
        entry = self._shared.get(key)
        if entry is None or entry[0] is not owner:
            entry = (owner, compute())
            self._shared[key] = entry
        return entry[1]

    def _columns(self, name: str, dims: np.ndarray):
        """The in-memory rows of view ``name`` in columns ``dims`` (the same for most fits: memoised)."""
        data = self._data[name]
        if len(dims) == data.shape[1]:  # kept dims are sorted and unique: all of them
            return data
        return self._cached(("columns", name, dims.tobytes()), data, lambda: data[:, dims])

    def _acts(self, name: str, dims: np.ndarray):
        """The uncentred rows of view ``name`` in columns ``dims`` (sparse for sparse views)."""
        columns = self._columns(name, dims)
        if self.views[name].sparse:
            return columns
        return columns + self.means[name][dims]

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
    directions_t_acts = transposed_product(directions, acts)
    weights = _weights_from_gram(directions.T @ directions, directions_t_acts)
    if weights is not None:
        return weights
    # Too ill-conditioned for the Gram route: R from a Householder QR (as the reference), Q^T A = R^-T (D^T A),
    # accurate to cond(R) * 1e-16; Q itself only when R is numerically singular.
    r = scipy.linalg.qr(directions, mode="r", check_finite=False)[0][: directions.shape[1]]
    diagonal = np.abs(np.diagonal(r))
    if diagonal.min() > 1e-10 * diagonal.max():
        q_t_acts = scipy.linalg.solve_triangular(r, directions_t_acts, trans="T", check_finite=False)
    else:
        q_t_acts = transposed_product(np.linalg.qr(directions)[0], acts)
    weights = np.sum(np.abs(q_t_acts), axis=1)
    return weights / np.sum(weights)


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
