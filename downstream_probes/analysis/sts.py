"""Spoken semantic textual similarity (STS): do utterance representations rank sentence pairs as people do?

Each utterance is mean-pooled over time into one vector. In the spoken STS corpus (Merkx et al.) every side of a
sentence pair is read by 4 speakers; as in the reference (``mean=True``, the Merkx et al. set-up), a pair's model
similarity is the MEAN of the cosines of its 4 x 4 = 16 speaker combinations (side a by speaker i, side b by
speaker j), and the score is Spearman's rho between these and the human similarities across pairs.

:func:`read_spoken_sts` reads the corpus layout (``sts.jsonl`` rows with the published dataset's fields, see
:mod:`downstream_probes.corpora.spoken_sts`); :func:`spoken_sts_pair_score` scores one layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from upstream_mrhubert.errors import MrsuperbError

METADATA = "sts.jsonl"
FIELDS = ("task", "subtask", "pair_id", "speaker_id", "audio_a", "audio_b", "similarity")


class STSInputError(MrsuperbError, ValueError):
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


@dataclass(frozen=True)
class STSPair:
    """One sentence pair: its key (``task_subtask_pairid``, the reference's), the recordings of each side (one per
    speaker) and the human similarity."""

    key: str
    audio_a: tuple[Path, ...]
    audio_b: tuple[Path, ...]
    similarity: float


def read_spoken_sts(root: str | Path) -> list[STSPair]:
    """The pairs of a spoken STS corpus folder (``root/sts.jsonl``, audio paths relative to ``root``), in file order.

    Rows of one pair must agree on the similarity; every audio file must exist.
    """
    root = Path(root)
    path = root / METADATA
    if not path.is_file():
        raise STSInputError(
            f"{path} not found: a spoken STS corpus has an {METADATA} of rows with the fields {', '.join(FIELDS)} "
            "(build one with `mrsuperb corpus sts --out DIR`)"
        )
    sides: dict[str, tuple[list[Path], list[Path]]] = {}
    similarity: dict[str, float] = {}
    inside = root.resolve()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise STSInputError(f"{path}:{number}: not a JSON object ({error.msg})") from None
        if not isinstance(row, dict):
            raise STSInputError(f"{path}:{number}: a {type(row).__name__}, not a JSON object with {', '.join(FIELDS)}")
        missing = [field for field in FIELDS if field not in row]
        if missing:
            raise STSInputError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        key = f"{row['task']}_{row['subtask']}_{row['pair_id']}"
        score = row["similarity"]
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            raise STSInputError(f"{path}:{number}: similarity {score!r} is not a finite number")
        score = float(score)
        if similarity.setdefault(key, score) != score:
            raise STSInputError(f"{path}:{number}: pair {key} has similarity {score}, an earlier row {similarity[key]}")
        a, b = sides.setdefault(key, ([], []))
        for side, target in (("audio_a", a), ("audio_b", b)):
            target.append(_corpus_audio(root, inside, row[side], f"{path}:{number}: {side}"))
    if not sides:
        raise STSInputError(f"{path} holds no rows")
    return [STSPair(key, tuple(a), tuple(b), similarity[key]) for key, (a, b) in sides.items()]


def _corpus_audio(root: Path, inside: Path, name: object, where: str) -> Path:
    """``root / name`` when it is an existing file inside the corpus folder ``root`` (``inside``: resolved);
    an absolute name, ``..`` or a link leading out of the corpus is refused, so a corpus file never reads elsewhere."""
    if not isinstance(name, str) or not name:
        raise STSInputError(f"{where} {name!r} is not a file name relative to {root}")
    audio = root / name
    if Path(name).is_absolute() or not audio.resolve().is_relative_to(inside):
        raise STSInputError(f"{where} {name!r} leads outside the corpus folder {root}; name files inside it")
    if not audio.is_file():
        raise STSInputError(f"{where} {audio} not found")
    return audio


def spoken_sts_pair_score(vectors: Mapping[Path, np.ndarray], pairs: Sequence[STSPair]) -> float:
    """Spearman's rho between each pair's mean cosine over its speaker combinations and the human similarity.

    ``vectors`` maps each recording to its mean-pooled ``(dims,)`` vector (or its ``(frames, dims)`` states).
    """
    similarities, judgements = pair_similarities(vectors, pairs)
    return float(spearmanr(similarities, judgements).statistic)


def pair_similarities(vectors: Mapping[Path, np.ndarray], pairs: Sequence[STSPair]) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's mean cosine over its speaker combinations, and its human similarity (checked as
    :func:`spoken_sts_pair_score` needs them)."""
    if len(pairs) < 3:
        raise STSInputError(f"spoken STS needs at least 3 judged pairs, got {len(pairs)}")
    recordings = list(vectors)
    row = {path: index for index, path in enumerate(recordings)}
    pooled = np.stack([mean_pool(vectors[path]) for path in recordings])
    norms = np.linalg.norm(pooled, axis=1)
    if np.any(norms == 0.0):
        raise STSInputError(f"cosine similarity of a zero vector is undefined ({recordings[int(np.argmin(norms))]})")
    unit = pooled / norms[:, None]
    similarities = []
    for pair in pairs:
        missing = [str(p) for p in (*pair.audio_a, *pair.audio_b) if p not in row]
        if missing:
            raise STSInputError(f"no representation for {missing[0]} (pair {pair.key})")
        a = unit[[row[p] for p in pair.audio_a]]
        b = unit[[row[p] for p in pair.audio_b]]
        similarities.append(float((a @ b.T).mean()))  # the mean over every (speaker of a, speaker of b)
    judgements = np.asarray([pair.similarity for pair in pairs])
    if np.ptp(judgements) == 0.0:
        raise STSInputError("every human judgement is the same: Spearman's rho is undefined")
    return np.asarray(similarities), judgements
