"""IC: Fluent Speech Commands as its archive unpacks (``fluent_speech_commands_dataset/``).

s3prl reads the dataset where it lies, so ``prepare_fluent_commands(raw, out)`` only checks it, with the same
check a run makes before building the upstream (``data_checks.check_fluent_commands``: the three CSVs, their
labels, every audio header), and records the ``datarc.file_path`` override.
"""

from __future__ import annotations

from downstream_probes.audio import CorpusInputError
from downstream_probes.corpora.prepare import common
from downstream_probes.data_checks import FLUENT_SPLITS, check_fluent_commands

TASK = "ic"
ROOT = "fluent_speech_commands_dataset"
DOWNLOAD = (
    "Fluent Speech Commands (https://fluent.ai/fluent-speech-commands-a-dataset-for-spoken-language-understanding-"
    "research/; s3prl's backup: https://huggingface.co/datasets/leo19941227/fluent_speech_commands)"
)


def prepare_fluent_commands(raw: common.Folder, out: common.Folder, *, progress: bool = False) -> common.Prepared:
    """Check Fluent Speech Commands under ``raw`` and record its override in ``out/prepared.json``.

    Args:
        raw: the folder holding ``fluent_speech_commands_dataset/`` (or that folder itself).
        out: where ``prepared.json`` goes.
        progress: unused.

    Returns:
        The record: ``datarc.file_path``, rows per split.
    """
    raw_dir = common.folder(raw, "--raw")
    root = common.find_root(raw_dir, (ROOT,), "data/train_data.csv", DOWNLOAD)
    try:
        check_fluent_commands(root)
    except CorpusInputError as error:
        raise common.PrepareError(f"{error} (the dataset comes from {DOWNLOAD})") from None
    counts = {
        split: sum(1 for line in (root / "data" / f"{split}_data.csv").read_text().splitlines()[1:] if line.strip())
        for split in FLUENT_SPLITS
    }
    out_dir = common.out_folder(out, raw_dir)
    return common.write_record(common.Prepared(TASK, raw_dir, out_dir, {"datarc": {"file_path": str(root)}}, counts))
