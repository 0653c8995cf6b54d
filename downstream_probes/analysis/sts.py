"""Spoken semantic textual similarity (STS): do utterance representations rank sentence pairs as people do?

Each utterance is mean-pooled over time into one vector; a pair's model similarity is the cosine of its two
vectors; the score is Spearman's rho between model similarities and human judgements (Pasad et al. 2023, after
the spoken STS benchmark).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr


class STSInputError(ValueError):
    """Utterance representations or judgement pairs that the spoken STS score cannot use."""


def mean_pool(features: np.ndarray) -> np.ndarray:
    """Average a ``(frames, dims)`` representation over time (a ``(dims,)`` vector is returned as is)."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim == 1:
        return array
    if array.ndim != 2 or array.shape[0] == 0:
        raise STSInputError(f"an utterance representation must be (frames, dims) with frames > 0, got {array.shape}")
    return array.mean(axis=0)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        raise STSInputError("cosine similarity of a zero vector is undefined")
    return float(np.dot(a, b) / norm)


def spoken_sts_score(
    representations: Mapping[str, np.ndarray],
    pairs: Sequence[tuple[str, str, float]],
) -> float:
    """Spearman's rho between cosine similarities of mean-pooled utterances and human judgements.

    ``representations`` maps utterance ids to ``(frames, dims)`` (or already pooled ``(dims,)``) arrays;
    ``pairs`` lists ``(utterance a, utterance b, judgement)``.
    """
    if len(pairs) < 3:
        raise STSInputError(f"spoken STS needs at least 3 judged pairs, got {len(pairs)}")
    missing = sorted({u for a, b, _ in pairs for u in (a, b) if u not in representations})
    if missing:
        raise STSInputError(f"no representation for utterance(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    pooled = {utterance: mean_pool(representations[utterance]) for a, b, _ in pairs for utterance in (a, b)}
    similarities = [cosine_similarity(pooled[a], pooled[b]) for a, b, _ in pairs]
    judgements = np.asarray([float(score) for _, _, score in pairs])
    if np.ptp(judgements) == 0.0:
        raise STSInputError("every human judgement is the same: Spearman's rho is undefined")
    return float(spearmanr(similarities, judgements).statistic)
