"""Cross-validation splits and the epsilon schedule of the PWCCA protocol (Pasad et al. 2023), seeded.

The reference draws these with Python's and NumPy's global generators and never seeds them; here every draw
comes from one ``numpy.random.Generator`` so that a seed reproduces a score exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The reference's regularisation values: every pair from the three small ones (in shuffled order) is tried
# before any pair from the four larger ones (also shuffled); the first few pairs whose fit succeeds are kept.
SMALL_EPSILONS: tuple[float, ...] = (1e-10, 1e-11, 1e-9)
LARGE_EPSILONS: tuple[float, ...] = (1e-8, 1e-7, 1e-6, 1e-5)


def epsilon_schedule(rng: np.random.Generator) -> list[tuple[float, float]]:
    """All (epsilon_x, epsilon_y) pairs in the order the protocol tries them."""
    schedule: list[tuple[float, float]] = []
    for values in (SMALL_EPSILONS, LARGE_EPSILONS):
        pairs = [(ex, ey) for ex in values for ey in values]
        schedule.extend(pairs[i] for i in rng.permutation(len(pairs)))
    return schedule


def stratified_splits(
    n_samples: int,
    labels: Sequence | np.ndarray | None,
    n_splits: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Split ``range(n_samples)`` into ``n_splits`` disjoint parts, label by label.

    Each label's samples are shuffled and dealt out in equal runs to every part; the few left over
    (fewer than ``n_splits``) go to parts drawn at random. Without labels all samples form one group.
    Returns sorted index arrays.
    """
    if labels is None:
        groups = [np.arange(n_samples)]
    else:
        codes = group_codes(labels)
        order = np.argsort(codes, kind="stable")
        boundaries = np.flatnonzero(np.diff(codes[order])) + 1
        groups = np.split(order, boundaries)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_splits)]
    for group in groups:
        shuffled = group[rng.permutation(len(group))]
        run = len(shuffled) // n_splits
        for part in range(n_splits):
            parts[part].append(shuffled[part * run : (part + 1) * run])
        for leftover in shuffled[n_splits * run :]:
            parts[int(rng.integers(n_splits))].append(np.array([leftover]))
    return [np.sort(np.concatenate(chunks)) if chunks else np.empty(0, dtype=np.int64) for chunks in parts]


def group_codes(labels: Sequence | np.ndarray) -> np.ndarray:
    """Integer code per sample, numbering labels in order of first appearance."""
    codes: dict = {}
    return np.fromiter((codes.setdefault(_hashable(label), len(codes)) for label in labels), dtype=np.int64)


def _hashable(label):
    return label.item() if isinstance(label, np.generic) else label
