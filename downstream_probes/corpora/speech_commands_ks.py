"""Keyword-spotting corpus in the Speech Commands v0.01 layout that s3prl's ``speech_commands`` expert reads.

Layout under the corpus root::

    speech_commands_v0.01/<word>/<speaker>_nohash_<n>.wav       1 s clips; 10 keywords + 20 auxiliary words
    speech_commands_v0.01/_background_noise_/<kind>_noise.wav    10 s synthetic noises (white, pink, brown, hum,
                                                                 fan, babble)
    speech_commands_v0.01/{validation,testing}_list.txt          "<word>/<file>.wav" of the train tree's files
                                                                 in the validation / testing partition
    speech_commands_test_set_v0.01/<class>/<speaker>_nohash_<n>.wav   test tree, one folder per class:
                                                                 the keywords, ``_unknown_``, ``_silence_``

What s3prl needs: ``datarc.speech_commands_root`` = speech_commands_v0.01/ and ``datarc.speech_commands_test_root``
= speech_commands_test_set_v0.01/. The expert splits the train tree into train/valid by hashing the part of each
file name before ``_nohash_`` (sha1 of the speaker id: < 10 % valid, 10-20 % dropped, the rest train), adds every
``_background_noise_`` file as a ``_silence_`` example (a random 1 s crop), and maps folders that are not among the
10 keywords to ``_unknown_``. The test tree's folder names ARE the labels, so it holds only the 12 class folders.
Our speaker ids are drawn so that the hash rule puts each speaker where we planned (train speakers hash >= 20 %,
valid speakers < 10 %, test speakers in 10-20 %, like the real test list): speakers are disjoint across splits.
As in the real tarball, the training tree also holds the test speakers' clips (under the spoken word's folder; the
hash rule drops them), and ``validation_list.txt``/``testing_list.txt`` list the training tree's files of the
validation and testing partitions (s3prl does not read them; ``mrsuperb prepare ks`` checks the layout).

``utterances`` counts the spoken clips (70/15/15 over train/valid/test); the test tree also gets about one
``_silence_`` clip per 11 spoken ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from downstream_probes.corpora import common, text
from downstream_probes.corpora.espeak import SAMPLE_RATE, Synthesis, SynthesisRequest, Voice
from downstream_probes.corpora.noises import make_noise
from downstream_probes.corpora.speakers import draw_voices, utterance_voice

TASK = "ks"
SPLITS = ("train", "valid", "test")
FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}
MINIMUM = {"train": len(text.SPEECH_COMMANDS_KEYWORDS) + 1, "valid": 1, "test": 1}
DEFAULT_UTTERANCES = 60
TRAIN_ROOT = "speech_commands_v0.01"
TEST_ROOT = "speech_commands_test_set_v0.01"
UNKNOWN, SILENCE = "_unknown_", "_silence_"
BACKGROUND_KINDS = ("white", "pink", "brown", "hum", "fan", "babble")
BACKGROUND_SECONDS = 10
CLIP_SAMPLES = SAMPLE_RATE
# s3prl's split rule (``speech_commands/expert.py``): percentage of sha1(speaker) over 2**27 - 1 buckets.
_MAX_PER_CLASS = 2**27 - 1
_BUCKETS = {"valid": (0.0, 10.0), "test": (10.0, 20.0), "train": (20.0, 100.0)}


def hash_percentage(speaker: str) -> float:
    """Where the Speech Commands split rule puts ``speaker`` (0-100; < 10 valid, < 20 test, else train)."""
    hashed = hashlib.sha1(speaker.encode("utf-8")).hexdigest()
    return (int(hashed, 16) % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)


def _speaker_for(split: str, rng: np.random.Generator, taken: set[str]) -> str:
    low, high = _BUCKETS[split]
    while True:
        speaker = "".join(f"{d:x}" for d in rng.integers(16, size=8))
        if low <= hash_percentage(speaker) < high and speaker not in taken:
            taken.add(speaker)
            return speaker


@dataclass(frozen=True)
class _Clip(common.PlannedUtterance):
    word: str  # the spoken word (folder name in the train tree)
    label: str  # the s3prl class: the keyword or _unknown_


def _words_for(count: int, rng: np.random.Generator) -> list[str]:
    """Cycle through the 10 keywords plus one auxiliary word per round, each round in a random order, so that a
    split of >= 11 clips has every class."""
    auxiliary = [text.SPEECH_COMMANDS_AUXILIARY[i] for i in rng.permutation(len(text.SPEECH_COMMANDS_AUXILIARY))]
    words: list[str] = []
    round_index = 0
    while len(words) < count:
        members = [*text.SPEECH_COMMANDS_KEYWORDS, auxiliary[round_index % len(auxiliary)]]
        words += [members[i] for i in rng.permutation(len(members))]
        round_index += 1
    return words[:count]


def _plan(ctx: common.BuildContext) -> tuple[list[_Clip], dict[str, Voice]]:
    sizes = common.allocate(ctx.utterances, FRACTIONS, MINIMUM)
    per_split = {split: common.speaker_count(sizes[split], per_speaker=6, least=2, most=40) for split in SPLITS}
    rng = ctx.rng("speakers")
    voices = iter(draw_voices(rng, [None] * sum(per_split.values())))
    taken: set[str] = set()
    clips: list[_Clip] = []
    voice_of: dict[str, Voice] = {}
    for split in SPLITS:
        words = iter(_words_for(sizes[split], ctx.rng("words", split)))
        for count in common.spread(sizes[split], per_split[split]):
            speaker = _speaker_for(split, rng, taken)
            voice_of[speaker] = next(voices)
            for _ in range(count):
                word = next(words)
                utt_rng = ctx.rng("clip", speaker, len(clips))
                label = word if word in text.SPEECH_COMMANDS_KEYWORDS else UNKNOWN
                request = SynthesisRequest(
                    word.upper(), utterance_voice(voice_of[speaker], utt_rng), int(utt_rng.integers(2**31))
                )
                clips.append(_Clip(split=split, speaker=speaker, request=request, word=word, label=label))
    return clips, voice_of


def one_second_clip(synthesis: Synthesis, rng: np.random.Generator) -> np.ndarray:
    """The spoken word placed at a random offset in exactly 1 s, at a random level over a faint noise floor."""
    start = synthesis.words[0].start
    end = synthesis.words[-1].end
    margin = int(0.03 * SAMPLE_RATE)
    speech = common.to_float(synthesis.audio[max(start - margin, 0) : end + margin])[:CLIP_SAMPLES]
    clip = np.zeros(CLIP_SAMPLES)
    offset = int(rng.integers(CLIP_SAMPLES - speech.shape[0] + 1))
    peak = float(np.max(np.abs(speech))) or 1.0
    clip[offset : offset + speech.shape[0]] = speech * 10 ** (rng.uniform(-12.0, -2.0) / 20) / peak
    clip += rng.standard_normal(CLIP_SAMPLES) * 10 ** (-66 / 20)
    return common.to_int16(clip)


def _background(ctx: common.BuildContext, babble_speech: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The ``_background_noise_`` files (float, RMS -20 dBFS)."""
    samples = BACKGROUND_SECONDS * SAMPLE_RATE
    return {
        kind: make_noise(kind, samples, ctx.rng("background", kind), babble_speech) * 0.1 for kind in BACKGROUND_KINDS
    }


