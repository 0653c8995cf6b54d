"""Synthetic speech corpora with exact alignments for the six SUPERB tasks (espeak-ng via ``espeakng-loader``).

``build_corpus(task, out_dir, utterances=None, seed=0, force=False)`` writes a corpus in the on-disk layout that
s3prl's downstream expert for the task reads; see ``downstream_probes.corpora.api`` for the API and guarantees and
the task modules (``librispeech_asr``, ``snips_sf``, ``fluent_ic``, ``speech_commands_ks``, ``voicebank_se``,
``kaldi_sd``) for each layout. Alignments (``alignments``) are MFA-style TextGrids.
"""

from downstream_probes.corpora.api import (
    ALL,
    TASKS,
    build_corpus,
    default_utterances,
    load_manifest,
    minimum_utterances,
    s3prl_overrides,
)
from downstream_probes.corpora.common import CorpusError

__all__ = [
    "ALL",
    "TASKS",
    "CorpusError",
    "build_corpus",
    "default_utterances",
    "load_manifest",
    "minimum_utterances",
    "s3prl_overrides",
]
