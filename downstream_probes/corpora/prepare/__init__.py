"""Real SUPERB datasets, prepared for s3prl's readers: ``prepare(task, raw, out)`` (``mrsuperb prepare``).

One module per corpus, in the manner of lhotse's recipes (``prepare_<corpus>(raw, out, ...)``): ``librispeech``
(ASR: ``len_for_bucket/``), ``snips`` (SF: checked), ``fluent_commands`` (IC: checked), ``speech_commands`` (KS:
checked), ``voicebank`` (SE: 16 kHz audio and Kaldi lists), ``librimix`` (SD: Kaldi folders with RTTMs). Each reads
the dataset as its download unpacks, writes only into ``out`` (atomically, idempotently) and returns a
:class:`~downstream_probes.corpora.prepare.common.Prepared` whose ``overrides`` point s3prl at the result; the same
record is ``out/prepared.json`` (``load_prepared``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from downstream_probes.corpora.prepare import (
    fluent_commands,
    librimix,
    librispeech,
    snips,
    speech_commands,
    voicebank,
)
from downstream_probes.corpora.prepare.common import PREPARED_SCHEMA, RECORD, Folder, Prepared, PrepareError
from upstream_mrhubert.atomic_io import read_json_record
from upstream_mrhubert.output_folder import LOCK_FILE, folder_lock

PREPARERS: dict[str, Callable[..., Prepared]] = {
    librispeech.TASK: librispeech.prepare_librispeech,
    snips.TASK: snips.prepare_snips,
    fluent_commands.TASK: fluent_commands.prepare_fluent_commands,
    speech_commands.TASK: speech_commands.prepare_speech_commands,
    voicebank.TASK: voicebank.prepare_voicebank,
    librimix.TASK: librimix.prepare_librimix,
}

__all__ = ["PREPARERS", "RECORD", "PrepareError", "Prepared", "load_prepared", "prepare", "prepare_command"]


def prepare(task: str, raw: Folder, out: Folder, **options: Any) -> Prepared:
    """Prepare the real dataset of ``task`` (asr, sf, ic, ks, se, sd) found in ``raw`` into ``out``.

    Args:
        task: the SUPERB task.
        raw: the folder the official download was unpacked into.
        out: the folder for the prepared files and ``prepared.json``.
        options: the corpus module's own options (``rttm_dir`` for sd, ``progress``).

    Returns:
        The preparation record (its ``overrides`` are s3prl's ``downstream_expert`` entries).
    """
    try:
        preparer = PREPARERS[task]
    except KeyError:
        raise PrepareError(f"unknown task {task!r}; choose one of {', '.join(PREPARERS)}") from None
    if task != "sd" and options.get("rttm_dir") is not None:
        raise PrepareError(f"--rttm-dir is for sd (LibriMix) only, not {task}")
    options = {key: value for key, value in options.items() if key != "rttm_dir" or task == "sd"}
    # one preparation at a time per folder (its files are written atomically, so links are replaced, not followed)
    created = not Path(out).exists()
    try:
        with folder_lock(out, "--out", check_links=False):
            return preparer(raw, out, **options)
    except BaseException:
        if created:  # a preparation that failed leaves no folder behind (only its lock was written)
            (Path(out) / LOCK_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                Path(out).rmdir()
        raise


def load_prepared(out: Folder) -> dict[str, Any]:
    """The ``prepared.json`` record of a prepared folder."""
    path = Path(out) / RECORD
    if not path.is_file():
        raise PrepareError(f"{path} not found: {out} was not written by `mrsuperb prepare`")
    return read_json_record(path, PREPARED_SCHEMA, PrepareError, "write the folder again")


def prepare_command(task: str, raw: str = "RAW_DIR", out: str = "PREPARED_DIR") -> str:
    """The command line that prepares ``task`` (for error messages)."""
    return f"mrsuperb prepare {task} --raw {raw} --out {out}"
