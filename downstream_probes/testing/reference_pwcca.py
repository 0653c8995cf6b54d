"""The reference implementation's PWCCA (github.com/ankitapasad/layerwise-analysis, after Morcos et al. 2018), stated
in plain NumPy, for the differential tests (tests/test_analysis_pwcca.py) and the benchmark (benchmarks/pwcca.py).

Inputs are (samples, dims) arrays, laid out (dims, samples) inside as the reference does: covariance from
``np.cov`` of the stacked views, each block scaled by its largest entry, dimensions whose variance is under epsilon
dropped, epsilon added to the diagonals, inverse square roots through ``eigh`` of the pseudo-inverse, one SVD. The
score weighs each canonical correlation by how much of the smaller view it accounts for (QR of the canonical
directions plus the view's means). Written for clarity, not speed: it is the yardstick, not the implementation.
"""

from __future__ import annotations

import numpy as np


def reference_projections(
    x_train: np.ndarray, y_train: np.ndarray, eps_x: float, eps_y: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The trained projections ``Px[:n]``, ``Py[:n]`` (n: the smaller kept width) and the kept columns of each view.

    Args:
        x_train: [samples, dims_x]; y_train: [samples, dims_y].
    Returns:
        (proj_x [n, kept_x], proj_y [n, kept_y], keep_x [dims_x] bool, keep_y [dims_y] bool).
    """
    v1, v2 = np.asarray(x_train).T, np.asarray(y_train).T  # in their own dtype, as the reference (np.cov: float64)
    n1 = v1.shape[0]
    cov = np.cov(v1, v2)
    sxx, sxy, syy = cov[:n1, :n1], cov[:n1, n1:], cov[n1:, n1:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
    keep_x = np.abs(np.diag(sxx)) >= eps_x
    keep_y = np.abs(np.diag(syy)) >= eps_y
    sxx = sxx[keep_x][:, keep_x] + eps_x * np.eye(int(keep_x.sum()))
    syy = syy[keep_y][:, keep_y] + eps_y * np.eye(int(keep_y.sum()))
    sxy = sxy[keep_x][:, keep_y]

    def inverse_sqrt(matrix: np.ndarray) -> np.ndarray:
        values, vectors = np.linalg.eigh(np.linalg.pinv(matrix))
        return vectors @ np.diag(np.sqrt(values)) @ vectors.T

    root_x, root_y = inverse_sqrt(sxx), inverse_sqrt(syy)
    u, _, vh = np.linalg.svd(root_x @ (sxy @ root_y))  # the reference's (cca_core's) order of the products
    proj_x, proj_y = u.T @ root_x, vh @ root_y
    n = min(len(proj_x), len(proj_y))
    return proj_x[:n], proj_y[:n], keep_x, keep_y


def reference_score(
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    proj_x: np.ndarray,
    proj_y: np.ndarray,
    keep_x: np.ndarray,
    keep_y: np.ndarray,
) -> float:
    """PWCCA of trained projections on (samples, dims) views, weighted on the view with fewer kept dimensions."""
    e1, e2 = np.asarray(x_eval).T, np.asarray(y_eval).T  # in their own dtype, as the reference
    n = len(proj_x)
    m1, m2 = e1.mean(axis=1, keepdims=True), e2.mean(axis=1, keepdims=True)
    out1 = proj_x @ (e1[keep_x] - m1[keep_x])
    out2 = proj_y @ (e2[keep_y] - m2[keep_y])
    corr = np.sum(out1 * out2, axis=1) / np.sqrt(np.sum(out1**2, axis=1) * np.sum(out2**2, axis=1))

    def weighted(acts: np.ndarray, means: np.ndarray, directions: np.ndarray) -> float:
        q, _ = np.linalg.qr((directions + means).T)
        weights = np.sum(np.abs(q.T @ acts.T), axis=1)
        return float(np.sum(weights / weights.sum() * corr))

    if keep_x.sum() < keep_y.sum():
        return weighted(e1[keep_x][:n], m1[keep_x][:n], out1)
    return weighted(e2[keep_y][:n], m2[keep_y][:n], out2)


def reference_pwcca(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    eps_x: float,
    eps_y: float,
    *,
    fix_signs: bool = False,
) -> float:
    """Train on the first pair of views, score on the second. ``fix_signs`` applies our canonical sign convention
    (largest |entry| of each Py row positive); without it the signs are numpy's SVD's, as in the reference."""
    proj_x, proj_y, keep_x, keep_y = reference_projections(x_train, y_train, eps_x, eps_y)
    if fix_signs:
        rows = np.arange(len(proj_y))
        signs = np.sign(proj_y[rows, np.argmax(np.abs(proj_y), axis=1)])
        proj_x, proj_y = proj_x * signs[:, None], proj_y * signs[:, None]
    return reference_score(x_eval, y_eval, proj_x, proj_y, keep_x, keep_y)
