"""Mutual information between k-means clusters of representations and labels (Pasad et al. 2023).

Representations of a training sample (mean-pooled phone or word segments of a TRAINING split) are clustered with
scikit-learn's ``MiniBatchKMeans``; the held-out representations (the analysed split's sample) are assigned to the
nearest centroid, and the score is ``mutual_info_score(clusters, labels) / mutual_info_score(labels, labels)``, i.e.
``I(cluster; label) / H(label)``: 0 when the clusters say nothing about the labels, 1 when they determine them.

The reference's settings: phones 500 clusters, batch 1500; words 5000 clusters, batch 4000; ``max_iter=500``; and
the scikit-learn of its time tried ``n_init=3`` initialisations (today's default ``"auto"`` means 1 for k-means++),
so ``n_init=3`` is passed explicitly. Unlike the reference, the clustering is seeded (``random_state``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import mutual_info_score

from upstream_mrhubert.errors import MrsuperbError


class MutualInfoInputError(MrsuperbError, ValueError):
    """The representations or labels given to the MI analysis cannot be used."""


@dataclass(frozen=True)
class ClusteringSettings:
    """k-means settings of the reference for one kind of unit."""

    n_clusters: int
    batch_size: int
    max_iter: int = 500
    n_init: int = 3
    # the training sample: randint(low, high) segments per label (each capped by what the split has)
    train_per_label: tuple[int, int] = (0, 0)


# The reference's settings: 500 clusters for phones, 5000 for words; its training samples draw 3000..7000
# segments of each phone and 600..1200 of each of the 500 words.
PHONE_CLUSTERING = ClusteringSettings(n_clusters=500, batch_size=1500, train_per_label=(3000, 7000))
WORD_CLUSTERING = ClusteringSettings(n_clusters=5000, batch_size=4000, train_per_label=(600, 1200))


def clustering_for(unit: str) -> ClusteringSettings:
    """The reference's settings for ``"phone"`` or ``"word"``."""
    presets = {"phone": PHONE_CLUSTERING, "word": WORD_CLUSTERING}
    if unit not in presets:
        raise MutualInfoInputError(f"unknown unit {unit!r}; choose one of {', '.join(presets)}")
    return presets[unit]


def mutual_information_score(
    train_reps: np.ndarray,
    eval_reps: np.ndarray,
    eval_labels: Sequence,
    *,
    n_clusters: int,
    batch_size: int = 1500,
    max_iter: int = 500,
    n_init: int = 3,
    seed: int = 0,
) -> float:
    """``I(cluster; label) / H(label)`` on ``(eval_reps, eval_labels)``, clusters fitted on ``train_reps``.

    ``train_reps``/``eval_reps`` are ``(samples, dims)``; only the held-out labels are needed (the clustering is
    unsupervised).
    """
    settings = ClusteringSettings(n_clusters, batch_size, max_iter, n_init)
    return normalised_mutual_information(
        assign_clusters(settings, train_reps, eval_reps, eval_labels, seed), eval_labels
    )


def normalised_mutual_information(clusters: np.ndarray | Sequence, labels: np.ndarray | Sequence) -> float:
    """``I(cluster; label) / H(label)`` (scikit-learn's ``mutual_info_score`` twice, as the reference)."""
    label_array = np.asarray(labels)
    return float(mutual_info_score(clusters, label_array) / mutual_info_score(label_array, label_array))


def assign_clusters(
    settings: ClusteringSettings, train_reps: np.ndarray, eval_reps: np.ndarray, eval_labels: Sequence, seed: int = 0
) -> np.ndarray:
    """The nearest centroid of each of ``eval_reps`` under ``MiniBatchKMeans`` (``settings``) fitted on
    ``train_reps`` (inputs checked as :func:`mutual_information_score` needs them)."""
    n_clusters = settings.n_clusters
    train_reps = _as_matrix(train_reps, "train_reps")
    eval_reps = _as_matrix(eval_reps, "eval_reps")
    if train_reps.shape[1] != eval_reps.shape[1]:
        raise MutualInfoInputError(
            f"train and eval representations differ in dimensions: {train_reps.shape[1]} vs {eval_reps.shape[1]}"
        )
    if len(eval_labels) != eval_reps.shape[0]:
        raise MutualInfoInputError(f"{len(eval_labels)} labels for {eval_reps.shape[0]} eval representations")
    if not 2 <= n_clusters <= train_reps.shape[0]:
        raise MutualInfoInputError(
            f"n_clusters={n_clusters} needs between 2 and the {train_reps.shape[0]} training samples; "
            f"give more training samples or fewer clusters"
        )
    labels = np.asarray(eval_labels)
    label_entropy = mutual_info_score(labels, labels)
    if label_entropy == 0.0:
        raise MutualInfoInputError("every eval label is the same: their entropy is 0, the normalised MI undefined")
    # compute_labels=False: the centroids are the same; scikit-learn's default labels the whole training sample
    # after fitting (for inertia_, which the reference computes and never uses), a pass small next to the fit
    kmeans = MiniBatchKMeans(
        n_clusters=n_clusters,
        batch_size=settings.batch_size,
        max_iter=settings.max_iter,
        n_init=settings.n_init,
        random_state=seed,
        compute_labels=False,
    )
    return kmeans.fit(train_reps).predict(eval_reps)


def score_with(
    settings: ClusteringSettings, train_reps: np.ndarray, eval_reps: np.ndarray, eval_labels: Sequence, seed: int = 0
) -> float:
    """:func:`mutual_information_score` with one preset's clustering settings."""
    return normalised_mutual_information(
        assign_clusters(settings, train_reps, eval_reps, eval_labels, seed), eval_labels
    )


def _as_matrix(array, name: str) -> np.ndarray:
    matrix = np.asarray(array)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise MutualInfoInputError(f"{name} must be a non-empty (samples, dims) array, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise MutualInfoInputError(f"{name} contains NaN or infinite values")
    return matrix
