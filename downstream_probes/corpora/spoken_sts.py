"""Spoken semantic textual similarity (STS) corpus in the layout of the published spoken STS dataset.

The published dataset (Merkx et al.; used by Pasad et al. 2023 and arXiv 2410.23955 Fig. 3F) has one row per
(sentence pair, speaker) with the fields ``task, subtask, pair_id, speaker_id, audio_a, audio_b, similarity``: each
speaker reads both sentences of the pair, and every pair is read by 4 speakers. We write the same rows as JSON lines,
with the audio as files::

    sts.jsonl                                   one row per pair and speaker: the fields above (audio_a/audio_b
                                                relative to the corpus root) plus sentence_a and sentence_b
    audio/<task>/<subtask>/<pair_id>_<speaker_id>_a.wav   16 kHz PCM (and ..._b.wav)

The sentence pairs are designed to span the 0-5 similarity scale: sentence b is sentence a with ``k`` of its ``n``
words replaced by words of another sentence (similarity ``5 (n - k) / n``), or an unrelated sentence (similarity 0).
The pairs cycle through the levels so that every level is present. ``utterances`` counts spoken utterances: each
pair gives ``2 x 4`` of them.

``downstream_probes.analysis.sts.read_spoken_sts`` reads this layout (and the real dataset written the same way).
"""

from __future__ import annotations

import json

import numpy as np

from downstream_probes.corpora import common, text
from downstream_probes.corpora.espeak import SynthesisRequest
from downstream_probes.corpora.speakers import draw_voices, utterance_voice

TASK = "sts"
SPLIT = "test"
SPEAKERS_PER_PAIR = 4
UTTERANCES_PER_PAIR = 2 * SPEAKERS_PER_PAIR
LEVELS = (5, 4, 3, 2, 1, 0)  # designed similarity levels, cycled over the pairs
SPEAKER_POOL = 8
MINIMUM_PAIRS = len(LEVELS)
MINIMUM = {SPLIT: MINIMUM_PAIRS * UTTERANCES_PER_PAIR}
DEFAULT_UTTERANCES = 2 * MINIMUM_PAIRS * UTTERANCES_PER_PAIR  # 12 pairs, every level twice
METADATA = "sts.jsonl"
AUDIO_DIR = "audio"
SUBSET = ("synthetic", "word-edits")  # (task, subtask) of every pair


def sentence_pair(rng: np.random.Generator, level: int) -> tuple[str, str, float]:
    """Sentence a, sentence b and their similarity on the 0-5 scale for a designed ``level`` (0-5)."""
    words = text.asr_sentence(rng).split()
    if level == 0:
        other = text.asr_sentence(rng).split()
        while set(other) & set(words):
            other = text.asr_sentence(rng).split()
        return " ".join(words), " ".join(other), 0.0
    n = len(words)
    replaced = min(n - 1, int(round(n * (5 - level) / 5))) if level < 5 else 0
    if level < 5:
        replaced = max(replaced, 1)
    edited = list(words)
    for position in sorted(rng.choice(n, size=replaced, replace=False).tolist()):
        donors = [w for w in text.asr_sentence(rng).split() if w not in words]
        while not donors:
            donors = [w for w in text.asr_sentence(rng).split() if w not in words]
        edited[position] = donors[int(rng.integers(len(donors)))]
    return " ".join(words), " ".join(edited), round(5.0 * (n - replaced) / n, 4)


def build(ctx: common.BuildContext) -> common.TaskResult:
    pairs = ctx.utterances // UTTERANCES_PER_PAIR
    speaker_rng = ctx.rng("speakers")
    voices = draw_voices(speaker_rng, [None] * SPEAKER_POOL)
    speaker_ids = [f"spk{index:02d}" for index in range(SPEAKER_POOL)]
    task, subtask = SUBSET
    rows, requests = [], []
    for pair_id in range(pairs):
        rng = ctx.rng("pair", pair_id)
        sentence_a, sentence_b, similarity = sentence_pair(rng, LEVELS[pair_id % len(LEVELS)])
        for speaker in sorted(rng.choice(SPEAKER_POOL, size=SPEAKERS_PER_PAIR, replace=False).tolist()):
            row = {
                "task": task,
                "subtask": subtask,
                "pair_id": pair_id,
                "speaker_id": speaker_ids[speaker],
                "audio_a": f"{AUDIO_DIR}/{task}/{subtask}/{pair_id}_{speaker_ids[speaker]}_a.wav",
                "audio_b": f"{AUDIO_DIR}/{task}/{subtask}/{pair_id}_{speaker_ids[speaker]}_b.wav",
                "similarity": similarity,
                "sentence_a": sentence_a,
                "sentence_b": sentence_b,
            }
            rows.append(row)
            for side, sentence in (("a", sentence_a), ("b", sentence_b)):
                voice = utterance_voice(voices[speaker], rng)
                requests.append(
                    (
                        row[f"audio_{side}"],
                        row["speaker_id"],
                        SynthesisRequest(sentence, voice, int(rng.integers(2**31))),
                    )
                )
    summary = common.SplitSummary()
    syntheses = ctx.synthesize([request for _, _, request in requests], "sts: spoken pairs")
    for (relative, speaker, _), synthesis in zip(requests, syntheses, strict=True):
        finished = common.finish(synthesis, ctx.rng("finish", relative))
        common.write_audio(ctx.work / relative, finished.audio)
        summary.add(speaker, finished.num_samples)
    common.write_lines(ctx.work / METADATA, [json.dumps(row, sort_keys=False) for row in rows])
    return common.TaskResult(
        splits={SPLIT: summary},
        voices=dict(zip(speaker_ids, voices, strict=True)),
        s3prl={},
        path_keys=[],
        layout={"metadata": METADATA, "audio": AUDIO_DIR},
        extra={"pairs": pairs, "speakers_per_pair": SPEAKERS_PER_PAIR, "levels": list(LEVELS)},
    )
