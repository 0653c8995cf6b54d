"""Chunked first and second moments of two paired views, in float64.

PWCCA needs the joint covariance of two views, ``(samples, dims)`` each, on many subsets of their rows
(train, dev and test parts of a cross-validation). The views can be large (180k frames x 768 dims in float32 is
550 MB), so the moments are accumulated over chunks of rows: only one chunk at a time is ever converted to
float64, and no ``samples x samples`` matrix is formed.

Dense views are shifted by a fixed reference point (near their mean) before products are summed, so that sums
of squares do not cancel catastrophically when the means are large compared with the spread. Mostly-zero views
(one-hot labels) are kept sparse and unshifted: their products then cost one operation per non-zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse

DEFAULT_CHUNK_ROWS = 2048
SPARSE_DENSITY = 0.05  # a view with at most this share of non-zeros is handled as a sparse matrix


def iter_row_chunks(rows: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Consecutive slices of the index array ``rows``, ``chunk_rows`` long at most."""
    for start in range(0, len(rows), chunk_rows):
        yield rows[start : start + chunk_rows]


class View:
    """One view, ``(samples, dims)``: a dense array read in float64 chunks, or a sparse CSR matrix."""

    def __init__(self, data: np.ndarray | scipy.sparse.spmatrix, *, detect_sparse: bool = True) -> None:
        if scipy.sparse.issparse(data) or (detect_sparse and data.size and _density(data) <= SPARSE_DENSITY):
            self.data = scipy.sparse.csr_matrix(data, dtype=np.float64)
        else:
            self.data = data
        self.sparse = scipy.sparse.issparse(self.data)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape

    def rows(self, rows: np.ndarray) -> np.ndarray | scipy.sparse.csr_matrix:
        """``view[rows]`` as float64: a dense array, or a CSR matrix for sparse views."""
        if self.sparse:
            return self.data[rows]
        return np.asarray(self.data[rows], dtype=np.float64)

    def dense_rows(self, rows: np.ndarray) -> np.ndarray:
        chunk = self.rows(rows)
        return chunk if isinstance(chunk, np.ndarray) else chunk.toarray()

    def column_means(self, rows: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
        total = np.zeros(self.shape[1], dtype=np.float64)
        for chunk in iter_row_chunks(rows, chunk_rows):
            total += np.asarray(self.rows(chunk).sum(axis=0)).ravel()
        return total / len(rows)

    def reference_shift(self, rows: np.ndarray) -> np.ndarray:
        """A point near the centre of the data to shift products by (zero for sparse views)."""
        if self.sparse:
            return np.zeros(self.shape[1])
        return self.column_means(rows[:: max(1, len(rows) // 2048)])


def _density(data: np.ndarray, probe_rows: int = 2048) -> float:
    """Share of non-zeros, estimated on evenly spread rows (exact for small views)."""
    sample = data[:: max(1, data.shape[0] // probe_rows)]
    return float(np.count_nonzero(sample)) / sample.size


@dataclass
class JointScatter:
    """Shifted sums of one set of rows of the joint view ``z = [x, y]``: enough to give its covariance.

    ``sum_z`` and ``cross`` hold ``sum(z - shift)`` and ``sum((z - shift)^T (z - shift))``; scatters of disjoint
    row sets with the same shift add up (:meth:`total`, :meth:`without`), which lets a train part be assembled
    from its splits.
    """

    count: int
    shift: np.ndarray
    sum_z: np.ndarray
    cross: np.ndarray

    @classmethod
    def total(cls, parts: list[JointScatter]) -> JointScatter:
        """The scatter of the union of disjoint row sets (same shift), summed in place."""
        sum_z, cross = parts[0].sum_z.copy(), parts[0].cross.copy()
        for part in parts[1:]:
            sum_z += part.sum_z
            cross += part.cross
        return cls(sum(part.count for part in parts), parts[0].shift, sum_z, cross)

    def without(self, *parts: JointScatter) -> JointScatter:
        """The scatter of these rows minus those of ``parts`` (disjoint subsets of them), in one new array."""
        sum_z, cross = self.sum_z.copy(), self.cross.copy()
        for part in parts:
            sum_z -= part.sum_z
            cross -= part.cross
        return JointScatter(self.count - sum(part.count for part in parts), self.shift, sum_z, cross)

    def mean(self) -> np.ndarray:
        return self.shift + self.sum_z / self.count

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """Joint covariance matrix (as ``np.cov`` of the rows, ``ddof=1`` by default)."""
        cov = self.centred_cross()
        cov += cov.T
        cov *= 0.5 / (self.count - ddof)
        return cov

    def covariance_blocks(self, dx: int, ddof: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The blocks ``xx``, ``yy``, ``xy`` of :meth:`covariance` (new arrays), without the joint matrix.

        The scatter is symmetric by construction (Gram products and their transposes), so the blocks equal
        those of the symmetrised :meth:`covariance`.
        """
        centred_mean = self.sum_z / self.count
        scale = 1.0 / (self.count - ddof)
        blocks = []
        for rows, columns in ((slice(None, dx), slice(None, dx)), (slice(dx, None), slice(dx, None))):
            block = self.count * np.outer(centred_mean[rows], centred_mean[columns])
            np.subtract(self.cross[rows, columns], block, out=block)
            block *= scale
            blocks.append(block)
        xy = self.count * np.outer(centred_mean[:dx], centred_mean[dx:])
        np.subtract(self.cross[:dx, dx:], xy, out=xy)
        xy *= scale
        return blocks[0], blocks[1], xy

    def centred_cross(self) -> np.ndarray:
        """``sum((z - mean)^T (z - mean))`` over the rows (a new array)."""
        centred_mean = self.sum_z / self.count
        return self.cross - self.count * np.outer(centred_mean, centred_mean)


def joint_scatter(
    x: View,
    y: View,
    rows: np.ndarray,
    shift: np.ndarray,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> JointScatter:
    """Accumulate the shifted scatter of ``[x, y]`` over ``rows`` in chunks of ``chunk_rows`` rows."""
    dx, dy = x.shape[1], y.shape[1]
    cross = np.zeros((dx + dy, dx + dy), dtype=np.float64)
    sum_z = np.zeros(dx + dy, dtype=np.float64)
    for chunk in iter_row_chunks(rows, chunk_rows):
        zx = _shifted(x.rows(chunk), shift[:dx])
        zy = _shifted(y.rows(chunk), shift[dx:])
        sum_z[:dx] += np.asarray(zx.sum(axis=0)).ravel()
        sum_z[dx:] += np.asarray(zy.sum(axis=0)).ravel()
        cross[:dx, :dx] += _gram(zx)
        cross[dx:, dx:] += _gram(zy)
        cross[dx:, :dx] += transposed_product(zy, zx)  # rows of y: contiguous whether y or x is sparse
    cross[:dx, dx:] = cross[dx:, :dx].T
    return JointScatter(len(rows), shift, sum_z, cross)


def _shifted(chunk, shift: np.ndarray):
    if scipy.sparse.issparse(chunk):
        return chunk  # sparse views are never shifted (their shift is zero)
    chunk -= shift
    return chunk


def _gram(z) -> np.ndarray:
    if scipy.sparse.issparse(z):
        return (z.T @ z).toarray()
    return z.T @ z  # numpy runs a symmetric rank-k update (syrk) for this pattern


def transposed_product(a, b) -> np.ndarray:
    """``a^T b`` as a dense array, for dense or sparse ``a`` and ``b``."""
    if scipy.sparse.issparse(a):
        product = a.T @ b
    elif scipy.sparse.issparse(b):
        product = (b.T @ a).T
    else:
        product = a.T @ b
    return product.toarray() if scipy.sparse.issparse(product) else np.asarray(product)
