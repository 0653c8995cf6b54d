"""The SNIPS corpus reader s3prl's CTC expert imports (``s3prl.downstream.ctc.corpus.snips``), missing from PyPI.

The s3prl 0.4.18 wheel ships ``downstream/ctc`` without its ``corpus/`` folder, so SUPERB slot filling
(``-d ctc`` with ``corpus.name: snips``) fails at ``from .corpus.snips import SnipsDataset``. This is our
implementation of the interface ``ctc/data.py`` expects, reading the audio-SNIPS layout s3prl documents:

    <path>/all.iob.snips.txt   "<utterance id> BOS w1 w2 ... EOS\\tO tag1 tag2 ... intent" per line
    <path>/all-trans.txt       "<utterance id> transcript" per line (plain character mode)
    <path>/<split>/**/<utterance id>.wav

In the real Audio SNIPS every speaker has files in ``train/``, ``valid/`` and ``test/``; SUPERB's split is by
speaker, so, as s3prl's reader does, a split keeps only the files of the speakers listed under
``<first split folder>_speakers`` in the corpus config (``train_speakers``, ``valid_speakers``, ``test_speakers``
in ``snips.yaml``: 8 / 4 / 4 voices). A file belongs to a speaker when its utterance id starts with the speaker's
name (s3prl's rule). A config without the list is refused: reading every speaker would silently put training
voices into dev and test.

Items are (wav path, token ids) sorted longest transcript first; with ``bucket_size > 1`` an item is a bucket of
consecutive utterances (s3prl's train loader has batch size 1 and unpacks the bucket).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch.utils.data import Dataset

from upstream_mrhubert.errors import UsageError

LOGGER = logging.getLogger(__name__)


def read_transcripts(path: Path) -> dict[str, str]:
    """``<id> <text...>`` lines -> {id: text} (the text keeps its tab-separated IOB part, if any)."""
    if not path.is_file():
        raise FileNotFoundError(f"SNIPS transcript file not found: {path}")
    transcripts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        utterance_id, _, text = line.strip().partition(" ")
        transcripts[utterance_id] = text
    return transcripts


def split_speakers(split: list[str] | str, config: dict) -> list[str]:
    """The speakers SUPERB assigns to ``split`` (s3prl: ``<first folder>_speakers`` of the corpus config)."""
    first = split if isinstance(split, str) else split[0]
    key = f"{first}_speakers"
    speakers = config.get(key)
    if not speakers:
        raise UsageError(
            f"SNIPS: the corpus config has no {key!r} list; SUPERB's split is by speaker (every Audio SNIPS speaker "
            f"has files in every split folder). Add {key} to downstream_expert.corpus (recipes/superb/sf/config.yaml "
            "holds SUPERB's lists)"
        )
    return [str(name) for name in speakers]


def of_speakers(files: list[Path], speakers: list[str]) -> list[Path]:
    """The files whose utterance id starts with one of ``speakers`` (s3prl's prefix rule)."""
    return [wav for wav in files if any(wav.stem.startswith(name) for name in speakers)]


class SnipsDataset(Dataset):
    """Audio SNIPS for s3prl's CTC expert (slot filling when the tokenizer is a ``*-slot`` one)."""

    def __init__(self, split, tokenizer, bucket_size, path, num_workers=0, ascending=False, **kwargs):
        self.path = Path(path)
        self.bucket_size = int(bucket_size)
        slot_mode = "-slot" in tokenizer.token_type
        speakers = split_speakers(split, kwargs)
        transcripts = read_transcripts(self.path / ("all.iob.snips.txt" if slot_mode else "all-trans.txt"))

        files: list[Path] = []
        for split_name in split:
            split_dir = self.path / split_name
            found = sorted(split_dir.rglob("*.wav"))
            labelled = [wav for wav in found if wav.stem in transcripts]
            if len(found) > len(labelled):
                LOGGER.warning("%d wav files under %s have no transcript", len(found) - len(labelled), split_dir)
            kept = of_speakers(labelled, speakers)
            if not kept:
                raise FileNotFoundError(
                    f"no transcribed .wav files of the speakers {', '.join(speakers)} under {split_dir}"
                )
            LOGGER.info("SNIPS %s: %d files of %d speakers", split_dir, len(kept), len(speakers))
            files += kept

        tokens = [tokenizer.encode(transcripts[wav.stem]) for wav in files]
        ordered = sorted(zip(files, tokens, strict=False), key=lambda item: len(item[1]), reverse=not ascending)
        self.file_list = [wav for wav, _ in ordered]
        self.text = [token_ids for _, token_ids in ordered]

    def __getitem__(self, index):
        if self.bucket_size > 1:
            start = max(0, min(len(self.file_list) - self.bucket_size, index))
            end = start + self.bucket_size
            return list(zip(self.file_list[start:end], self.text[start:end], strict=False))
        return self.file_list[index], self.text[index]

    def __len__(self):
        return len(self.file_list)
