"""Speaker-diarization corpus in the layout of SUPERB's Libri2Mix (github.com/s3prl/LibriMix,
``generate_librimix_sd.sh``: 16 kHz, ``max`` mode, ``mix_both``): two-speaker mixtures with overlapping turns,
their sources and metadata, and LibriMix's speech-activity RTTMs of the sources. ``mrsuperb prepare sd`` turns it
into the Kaldi data folders s3prl's ``diarization`` expert reads, as for the real Libri2Mix.

Layout under the corpus root::

    Libri2Mix/wav16k/max/{train-100,dev,test}/{mix_both,s1,s2,noise}/<mixture>.wav       16-bit PCM, 16 kHz
    Libri2Mix/wav16k/max/metadata/mixture_{train-100,dev,test}_mix_both.csv
        "mixture_ID,mixture_path,source_1_path,source_2_path,noise_path,length" (absolute paths, length in samples)
    metadata/LibriSpeech/{train_clean_100,dev_clean,test_clean}.rttm
        "SPEAKER <chapter>-<utt> 1 <start> <duration> <NA> <NA> <speaker> <NA> <NA>" per speech turn of a source

A mixture is named ``<spk1>-<chapter1>-<utt1>_<spk2>-<chapter2>-<utt2>`` (LibriMix's rule), each source's turns are
listed under ``<chapter>-<utt>`` (chapters are unique per source), and the sources start at 0 in the mixture, so the
source times are the mixture times. Each recording is 3-4 alternating turns (A B A [B]) whose starts are drawn so
that neighbouring turns overlap or leave a short pause; the first change of speaker always overlaps. Turn boundaries
are the exact first/last phoneme times, written with 3 decimals as LibriMix's RTTMs (so a boundary is within 0.5 ms).
``noise`` is the faint noise floor that ``mix_both`` adds. Speakers are disjoint across splits (as in Libri2Mix).

``utterances`` counts recordings (60/20/20 over train/dev/test).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from downstream_probes.corpora import common, text
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
LIBRI2MIX = "Libri2Mix"
MIX_FOLDER = "wav16k/max"
MIX_SETS = {"train": "train-100", "dev": "dev", "test": "test"}
CSV_COLUMNS = ("mixture_ID", "mixture_path", "source_1_path", "source_2_path", "noise_path", "length")
RTTM_DIR = Path("metadata") / "LibriSpeech"
RTTM_FILES = {"train": "train_clean_100.rttm", "dev": "dev_clean.rttm", "test": "test_clean.rttm"}


@dataclass(frozen=True)
class _Turn:
    speaker: str
    request: SynthesisRequest


@dataclass(frozen=True)
class _Recording:
    split: str
    recording: str
    turns: tuple[_Turn, ...]


def _plan(ctx: common.BuildContext) -> tuple[list[_Recording], dict[str, Voice]]:
    sizes = common.allocate(ctx.utterances, FRACTIONS, MINIMUM)
    per_split = {split: common.speaker_count(2 * sizes[split], per_speaker=3, least=2, most=20) for split in SPLITS}
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
) -> tuple[np.ndarray, list[Segment], dict[str, np.ndarray], np.ndarray]:
    """Place the speech of each turn (trimmed to its first..last phoneme) on one timeline; return the int16 mixture,
    the turn segments, each speaker's int16 source on the same timeline and the int16 noise floor."""
    pieces: list[np.ndarray] = []
    starts: list[int] = []
    cursor = int(rng.uniform(*EDGE) * SAMPLE_RATE)
    for index, synthesis in enumerate(turns):
        speech = common.to_float(synthesis.audio[synthesis.words[0].start : synthesis.words[-1].end])
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
    sources = {speaker: np.zeros(total) for speaker in dict.fromkeys(speakers)}
    for speaker, start, piece in zip(speakers, starts, pieces, strict=False):
        sources[speaker][start : start + piece.shape[0]] += piece
    mixture = sum(sources.values())
    gain = 10 ** (-3.0 / 20) / (float(np.max(np.abs(mixture))) or 1.0)
    noise = rng.standard_normal(total) * 10 ** (-66 / 20)
    segments = [
        Segment(speaker, start, start + piece.shape[0])
        for speaker, start, piece in zip(speakers, starts, pieces, strict=False)
    ]
    scaled = {speaker: common.to_int16(source * gain) for speaker, source in sources.items()}
    return common.to_int16(mixture * gain + noise), segments, scaled, common.to_int16(noise)


