"""Intent-classification corpus in the Fluent Speech Commands layout that s3prl's ``fluent_commands`` expert reads.

Layout under the corpus root::

    fluent_speech_commands_dataset/wavs/speakers/<speakerId>/<uuid>.wav
    fluent_speech_commands_dataset/data/{train,valid,test}_data.csv
        ",path,speakerId,transcription,action,object,location" (pandas index; path relative to the dataset folder)

What s3prl needs: ``datarc.file_path`` = fluent_speech_commands_dataset/. The expert builds its label vocabulary
from the TRAIN csv (``Counter`` of each column), so every action, object and location value that valid/test use
must occur in train: the train split always starts with a set of intents covering every value. The 31 intents are
FSC's (``text.FLUENT_INTENTS``), values spelled as in FSC (``change language``, ``none``, ``Chinese``...).
Speakers are disjoint across splits, as in FSC.

``utterances`` counts all utterances (70/15/15 over train/valid/test).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from downstream_probes.corpora import common, text
from downstream_probes.corpora.espeak import SynthesisRequest, Voice
from downstream_probes.corpora.speakers import draw_voices, utterance_voice

TASK = "ic"
SPLITS = ("train", "valid", "test")
FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}
SLOTS = ("action", "object", "location")
DEFAULT_UTTERANCES = 48
ROOT = "fluent_speech_commands_dataset"
_ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def value_cover() -> list[text.FluentIntent]:
    """A small set of intents in which every action, object and location value occurs (greedy set cover)."""
    missing = {(slot, getattr(intent, slot)) for intent in text.FLUENT_INTENTS for slot in SLOTS}
    cover = []
    while missing:
        best = max(text.FLUENT_INTENTS, key=lambda i: len({(s, getattr(i, s)) for s in SLOTS} & missing))
        cover.append(best)
        missing -= {(slot, getattr(best, slot)) for slot in SLOTS}
    return cover


# training hears every action, object and location value
MINIMUM = {"train": len(value_cover()), "valid": 1, "test": 1}


@dataclass(frozen=True)
class _Utterance(common.PlannedUtterance):
    path: str
    transcription: str
    intent: text.FluentIntent


def _speaker_id(rng: np.random.Generator) -> str:
    return "".join(_ALPHANUMERIC[i] for i in rng.integers(len(_ALPHANUMERIC), size=16))


def _file_id(rng: np.random.Generator) -> str:
    """A uuid1-looking name like FSC's (``0a3129c0-4474-11e9-a9a5-5dbec3b8816a``), drawn from ``rng``."""
    digits = "".join(f"{d:x}" for d in rng.integers(16, size=28))
    return f"{digits[:8]}-{digits[8:12]}-11e9-{digits[12:16]}-{digits[16:]}"


def _intents_for(split: str, count: int, rng: np.random.Generator) -> list[text.FluentIntent]:
    intents = list(text.FLUENT_INTENTS)
    if split != "train":
        return [intents[i] for i in rng.integers(len(intents), size=count)]
    cover = value_cover()
    chosen = [cover[i] for i in rng.permutation(len(cover))]
    while len(chosen) < count:
        chosen += [intents[i] for i in rng.permutation(len(intents))]
    return chosen[:count]


def _plan(ctx: common.BuildContext) -> tuple[list[_Utterance], dict[str, Voice]]:
    sizes = common.allocate(ctx.utterances, FRACTIONS, MINIMUM)
    per_split = {
        split: common.speaker_count(
            sizes[split], per_speaker=8, least=2 if split == "train" else 1, most=30 if split == "train" else 10
        )
        for split in SPLITS
    }
    rng = ctx.rng("speakers")
    voices = iter(draw_voices(rng, [None] * sum(per_split.values())))
    plan: list[_Utterance] = []
    voice_of: dict[str, Voice] = {}
    for split in SPLITS:
        split_rng = ctx.rng("intents", split)
        intents = iter(_intents_for(split, sizes[split], split_rng))
        for count in common.spread(sizes[split], per_split[split]):
            speaker = _speaker_id(rng)
            voice_of[speaker] = next(voices)
            for _ in range(count):
                intent = next(intents)
                name = _file_id(rng)
                utt_rng = ctx.rng("utterance", speaker, name)
                phrasing = intent.phrasings[int(utt_rng.integers(len(intent.phrasings)))]
                request = SynthesisRequest(
                    phrasing.upper(), utterance_voice(voice_of[speaker], utt_rng), int(utt_rng.integers(2**31))
                )
                plan.append(
                    _Utterance(
                        split=split,
                        speaker=speaker,
                        request=request,
                        path=f"wavs/speakers/{speaker}/{name}.wav",
                        transcription=phrasing,
                        intent=intent,
                    )
                )
    return plan, voice_of


def _csv_text(rows: list[_Utterance]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", "path", "speakerId", "transcription", *SLOTS])
    for index, u in enumerate(rows):
        writer.writerow(
            [index, u.path, u.speaker, u.transcription, u.intent.action, u.intent.object, u.intent.location]
        )
    return buffer.getvalue()


def build(ctx: common.BuildContext) -> common.TaskResult:
    plan, voice_of = _plan(ctx)
    root = ctx.work / ROOT
    summaries = {split: common.SplitSummary() for split in SPLITS}
    for utterance, synthesis in zip(
        plan, ctx.synthesize([u.request for u in plan], "ic: Fluent Speech Commands"), strict=False
    ):
        finished = common.finish(synthesis, ctx.rng("finish", utterance.path))
        common.write_audio(root / utterance.path, finished.audio)
        summaries[utterance.split].add(utterance.speaker, finished.num_samples)
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        rows = [u for u in plan if u.split == split]
        (root / "data" / f"{split}_data.csv").write_text(_csv_text(rows), encoding="utf-8")
    return common.TaskResult(
        splits=summaries,
        voices=voice_of,
        s3prl={"datarc": {"file_path": ROOT}},
        path_keys=["datarc.file_path"],
        layout={"root": ROOT},
        extra={slot: sorted({getattr(i, slot) for i in text.FLUENT_INTENTS}) for slot in SLOTS},
    )
