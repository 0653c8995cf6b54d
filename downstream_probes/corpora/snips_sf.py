"""Slot-filling corpus in the Audio SNIPS layout that s3prl's ``ctc`` expert reads with ``snips.yaml``
(``downstream/ctc/corpus/snips.py``; ``s3prl.dataio.corpus.snips.SNIPS`` parses the same layout).

Layout under the corpus root::

    SNIPS/{train,valid,test}/<Speaker>-snips-<split>-<N>.wav
    SNIPS/all.iob.snips.txt    "<utt-id> BOS <UPPER CASE WORDS> EOS\\tO <tag per word> <Intent>"
    SNIPS/slots.txt            slot names, most frequent first, "O" first; no trailing newline
    SNIPS/character.txt        s3prl's character vocabulary: space, A-Z, apostrophe

Tags are bare slot names (``artist artist``), not B-/I-: s3prl's ``CharacterTextSlotEncoder`` opens a slot where
the tag changes and reads ``slots.txt`` skipping its first line (``O``), adding ``B-<slot>``/``E-<slot>`` tokens.
Speakers carry the Amazon Polly names of Audio SNIPS. As in the real Audio SNIPS, every speaker has files in every
split folder, and SUPERB's split is by speaker (``snips.yaml``): the reader keeps, in ``train/``, only Ivy, Joanna,
Joey, Justin, Kendra, Kimberly, Matthew and Salli; in ``valid/`` Aditi, Amy, Geraint and Nicole; in ``test/``
Brian, Emma, Raveena and Russell (the lists of ``recipes/superb/sf/config.yaml``). Each folder's speakers are its own
split's alternating with the others' (own first), as many as it has files (at most 16): a folder of 16 or more
files holds all 16 voices, a smaller one at least one of its own. ``mrsuperb prepare sf`` checks the
layout, as for the real data.

``utterances`` counts all files (70/15/15 over the train/valid/test folders); each is a different sentence; the
sentences of the train folder's own speakers cycle through the intents.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from downstream_probes.corpora import common, text
from downstream_probes.corpora.espeak import SynthesisRequest, Voice
from downstream_probes.corpora.speakers import draw_voices, utterance_voice

TASK = "sf"
SPLITS = ("train", "valid", "test")
FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}
MINIMUM = {"train": 2, "valid": 1, "test": 1}
DEFAULT_UTTERANCES = 40
ROOT = "SNIPS"
# Audio SNIPS speakers (Amazon Polly voices) by SUPERB split, with their genders.
SPEAKERS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (
        ("Joanna", "female"),
        ("Matthew", "male"),
        ("Salli", "female"),
        ("Joey", "male"),
        ("Kendra", "female"),
        ("Justin", "male"),
        ("Kimberly", "female"),
        ("Ivy", "female"),
    ),
    "valid": (("Amy", "female"), ("Geraint", "male"), ("Aditi", "female"), ("Nicole", "female")),
    "test": (("Brian", "male"), ("Emma", "female"), ("Russell", "male"), ("Raveena", "female")),
}
GENDERS = {name: gender for split in SPLITS for name, gender in SPEAKERS[split]}
CHARACTER_VOCABULARY = (" ", *text.LETTERS)


@dataclass(frozen=True)
class _Utterance(common.PlannedUtterance):
    utt_id: str
    sentence: text.SlotSentence


def folder_speakers(split: str) -> list[str]:
    """The speakers of a split folder in the order they get files: the split's own, alternating with the others."""
    own = [name for name, _ in SPEAKERS[split]]
    others = [name for other in SPLITS if other != split for name, _ in SPEAKERS[other]]
    order = [name for pair in zip(own, others, strict=False) for name in pair]
    return order + [name for name in others if name not in order]


def _plan(ctx: common.BuildContext) -> tuple[list[_Utterance], dict[str, Voice]]:
    sizes = common.allocate(ctx.utterances, FRACTIONS, MINIMUM)
    chosen = {split: folder_speakers(split)[: min(sizes[split], len(GENDERS))] for split in SPLITS}
    used = [name for name in GENDERS if any(name in names for names in chosen.values())]
    voices = iter(draw_voices(ctx.rng("speakers"), [GENDERS[name] for name in used]))
    voice_of = {name: next(voices) for name in used}
    plan = []
    for split in SPLITS:
        own = {name for name, _ in SPEAKERS[split]}
        number = intents = 0
        for speaker, count in zip(chosen[split], common.spread(sizes[split], len(chosen[split])), strict=False):
            for _ in range(count):
                utt_id = f"{speaker}-snips-{split}-{number}"
                utt_rng = ctx.rng("utterance", utt_id)
                intent = None
                if split == "train" and speaker in own:
                    intent = text.SNIPS_INTENTS[intents % len(text.SNIPS_INTENTS)]
                    intents += 1
                sentence = text.snips_sentence(utt_rng, intent)
                voice = utterance_voice(voice_of[speaker], utt_rng)
                plan.append(
                    _Utterance(
                        split=split,
                        speaker=speaker,
                        request=SynthesisRequest(sentence.text, voice, int(utt_rng.integers(2**31))),
                        utt_id=utt_id,
                        sentence=sentence,
                    )
                )
                number += 1
    return plan, voice_of


def iob_line(utt_id: str, sentence: text.SlotSentence) -> str:
    """One ``all.iob.snips.txt`` line."""
    return f"{utt_id} BOS {sentence.text} EOS\tO {' '.join(sentence.tags)} {sentence.intent}"


def build(ctx: common.BuildContext) -> common.TaskResult:
    plan, voice_of = _plan(ctx)
    root = ctx.work / ROOT
    summaries = {split: common.SplitSummary() for split in SPLITS}
    for utterance, synthesis in zip(plan, ctx.synthesize([u.request for u in plan], "sf: SNIPS"), strict=False):
        finished = common.finish(synthesis, ctx.rng("finish", utterance.utt_id))
        common.write_audio(root / utterance.split / f"{utterance.utt_id}.wav", finished.audio)
        summaries[utterance.split].add(utterance.speaker, finished.num_samples)
    common.write_lines(root / "all.iob.snips.txt", sorted(iob_line(u.utt_id, u.sentence) for u in plan))

    counts = Counter(tag for u in plan for tag in u.sentence.tags if tag != "O")
    slots = ["O", *sorted(text.SNIPS_SLOTS, key=lambda slot: (-counts[slot], slot))]
    (root / "slots.txt").write_text("\n".join(slots), encoding="utf-8")
    common.write_lines(root / "character.txt", CHARACTER_VOCABULARY)

    return common.TaskResult(
        splits=summaries,
        voices=voice_of,
        s3prl={
            "corpus": {
                "name": "snips",
                "path": ROOT,
                "train": ["train"],
                "dev": ["valid"],
                "test": ["test"],
                **{f"{split}_speakers": [name for name, _ in SPEAKERS[split]] for split in SPLITS},
            },
            "text": {
                "mode": "character-slot",
                "vocab_file": f"{ROOT}/character.txt",
                "slots_file": f"{ROOT}/slots.txt",
            },
        },
        path_keys=["corpus.path", "text.vocab_file", "text.slots_file"],
        layout={"root": ROOT},
        extra={"intents": list(text.SNIPS_INTENTS), "slots": slots[1:]},
    )
