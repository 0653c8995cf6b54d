"""SF: Audio SNIPS as SUPERB distributes it (the preprocessed 16 kHz WAV archive of s3prl's SUPERB docs).

s3prl reads the dataset where it lies, so ``prepare_snips(raw, out)`` only checks it: ``SNIPS/`` (or ``raw``
itself) holds ``all.iob.snips.txt``, ``slots.txt`` and ``train/``, ``valid/``, ``test/``, and each split folder has
files of the speakers SUPERB assigns to that split (the reader keeps only those: 8 / 4 / 4 voices). The record
holds the ``corpus.path`` and ``text.slots_file`` overrides.
"""

from __future__ import annotations

from downstream_probes.corpora.prepare import common
from downstream_probes.corpora.snips_sf import SPEAKERS

TASK = "sf"
ROOT = "SNIPS"
SPLITS = ("train", "valid", "test")
DOWNLOAD = (
    "SUPERB's preprocessed Audio SNIPS (https://drive.google.com/file/d/1oBRZd-PaCKz5iY3eZkXs5OB_ZZ4w7bbG, "
    "see s3prl's downstream/docs/superb.md, SF)"
)


def prepare_snips(raw: common.Folder, out: common.Folder, *, progress: bool = False) -> common.Prepared:
    """Check Audio SNIPS under ``raw`` and record its overrides in ``out/prepared.json``.

    Args:
        raw: the folder holding ``SNIPS/`` (or ``SNIPS/`` itself).
        out: where ``prepared.json`` goes.
        progress: unused (nothing long runs).

    Returns:
        The record: ``corpus.path`` and ``text.slots_file``, SUPERB-speaker files per split.
    """
    raw_dir = common.folder(raw, "--raw")
    root = common.find_root(raw_dir, (ROOT,), "all.iob.snips.txt", DOWNLOAD)
    common.require(root / "slots.txt", DOWNLOAD)
    counts = {}
    for split in SPLITS:
        split_dir = common.require(root / split, DOWNLOAD)
        names = [name for name, _ in SPEAKERS[split]]
        files = [wav for wav in split_dir.rglob("*.wav") if any(wav.stem.startswith(name) for name in names)]
        if not files:
            raise common.PrepareError(
                f"{split_dir} holds no WAV file of SUPERB's {split} speakers ({', '.join(names)}); it comes from "
                f"{DOWNLOAD}"
            )
        counts[split] = len(files)
    out_dir = common.out_folder(out, raw_dir)
    overrides = {"corpus": {"path": str(root)}, "text": {"slots_file": str(root / "slots.txt")}}
    return common.write_record(common.Prepared(TASK, raw_dir, out_dir, overrides, counts))