def overlap_samples(segments: list[Segment], total: int) -> int:
    activity = np.zeros(total, dtype=np.int32)
    for segment in segments:
        activity[segment.start : segment.end] += 1
    return int(np.count_nonzero(activity >= 2))


def _seconds(samples: int) -> str:
    """LibriMix's RTTM precision: seconds with 3 decimals."""
    return f"{samples / SAMPLE_RATE:.3f}"


def build(ctx: common.BuildContext) -> common.TaskResult:
    recordings, voice_of = _plan(ctx)
    requests = [turn.request for rec in recordings for turn in rec.turns]
    results = ctx.synthesize(requests, "sd: Libri2Mix")
    summaries = {split: common.SplitSummary() for split in SPLITS}
    metadata: dict[str, list[str]] = {split: [",".join(CSV_COLUMNS)] for split in SPLITS}
    rttm: dict[str, list[str]] = {split: [] for split in SPLITS}
    overlap = dict.fromkeys(SPLITS, 0)
    mix_root = ctx.work / LIBRI2MIX / MIX_FOLDER
    for number, rec in enumerate(recordings):
        turns = [next(results) for _ in rec.turns]
        audio, segments, sources, noise = mix_turns(
            turns, [t.speaker for t in rec.turns], ctx.rng("mix", rec.recording)
        )
        speakers = list(sources)
        source_ids = [f"{speaker}-{10000 + 2 * number + index}-0000" for index, speaker in enumerate(speakers)]
        mix_id = "_".join(source_ids)
        folder = MIX_SETS[rec.split]
        paths = {
            kind: f"{LIBRI2MIX}/{MIX_FOLDER}/{folder}/{kind}/{mix_id}.wav" for kind in ("mix_both", "s1", "s2", "noise")
        }
        common.write_audio(ctx.work / paths["mix_both"], audio)
        for kind, speaker in zip(("s1", "s2"), speakers, strict=True):
            common.write_audio(ctx.work / paths[kind], sources[speaker])
        common.write_audio(ctx.work / paths["noise"], noise)
        metadata[rec.split].append(
            ",".join(
                [mix_id, *(ctx.final_path(paths[k]) for k in ("mix_both", "s1", "s2", "noise")), str(audio.shape[0])]
            )
        )
        for speaker, source_id in zip(speakers, source_ids, strict=True):
            reco = source_id.partition("-")[2]
            for segment in (s for s in segments if s.speaker == speaker):
                rttm[rec.split].append(
                    f"SPEAKER {reco} 1 {_seconds(segment.start)} {_seconds(segment.end - segment.start)} "
                    f"<NA> <NA> {speaker} <NA> <NA>"
                )
        summaries[rec.split].speakers.update(speakers)
        summaries[rec.split].utterances += 1
        summaries[rec.split].seconds += audio.shape[0] / SAMPLE_RATE
        overlap[rec.split] += overlap_samples(segments, audio.shape[0])

    for split in SPLITS:
        common.write_lines(mix_root / "metadata" / f"mixture_{MIX_SETS[split]}_mix_both.csv", metadata[split])
        common.write_lines(ctx.work / RTTM_DIR / RTTM_FILES[split], rttm[split])
    return common.TaskResult(
        splits=summaries,
        voices=voice_of,
        s3prl={"datarc": {"num_speakers": NUM_SPEAKERS, "rate": SAMPLE_RATE}},
        path_keys=[],
        layout={"libri2mix": LIBRI2MIX, "rttm_dir": str(RTTM_DIR), "metadata_paths": "absolute"},
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