def build(ctx: common.BuildContext) -> common.TaskResult:
    clips, voice_of = _plan(ctx)
    babble_rng = ctx.rng("babble")
    babble_voices = draw_voices(babble_rng, [None] * 4)
    babble_requests = [
        SynthesisRequest(
            " ".join(text.asr_sentence(babble_rng) for _ in range(3)), voice, int(babble_rng.integers(2**31))
        )
        for voice in babble_voices
    ]
    requests = [c.request for c in clips] + babble_requests
    summaries = {split: common.SplitSummary() for split in SPLITS}
    repetitions: dict[tuple[str, str], int] = {}
    partition_lists: dict[str, list[str]] = {"valid": [], "test": []}
    babble_speech: list[np.ndarray] = []
    for index, synthesis in enumerate(ctx.synthesize(requests, "ks: Speech Commands")):
        if index >= len(clips):
            babble_speech.append(synthesis.audio)
            continue
        clip = clips[index]
        number = repetitions.get((clip.speaker, clip.word), 0)
        repetitions[(clip.speaker, clip.word)] = number + 1
        name = f"{clip.speaker}_nohash_{number}.wav"
        audio = one_second_clip(synthesis, ctx.rng("place", index))
        common.write_audio(ctx.work / TRAIN_ROOT / clip.word / name, audio)
        if clip.split == "test":
            in_class = repetitions.get((clip.speaker, f"test/{clip.label}"), 0)
            repetitions[(clip.speaker, f"test/{clip.label}")] = in_class + 1
            common.write_audio(ctx.work / TEST_ROOT / clip.label / f"{clip.speaker}_nohash_{in_class}.wav", audio)
        if clip.split != "train":
            partition_lists[clip.split].append(f"{clip.word}/{name}")
        summaries[clip.split].add(clip.speaker, audio.shape[0])

    common.write_lines(ctx.work / TRAIN_ROOT / "validation_list.txt", sorted(partition_lists["valid"]))
    common.write_lines(ctx.work / TRAIN_ROOT / "testing_list.txt", sorted(partition_lists["test"]))
    backgrounds = _background(ctx, babble_speech)
    for kind, noise in backgrounds.items():
        common.write_audio(ctx.work / TRAIN_ROOT / "_background_noise_" / f"{kind}_noise.wav", common.to_int16(noise))
    silence_rng = ctx.rng("test-silence")
    silences = max(1, round(summaries["test"].utterances / 11))
    for number in range(silences):
        noise = backgrounds[BACKGROUND_KINDS[number % len(BACKGROUND_KINDS)]]
        offset = int(silence_rng.integers(noise.shape[0] - CLIP_SAMPLES))
        level = 10 ** (silence_rng.uniform(-20.0, 0.0) / 20)
        crop = common.to_int16(noise[offset : offset + CLIP_SAMPLES] * level)
        common.write_audio(ctx.work / TEST_ROOT / SILENCE / f"silence_nohash_{number}.wav", crop)

    labels = {split: sorted({c.label for c in clips if c.split == split}) for split in SPLITS}
    return common.TaskResult(
        splits=summaries,
        voices=voice_of,
        s3prl={"datarc": {"speech_commands_root": TRAIN_ROOT, "speech_commands_test_root": TEST_ROOT}},
        path_keys=["datarc.speech_commands_root", "datarc.speech_commands_test_root"],
        layout={"train_root": TRAIN_ROOT, "test_root": TEST_ROOT},
        extra={
            "keywords": list(text.SPEECH_COMMANDS_KEYWORDS),
            "auxiliary_words": list(text.SPEECH_COMMANDS_AUXILIARY),
            "labels_per_split": labels,
            "test_silence_clips": silences,
            "background_noises": [f"{kind}_noise.wav" for kind in BACKGROUND_KINDS],
        },
    )
