"""Word embeddings from a text file (GloVe's ``word v1 v2 ...`` lines; a word2vec ``count dims`` header is skipped).

Used for CCA against GloVe or acoustically grounded word embeddings (AGWE): the user supplies the file. Lookup
follows the reference exactly: each line is stripped, then split on a single space (so a token holding U+00A0,
as real GloVe files have, stays one token), the word is matched case-sensitively, and a word listed twice keeps
its last vector. Only the words asked for are kept in memory, so large files are fine.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from upstream_mrhubert.errors import MrsuperbError


class EmbeddingFileError(MrsuperbError, ValueError):
    """The embedding file is missing, empty or malformed."""


def read_embeddings(path: str | Path, vocabulary: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """``{word: vector}`` for the words of ``vocabulary`` found in the file (all words when None).

    Returns float64 vectors of the file's dimension.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file {path} not found (a text file of 'word v1 v2 ...' lines)")
    wanted = set(vocabulary) if vocabulary is not None else None
    vectors: dict[str, np.ndarray] = {}
    dims = None
    with open(path, encoding="utf-8", errors="replace") as stream:
        for number, line in enumerate(stream, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            fields = stripped.split(" ")
            if number == 1 and len(fields) == 2 and all(field.isdigit() for field in fields):
                continue  # word2vec text header: "<count> <dims>"
            word, values = fields[0], fields[1:]
            if dims is None:
                dims = len(values)
                if dims == 0:
                    raise EmbeddingFileError(f"{path}:{number}: a word without a vector")
            elif len(values) != dims:
                raise EmbeddingFileError(f"{path}:{number}: {len(values)} values, the first line had {dims}")
            if wanted is None or word in wanted:
                try:
                    vectors[word] = np.asarray(values, dtype=np.float64)
                except ValueError:
                    raise EmbeddingFileError(f"{path}:{number}: non-numeric value in the vector of {word!r}") from None
                if not np.isfinite(vectors[word]).all():  # NaN, inf, or 1e999 read as inf
                    raise EmbeddingFileError(f"{path}:{number}: the vector of {word!r} holds NaN or infinite values")
    if dims is None:
        raise EmbeddingFileError(f"embedding file {path} is empty")
    return vectors
