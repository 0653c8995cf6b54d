"""ASR: LibriSpeech as its openslr.org tarballs unpack, and s3prl's ``len_for_bucket/`` length index.

``prepare_librispeech(raw, out)`` finds ``LibriSpeech/`` in ``raw`` (or ``raw`` itself) and writes, for every
LibriSpeech split present (at least SUPERB's train-clean-100, dev-clean and test-clean), ``out/len_for_bucket/
<split>.csv`` as s3prl's ``preprocess/generate_len_for_bucket.py`` does: a pandas-style table
``,file_path,length,label`` with the row number first, ``file_path`` relative to ``LibriSpeech/``
(``<split>/<speaker>/<chapter>/<id>.flac``), ``length`` in samples (from the FLAC header), rows longest first and
``label`` empty (s3prl's ASR dataset reads the transcripts from the ``.trans.txt`` files). Rows of equal length
are in path order (s3prl's script leaves their order to numpy's sort). Every FLAC needs its line in the chapter's
``.trans.txt``; a missing transcript is named.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import soundfile
from tqdm import tqdm

from downstream_probes.corpora.prepare import common
from upstream_mrhubert.atomic_io import write_text_atomic

TASK = "asr"
ROOT = "LibriSpeech"
BUCKET_DIR = "len_for_bucket"
SUPERB_SPLITS = ("train-clean-100", "dev-clean", "test-clean")
OTHER_SPLITS = ("train-clean-360", "train-other-500", "dev-other", "test-other")
DOWNLOAD = "https://www.openslr.org/resources/12/{split}.tar.gz (LibriSpeech, unpacked into {raw})"


def _transcribed(split_dir: Path) -> set[str]:
    ids: set[str] = set()
    for trans in split_dir.rglob("*.trans.txt"):
        ids.update(line.split(" ", 1)[0] for line in trans.read_text(encoding="utf-8").splitlines() if line.strip())
    return ids


def bucket_table(libri_root: Path, split: str, progress: bool = False) -> str:
    """The ``len_for_bucket/<split>.csv`` text for one LibriSpeech split."""
    split_dir = libri_root / split
    download = DOWNLOAD.format(split=split, raw=libri_root.parent)
    flacs = common.require_nonempty(split_dir.rglob("*.flac"), split_dir, "*.flac files", download)
    transcribed = _transcribed(split_dir)
    rows = []
    for flac in tqdm(flacs, desc=f"asr: {split}", unit="file", disable=not progress):
        if flac.stem not in transcribed:
            raise common.PrepareError(
                f"{flac} has no line in {flac.parent / (flac.parent.parent.name + '-' + flac.parent.name)}.trans.txt;"
                f" the split is incomplete: unpack {download.split(' ')[0]} again"
            )
        try:
            frames = soundfile.info(str(flac)).frames
        except (soundfile.LibsndfileError, RuntimeError) as error:
            raise common.PrepareError(f"{flac} is not a readable FLAC file ({error}); unpack the split again") from None
        rows.append((flac.relative_to(libri_root).as_posix(), int(frames)))
    rows.sort(key=lambda row: (-row[1], row[0]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", "file_path", "length", "label"])
    writer.writerows([index, path, length, ""] for index, (path, length) in enumerate(rows))
    return buffer.getvalue()


def prepare_librispeech(raw: common.Folder, out: common.Folder, *, progress: bool = False) -> common.Prepared:
    """Write ``out/len_for_bucket/<split>.csv`` for each LibriSpeech split in ``raw``.

    Args:
        raw: the folder holding ``LibriSpeech/`` (or ``LibriSpeech/`` itself).
        out: where ``len_for_bucket/`` goes.
        progress: show a tqdm bar per split.

    Returns:
        The preparation record: ``datarc.libri_root`` and ``datarc.bucket_file`` overrides, files per split.
    """
    raw_dir = common.folder(raw, "--raw")
    libri_root = common.find_root(
        raw_dir, (ROOT,), SUPERB_SPLITS[0], DOWNLOAD.format(split=SUPERB_SPLITS[0], raw=raw_dir)
    )
    for split in SUPERB_SPLITS:
        common.require(libri_root / split, DOWNLOAD.format(split=split, raw=libri_root.parent))
    out_dir = common.out_folder(out, raw_dir)
    counts, written = {}, []
    for split in (*SUPERB_SPLITS, *OTHER_SPLITS):
        if not (libri_root / split).is_dir():
            continue
        table = bucket_table(libri_root, split, progress)
        target = out_dir / BUCKET_DIR / f"{split}.csv"
        write_text_atomic(target, table)
        counts[split] = table.count("\n") - 1
        written.append(str(target))
    overrides = {"datarc": {"libri_root": str(libri_root), "bucket_file": str(out_dir / BUCKET_DIR)}}
    return common.write_record(common.Prepared(TASK, raw_dir, out_dir, overrides, counts, written))
