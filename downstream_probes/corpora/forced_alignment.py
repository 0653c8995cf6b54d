"""Forced alignment for ``mrsuperb corpus real``: recordings that ship with a transcript but no alignment, aligned
with the ``pocketsphinx`` wheel's en-us acoustic model and CMUdict (plus ``EXTRA_PRONUNCIATIONS``). A transcript with
a word the dictionary lacks, or one pocketsphinx cannot fit to its audio, is skipped and listed in the manifest.
Checked against MFA's own TextGrids in tests/test_corpora_real_speech.py (word boundaries: median 10-20 ms).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from downstream_probes.corpora.alignments import TextGrid
from downstream_probes.corpora.common import CorpusError
from downstream_probes.corpora.real_speech_sources import (
    MFA_DATA,
    SAMPLE_RATE,
    Archive,
    Recording,
    alignment_grid,
    read_audio,
    read_text,
)

# Words of the transcripts that the wheel's CMUdict lacks, added to the aligner's dictionary (CMUdict-style).
EXTRA_PRONUNCIATIONS = {
    "aligner": "AH L AY N ER",
    "'er": "ER",
    "poofy": "P UW F IY",
    "pooty": "P UW T IY",
    "puddy": "P AH D IY",
}
_CONFTEST_TRANSCRIPT = re.compile(r'^\s*"(mfa_\w+)": "([^"<>]*)",\s*$', re.MULTILINE)


class ForcedAligner:
    """pocketsphinx's en-us acoustic model and CMUdict (the wheel's), aligning a known transcript."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise CorpusError(
                "`mrsuperb corpus real` aligns recordings with pocketsphinx, which is not installed: "
                "pip install 'mrsuperb[real]' (or `make venv`)"
            ) from None

        self.decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        for word, phones in EXTRA_PRONUNCIATIONS.items():
            self.decoder.add_word(word, phones, False)
        self.label = f"forced-aligned (pocketsphinx {pocketsphinx_version()}, en-us)"

    def missing_words(self, transcript: str) -> list[str]:
        return [word for word in transcript.split() if self.decoder.lookup_word(word) is None]

    def align(self, audio: np.ndarray, transcript: str) -> TextGrid:
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder = self.decoder
        decoder.set_align_text(transcript)
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        decoder.set_alignment()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        frame = 1.0 / 100  # pocketsphinx's default frame rate
        words, phones = [], []
        for word in decoder.get_alignment():
            words.append((word.start * frame, (word.start + word.duration) * frame, word.name))
            phones += [(p.start * frame, (p.start + p.duration) * frame, p.name) for p in word]
        return alignment_grid(words, phones, len(audio) / SAMPLE_RATE)


def pocketsphinx_version() -> str:
    from importlib import metadata

    return metadata.version("pocketsphinx")


def forced_recordings(archive: Archive, root: str, aligner: ForcedAligner, skipped: list[dict]) -> Iterator[Recording]:
    transcripts = {"61-70968-0000": read_text(archive, f"{root}/{MFA_DATA}/lab/61-70968-0000.lab")}
    transcripts.update(dict(_CONFTEST_TRANSCRIPT.findall(read_text(archive, f"{root}/tests/conftest.py"))))
    members = set(archive.files)
    for name, raw in sorted(transcripts.items()):
        transcript = " ".join(raw.lower().split())
        member = f"{MFA_DATA}/wav/{name}.flac"
        if f"{root}/{member}" not in members:
            skipped.append({"source": "mfa", "member": member, "reason": "a transcript without a recording"})
            continue
        missing = aligner.missing_words(transcript)
        if missing:
            skipped.append({"source": "mfa", "member": member, "reason": f"words not in CMUdict: {missing}"})
            continue
        audio, rate = read_audio(archive, f"{root}/{member}")
        try:
            grid = aligner.align(audio, transcript)
        except RuntimeError as error:  # pocketsphinx: the transcript does not fit the audio
            skipped.append({"source": "mfa", "member": member, "reason": f"pocketsphinx: {error}"})
            continue
        yield Recording("mfa", member, "mfa-" + name.split("_")[0], audio, rate, grid, aligner.label, transcript)
