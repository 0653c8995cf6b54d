"""Speaker-diarization corpus: two-speaker conversations with overlapping turns, as the Kaldi data directories that
s3prl's ``diarization`` expert reads (``downstream/diarization/dataset.py``, ``KaldiData``).

Layout under the corpus root::

    wav/{train,dev,test}/<recording>.wav          16-bit PCM, 16 kHz
    {train,dev,test}/wav.scp     "<recording> <ABSOLUTE path>"
    {train,dev,test}/segments    "<utt> <recording> <start s> <end s>"  one per speech turn
    {train,dev,test}/utt2spk     "<utt> <speaker>"      (utt ids start with the speaker id, so sorting agrees)
    {train,dev,test}/spk2utt     "<speaker> <utt> <utt> ..."
    {train,dev,test}/reco2dur    "<recording> <duration s>"
    {train,dev,test}/rttm        "SPEAKER <recording> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>"

What s3prl needs: ``loaderrc.{train,dev,test}_dir`` = train/, dev/, test/ and ``datarc.num_speakers: 2``. Labels
are built per frame from ``segments`` + ``utt2spk`` (frame shift = the upstream's rate), lengths from
``reco2dur``. Every recording has exactly two speakers. Each recording is 3-4 alternating turns (A B A [B]) whose
starts are drawn so that neighbouring turns overlap or leave a short pause; the first change of speaker always
overlaps. Segment boundaries are the exact first/last phoneme times of each turn and are written as exact decimals.
Speakers are disjoint across splits (SUPERB's LibriMix-based data is too). wav.scp paths are absolute (see
``voicebank_se``).

``utterances`` counts recordings (60/20/20 over train/dev/test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from downstream_probes.corpora import text
from downstream_probes.corpora.common import (
    BuildContext,
    SplitSummary,
    TaskResult,
    allocate,
    format_seconds,
    speaker_count,
    to_float,
    to_int16,
    write_audio,
    write_lines,
)
from downstream_probes.corpora.espeak import SAMPLE_RATE, Synthesis, SynthesisRequest, Voice
from downstream_probes.corpora.speakers import draw_voices, utterance_voice

TASK = "sd"
SPLITS = ("train", "dev", "test")
FRACTIONS = {"train": 0.6, "dev": 0.2, "test": 0.2}
MINIMUM = {"train": 2, "dev": 1, "test": 1}
DEFAULT_UTTERANCES = 12
NUM_SPEAKERS = 2
FIRST_GAP = (-0.8, -0.25)  # seconds between turns 1 and 2: always an overlap
LATER_GAP = (-0.6, 0.4)
EDGE = (0.2, 0.5)  # silence before the first and after the last turn


def minimum_utterances() -> int:
    return sum(MINIMUM.values())


@dataclass(frozen=True)
class _Turn:
    speaker: str
    request: SynthesisRequest


@dataclass(frozen=True)
class _Recording:
    split: str
    recording: str
    turns: tuple[_Turn, ...]


def _plan(ctx: BuildContext) -> tuple[list[_Recording], dict[str, Voice]]:
    sizes = allocate(ctx.utterances, FRACTIONS, MINIMUM)
    per_split = {split: speaker_count(2 * sizes[split], per_speaker=3, least=2, most=20) for split in SPLITS}
    per_split = {split: max(count, NUM_SPEAKERS) for split, count in per_split.items()}
    rng = ctx.rng("speakers")
    voices = iter(draw_voices(rng, [None] * sum(per_split.values())))
    ids = iter(int(i) for i in rng.choice(range(1000, 10000), size=sum(per_split.values()), replace=False))
    voice_of: dict[str, Voice] = {}
    recordings = []
    for split in SPLITS:
        speakers = [str(next(ids)) for _ in range(per_split[split])]
        voice_of.update({speaker: next(voices) for speaker in speakers})
        pair_rng = ctx.rng("pairs", split)
        for number in range(sizes[split]):
            # walk through the speakers so that everyone talks, pairing each with a random partner
            first = speakers[number % len(speakers)]
            second = [s for s in speakers if s != first][int(pair_rng.integers(len(speakers) - 1))]
            recording = f"{split}_mix{number:04d}"
            turn_rng = ctx.rng("turns", recording)
            count = 3 + int(turn_rng.integers(2))
            turns = []
            for index in range(count):
                speaker = (first, second)[index % 2]
                sentence = text.asr_sentence(turn_rng)
                voice = utterance_voice(voice_of[speaker], turn_rng)
                turns.append(_Turn(speaker, SynthesisRequest(sentence, voice, int(turn_rng.integers(2**31)))))
            recordings.append(_Recording(split, recording, tuple(turns)))
    return recordings, voice_of


@dataclass(frozen=True)
class Segment:
    speaker: str
    start: int  # samples
    end: int


def mix_turns(
    turns: list[Synthesis], speakers: list[str], rng: np.random.Generator
) -> tuple[np.ndarray, list[Segment]]:
    """Place the speech of each turn (trimmed to its first..last phoneme) on one timeline; return int16 audio and
    the turn segments."""
    pieces, starts = [], []
    cursor = int(rng.uniform(*EDGE) * SAMPLE_RATE)
    for index, synthesis in enumerate(turns):
        speech = to_float(synthesis.audio[synthesis.words[0].start : synthesis.words[-1].end])
        speech *= 10 ** (rng.uniform(-3.0, 3.0) / 20) / (float(np.max(np.abs(speech))) or 1.0)
        if index > 0:
            gap = rng.uniform(*(FIRST_GAP if index == 1 else LATER_GAP))
            previous_length = pieces[-1].shape[0]
            # an overlap never swallows more than half of either turn
            gap_samples = max(int(gap * SAMPLE_RATE), -min(previous_length, speech.shape[0]) // 2)
            cursor = starts[-1] + previous_length + gap_samples
            if index >= 2:  # a speaker never overlaps their own previous turn
                cursor = max(cursor, starts[-2] + pieces[-2].shape[0])
        starts.append(cursor)
        pieces.append(speech)
    total = max(s + p.shape[0] for s, p in zip(starts, pieces, strict=False)) + int(rng.uniform(*EDGE) * SAMPLE_RATE)
    mixture = np.zeros(total)
    for start, piece in zip(starts, pieces, strict=False):
        mixture[start : start + piece.shape[0]] += piece
    mixture *= 10 ** (-3.0 / 20) / (float(np.max(np.abs(mixture))) or 1.0)
    mixture += rng.standard_normal(total) * 10 ** (-66 / 20)
    segments = [
        Segment(speaker, start, start + piece.shape[0])
        for speaker, start, piece in zip(speakers, starts, pieces, strict=False)
    ]
    return to_int16(mixture), segments


def overlap_samples(segments: list[Segment], total: int) -> int:
    activity = np.zeros(total, dtype=np.int32)
    for segment in segments:
        activity[segment.start : segment.end] += 1
    return int(np.count_nonzero(activity >= 2))


def build(ctx: BuildContext) -> TaskResult:
    recordings, voice_of = _plan(ctx)
    requests = [turn.request for rec in recordings for turn in rec.turns]
    results = ctx.synthesize(requests, "sd: Kaldi mixtures")
    summaries = {split: SplitSummary() for split in SPLITS}
    files = {split: {name: [] for name in ("wav.scp", "segments", "utt2spk", "reco2dur", "rttm")} for split in SPLITS}
    speaker_utts: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    overlap = dict.fromkeys(SPLITS, 0)
    for rec in recordings:
        turns = [next(results) for _ in rec.turns]
        audio, segments = mix_turns(turns, [t.speaker for t in rec.turns], ctx.rng("mix", rec.recording))
        relative = f"wav/{rec.split}/{rec.recording}.wav"
        write_audio(ctx.work / relative, audio)
        lines = files[rec.split]
        lines["wav.scp"].append(f"{rec.recording} {ctx.final_path(relative)}")
        lines["reco2dur"].append(f"{rec.recording} {format_seconds(audio.shape[0])}")
        for segment in segments:
            utt = f"{segment.speaker}_{rec.recording}_{segment.start:08d}_{segment.end:08d}"
            start, end = format_seconds(segment.start), format_seconds(segment.end)
            lines["segments"].append(f"{utt} {rec.recording} {start} {end}")
            lines["utt2spk"].append(f"{utt} {segment.speaker}")
            lines["rttm"].append(
                f"SPEAKER {rec.recording} 1 {start} {format_seconds(segment.end - segment.start)} <NA> <NA> "
                f"{segment.speaker} <NA> <NA>"
            )
            speaker_utts[rec.split].setdefault(segment.speaker, []).append(utt)
            summaries[rec.split].speakers.add(segment.speaker)
        summaries[rec.split].utterances += 1
        summaries[rec.split].seconds += audio.shape[0] / SAMPLE_RATE
        overlap[rec.split] += overlap_samples(segments, audio.shape[0])

    for split in SPLITS:
        folder = ctx.work / split
        for name, lines in files[split].items():
            write_lines(folder / name, lines if name == "rttm" else sorted(lines))
        write_lines(
            folder / "spk2utt",
            [f"{speaker} {' '.join(sorted(utts))}" for speaker, utts in sorted(speaker_utts[split].items())],
        )
    return TaskResult(
        splits=summaries,
        voices=voice_of,
        s3prl={
            "datarc": {"num_speakers": NUM_SPEAKERS, "rate": SAMPLE_RATE},
            "loaderrc": {f"{split}_dir": split for split in SPLITS},
        },
        path_keys=[f"loaderrc.{split}_dir" for split in SPLITS],
        layout={"audio": "wav", "wav_scp_paths": "absolute"},
        extra={
            "overlap_ratio": {
                split: round(overlap[split] / SAMPLE_RATE / summaries[split].seconds, 4)
                if summaries[split].seconds
                else 0.0
                for split in SPLITS
            },
            "recording_speakers": NUM_SPEAKERS,
        },
    )
