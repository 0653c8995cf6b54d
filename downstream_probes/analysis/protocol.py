"""The names and defaults of the layer-wise analysis protocol, importable without NumPy (the CLI's parsers use them).

Every module of the analysis takes its property names and defaults from here.
"""

from __future__ import annotations

CCA_PROPERTIES: tuple[str, ...] = ("mel", "phone", "word", "glove", "agwe")
MI_PROPERTIES: tuple[str, ...] = ("mi_phone", "mi_word")
PROPERTIES: tuple[str, ...] = (*CCA_PROPERTIES, *MI_PROPERTIES, "sts")
EMBEDDING_PROPERTIES: tuple[str, ...] = ("glove", "agwe")

# "20ms": s3prl's hidden_states (what the featurizer weights); "native": each state at its own rate
STATE_RATES: tuple[str, ...] = ("20ms", "native")
DEFAULT_STATE_RATE = "20ms"

# Split prefixes (see segments.resolve_splits): every train-* split is LibriSpeech 960 h, the reference's word.lst
# ranking; train-clean is train-clean-100 + train-clean-360, the reference's MI training data.
DEFAULT_WORD_COUNTS_SPLIT = "train"
DEFAULT_MI_TRAIN_SPLIT = "train-clean"
DEFAULT_SPLIT = "dev-clean"

# Independent draws of every sample (Pasad et al. 2023 average 3 sample sets x 3 test splits), and the CCA chance
# level's permuted runs per layer.
DEFAULT_SAMPLE_SETS = 3
DEFAULT_CHANCE_PERMUTATIONS = 3
