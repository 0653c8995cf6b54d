"""Checks on the data a downstream run reads, before it starts (audio files through :mod:`downstream_probes.audio`).

``check_corpus(task, downstream_expert)`` runs before the upstream is built (the runner calls it): for IC it reads
the three CSVs of the Fluent Speech Commands layout and checks their columns, that no row is cut short, that every
label of the dev and test CSVs occurs in training (s3prl's label table comes from the training CSV), and every
audio file's header.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from downstream_probes.audio import CorpusInputError, check_audio_header

# --------------------------------------------------------------------------------------------------------------
# corpora checked before a run starts

FLUENT_COLUMNS = ("path", "action", "object", "location")
FLUENT_SPLITS = ("train", "valid", "test")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise CorpusInputError(f"{path} not found; the IC corpus needs data/{{train,valid,test}}_data.csv")
    text = path.read_text(encoding="utf-8", errors="replace")
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise CorpusInputError(f"{path} is empty; re-create it")
    header = rows[0]
    missing = [column for column in FLUENT_COLUMNS if column not in header]
    if missing:
        raise CorpusInputError(
            f"{path} lacks the column(s) {', '.join(missing)} (it has {', '.join(header)}); the IC expert reads "
            f"{', '.join(FLUENT_COLUMNS)}"
        )
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            where = "the last line" if number == len(rows) else f"line {number}"
            raise CorpusInputError(
                f"{path} is truncated or malformed: {where} has {len(row)} of {len(header)} fields; the file was cut "
                "short (an interrupted copy?): copy it again"
            )
        records.append(dict(zip(header, row, strict=True)) | {"_line": str(number)})
    if not text.endswith("\n") and records:
        raise CorpusInputError(f"{path} is truncated: its last line has no line end; copy the file again")
    return header, records


def check_fluent_commands(root: str | os.PathLike[str]) -> None:
    """The Fluent Speech Commands layout s3prl's IC expert reads: CSV columns, rows, labels and audio files."""
    root = Path(root)
    tables = {split: _read_csv(root / "data" / f"{split}_data.csv")[1] for split in FLUENT_SPLITS}
    train_csv = root / "data" / "train_data.csv"
    seen = {slot: {row[slot] for row in tables["train"]} for slot in FLUENT_COLUMNS[1:]}
    for split in FLUENT_SPLITS[1:]:
        csv_path = root / "data" / f"{split}_data.csv"
        for row in tables[split]:
            for slot in FLUENT_COLUMNS[1:]:
                if row[slot] not in seen[slot]:
                    raise CorpusInputError(
                        f"{csv_path} line {row['_line']}: {slot} {row[slot]!r} never occurs in {train_csv}, so the "
                        "classifier has no output for it; add training examples of it or drop the row"
                    )
    for split in FLUENT_SPLITS:
        for row in tables[split]:
            audio = root / row["path"]
            if not audio.is_file():
                raise CorpusInputError(
                    f"{audio} (line {row['_line']} of {root / 'data' / f'{split}_data.csv'}) not found; fix the path "
                    "or drop the row"
                )
            check_audio_header(audio)


def check_corpus(task: str, downstream_expert: Mapping[str, Any]) -> None:
    """Check the corpus a run of ``task`` is configured to read, before anything is built (IC today; the other
    tasks' audio is checked file by file as s3prl reads it, through :func:`read_audio`)."""
    if task == "ic":
        check_fluent_commands(downstream_expert["datarc"]["file_path"])


# --------------------------------------------------------------------------------------------------------------
# prepared data, checked before s3prl starts (``run_downstream.py -m train``)

_RAW = {
    "asr": "the folder holding LibriSpeech/",
    "sf": "the folder holding SNIPS/",
    "ic": "the folder holding fluent_speech_commands_dataset/",
    "ks": "the folder holding speech_commands_v0.01/ and speech_commands_test_set_v0.01/",
    "se": "the folder holding VoiceBank-DEMAND's *_wav/ folders",
    "sd": "the folder holding Libri2Mix/",
}
ASR_SPLIT_KEYS = ("train", "dev-clean", "dev-other", "test-clean", "test-other")
KALDI_FILES = {"se": ("noisy/wav.scp", "clean/wav.scp"), "sd": ("wav.scp", "segments", "utt2spk", "reco2dur")}


class NotPreparedError(CorpusInputError, FileNotFoundError):
    """A run's data is not where its config says, or not prepared; the message names the path and the command."""


def _not_prepared(task: str, path: Path, what: str) -> NotPreparedError:
    return NotPreparedError(
        f"{path} {what}: prepare the {task} data with `mrsuperb prepare {task} --raw RAW --out PREPARED` "
        f"(RAW: {_RAW[task]}) and train with the -o it prints"
    )


def _exists(task: str, path: Any) -> Path:
    path = Path(str(path))
    if not path.exists():
        raise _not_prepared(task, path, "not found")
    return path


def _asr_splits(datarc: Mapping[str, Any]) -> list[str]:
    splits: list[str] = []
    for key in ASR_SPLIT_KEYS:
        value = datarc.get(key)
        splits += [value] if isinstance(value, str) else list(value or [])
    return list(dict.fromkeys(splits))


def check_prepared(task: str, downstream_expert: Mapping[str, Any]) -> None:
    """Check that the files s3prl's reader of ``task`` opens first exist (and, for ASR, that every split's
    ``len_for_bucket`` table has rows), before anything is built. Raises :class:`NotPreparedError`."""
    if task == "asr":
        datarc = downstream_expert["datarc"]
        _exists(task, datarc["libri_root"])
        bucket = _exists(task, datarc["bucket_file"])
        for split in _asr_splits(datarc):
            table = bucket / f"{split}.csv"
            if not table.is_file():
                raise _not_prepared(task, table, "not found")
            with table.open(encoding="utf-8", errors="replace") as stream:
                if sum(1 for line in stream if line.strip()) < 2:
                    raise _not_prepared(task, table, "has no rows")
    elif task == "sf":
        root = _exists(task, downstream_expert["corpus"]["path"])
        _exists(task, root / "all.iob.snips.txt")
        _exists(task, downstream_expert["text"]["slots_file"])
    elif task == "ic":
        _exists(task, Path(str(downstream_expert["datarc"]["file_path"])) / "data" / "train_data.csv")
    elif task == "ks":
        datarc = downstream_expert["datarc"]
        _exists(task, Path(str(datarc["speech_commands_root"])) / "_background_noise_")
        _exists(task, datarc["speech_commands_test_root"])
    elif task in KALDI_FILES:
        loaderrc = downstream_expert["loaderrc"]
        for key in ("train_dir", "dev_dir", "test_dir"):
            for name in KALDI_FILES[task]:
                _exists(task, Path(str(loaderrc[key])) / name)
