"""ASR corpus in the LibriSpeech layout as its tarballs unpack; ``mrsuperb prepare asr`` writes the ``len_for_bucket/``
index that s3prl's ``asr`` expert (``downstream/asr/dataset.py``) needs beside it, as for the real LibriSpeech.

Layout under the corpus root::

    LibriSpeech/{train-clean-100,dev-clean,test-clean}/<speaker>/<chapter>/<speaker>-<chapter>-<NNNN>.flac
    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   "<utt-id> <UPPER CASE TEXT>" lines
    LibriSpeech/SPEAKERS.TXT                      "ID | SEX | SUBSET | MINUTES | NAME" (NAME: the espeak voice)
    char.dict                                     fairseq dictionary "<symbol> <count>": | A-Z ' (train counts)
    alignments/<split>/<speaker>/<chapter>/<utt-id>.TextGrid   MFA-style words/phones tiers

What s3prl needs: ``datarc.libri_root`` = LibriSpeech/, ``datarc.bucket_file`` = the prepared len_for_bucket/,
``datarc.dict_path`` = char.dict (or SUPERB's, which has the same symbols), and split lists ``train: [train-clean-100]``, ``dev-clean: [dev-clean]``,
``test-clean: [test-clean]``. The dataset upper-cases transcripts, spells them with ``|`` between words and finds
``<spk>-<chap>.trans.txt`` from the CSV path; a bucket with a single utterance left over is dropped, so every split
has at least two utterances. Speakers are disjoint across splits, as in LibriSpeech.

``utterances`` counts spoken utterances over all three splits (60/20/20).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from downstream_probes.corpora import common, text
from downstream_probes.corpora.alignments import textgrid_from_synthesis, write_textgrid
from downstream_probes.corpora.espeak import SynthesisRequest, Voice
from downstream_probes.corpora.speakers import draw_voices, utterance_voice

TASK = "asr"
SPLITS = ("train-clean-100", "dev-clean", "test-clean")
FRACTIONS = {"train-clean-100": 0.6, "dev-clean": 0.2, "test-clean": 0.2}
MINIMUM = {"train-clean-100": 2, "dev-clean": 2, "test-clean": 2}
DEFAULT_UTTERANCES = 40
LIBRI_ROOT = "LibriSpeech"
DICT_FILE = "char.dict"
ALIGNMENT_DIR = "alignments"
CHAR_SYMBOLS = ("|", *text.LETTERS)


@dataclass(frozen=True)
class _Utterance(common.PlannedUtterance):
    chapter: str
    utt_id: str
    text: str

    @property
    def folder(self) -> Path:
        return Path(self.split) / self.speaker / self.chapter


def _plan(ctx: common.BuildContext) -> tuple[list[_Utterance], dict[str, Voice]]:
    sizes = common.allocate(ctx.utterances, FRACTIONS, MINIMUM)
    speakers_per_split = {
        split: common.speaker_count(sizes[split], per_speaker=6, least=2 if split == SPLITS[0] else 1, most=24)
        for split in SPLITS
    }
    rng = ctx.rng("speakers")
    voices = draw_voices(rng, [None] * sum(speakers_per_split.values()))
    ids = rng.choice(range(19, 9000), size=len(voices), replace=False)
    chapter_ids = rng.choice(range(10000, 200000), size=2 * len(voices), replace=False)
    plan: list[_Utterance] = []
    voice_of: dict[str, Voice] = {}
    speaker_index = 0
    for split in SPLITS:
        counts = common.spread(sizes[split], speakers_per_split[split])
        for count in counts:
            speaker, voice = str(int(ids[speaker_index])), voices[speaker_index]
            voice_of[speaker] = voice
            chapters = [
                str(int(c)) for c in chapter_ids[2 * speaker_index : 2 * speaker_index + (2 if count > 12 else 1)]
            ]
            for chapter, chapter_count in zip(chapters, common.spread(count, len(chapters)), strict=False):
                for number in range(chapter_count):
                    utt_id = f"{speaker}-{chapter}-{number:04d}"
                    utt_rng = ctx.rng("utterance", utt_id)
                    sentence = text.asr_sentence(utt_rng)
                    request = SynthesisRequest(sentence, utterance_voice(voice, utt_rng), int(utt_rng.integers(2**31)))
                    plan.append(
                        _Utterance(
                            split=split, speaker=speaker, request=request, chapter=chapter, utt_id=utt_id, text=sentence
                        )
                    )
            speaker_index += 1
    return plan, voice_of


def _char_counts(transcripts: list[str]) -> Counter:
    counts: Counter = Counter(dict.fromkeys(CHAR_SYMBOLS, 0))
    for transcript in transcripts:
        counts.update(transcript.replace(" ", "|") + "|")
    return counts


def build(ctx: common.BuildContext) -> common.TaskResult:
    plan, voice_of = _plan(ctx)
    root = ctx.work
    summaries = {split: common.SplitSummary() for split in SPLITS}
    transcripts: dict[Path, list[str]] = defaultdict(list)
    speaker_seconds: dict[str, float] = defaultdict(float)
    for utterance, synthesis in zip(plan, ctx.synthesize([u.request for u in plan], "asr: LibriSpeech"), strict=False):
        finished = common.finish(synthesis, ctx.rng("finish", utterance.utt_id))
        relative = utterance.folder / f"{utterance.utt_id}.flac"
        common.write_audio(root / LIBRI_ROOT / relative, finished.audio, "FLAC")
        write_textgrid(
            root / ALIGNMENT_DIR / utterance.folder / f"{utterance.utt_id}.TextGrid", textgrid_from_synthesis(finished)
        )
        transcripts[utterance.folder].append(f"{utterance.utt_id} {utterance.text}")
        summaries[utterance.split].add(utterance.speaker, finished.num_samples)
        speaker_seconds[utterance.speaker] += finished.duration

    for folder, lines in transcripts.items():
        speaker, chapter = folder.parts[-2:]
        common.write_lines(root / LIBRI_ROOT / folder / f"{speaker}-{chapter}.trans.txt", sorted(lines))
    train_text = [u.text for u in plan if u.split == SPLITS[0]]
    counts = _char_counts(train_text)
    common.write_lines(root / DICT_FILE, [f"{s} {counts[s]}" for s in sorted(counts, key=lambda s: (-counts[s], s))])
    speaker_lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for split in SPLITS:
        for speaker in sorted(summaries[split].speakers, key=int):
            seconds = speaker_seconds[speaker]
            sex = "F" if voice_of[speaker].gender == "female" else "M"
            speaker_lines.append(
                f"{speaker:<5}| {sex} | {split:<17}| {seconds / 60:5.2f} | {voice_of[speaker].espeak_name}"
            )
    common.write_lines(root / LIBRI_ROOT / "SPEAKERS.TXT", speaker_lines)

    return common.TaskResult(
        splits=summaries,
        voices=voice_of,
        s3prl={
            "datarc": {
                "libri_root": LIBRI_ROOT,
                "dict_path": DICT_FILE,
                "train": [SPLITS[0]],
                "dev-clean": [SPLITS[1]],
                "test-clean": [SPLITS[2]],
            }
        },
        path_keys=["datarc.libri_root", "datarc.dict_path"],
        layout={"alignments": ALIGNMENT_DIR, "libri_root": LIBRI_ROOT},
        extra={"phone_set": "ARPAbet-39 (downstream_probes.corpora.phones.ARPABET_PHONES)"},
    )
