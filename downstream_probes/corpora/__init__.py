"""Synthetic speech corpora with exact alignments for the six SUPERB tasks (espeak-ng via ``espeakng-loader``).

``build_corpus(task, out_dir, utterances=None, seed=0, force=False)`` writes a corpus in the raw layout of the task's
real dataset (what its download unpacks to); ``corpora.prepare`` (``mrsuperb prepare``) turns it, as it turns the
real dataset, into what s3prl's downstream expert reads. See ``downstream_probes.corpora.api`` for the API and
guarantees and the task modules (``librispeech_asr``, ``snips_sf``, ``fluent_ic``, ``speech_commands_ks``,
``voicebank_se``, ``kaldi_sd`` (Libri2Mix)) for each layout. Alignments (``alignments``) are MFA-style TextGrids.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use: synthesis worker processes import ``corpora.espeak`` and need none of the builders.
_EXPORTS = {
    "ALL": "api",
    "CORPORA": "api",
    "build_corpus": "api",
    "default_utterances": "api",
    "load_manifest": "api",
    "minimum_utterances": "api",
    "s3prl_overrides": "api",
    "CorpusError": "common",
    "build_real_speech": "real_speech",
}

__all__ = [  # noqa: RUF022 (the order of _EXPORTS: api first)
    "ALL",
    "CORPORA",
    "build_corpus",
    "default_utterances",
    "load_manifest",
    "minimum_utterances",
    "s3prl_overrides",
    "CorpusError",
    "build_real_speech",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
