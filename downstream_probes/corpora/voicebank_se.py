"""Speech-enhancement corpus in the VoiceBank-DEMAND layout, prepared the way s3prl's ``enhancement_stft`` expert
reads it (``scripts/Voicebank/data_prepare.py`` then ``SeparationDataset`` with ``src: [noisy]``, ``tgt: [clean]``).

Layout under the corpus root::

    VoiceBank-DEMAND/{clean,noisy}_trainset_28spk_wav_16k/p<NNN>_<MMM>.wav     train + dev speakers
    VoiceBank-DEMAND/{clean,noisy}_testset_wav_16k/p<NNN>_<MMM>.wav            test speakers (p232, p257)
    VoiceBank-DEMAND/log_trainset_28spk.txt, log_testset.txt                  "<utt> <noise kind> <snr dB>"
    wav16k/{train,dev,test}/{noisy,clean}/wav.scp    "<utt> <ABSOLUTE path>" (+ utt2spk, spk2utt: "<utt> <utt>")

What s3prl needs: ``loaderrc.{train,dev,test}_dir`` = wav16k/{train,dev,test}; each holds ``noisy/wav.scp`` and
``clean/wav.scp`` with the same utterance names. The paths in wav.scp are absolute (Kaldi style, split on
whitespace, so the corpus path must not contain spaces) and point into the corpus where it was built: move the
corpus and the wav.scp files must be rebuilt. As s3prl's preparation does, dev is the train-set speakers p226 and
p287 and train the other 26; test is p232 and p257. The clean signal and the noise are added at VoiceBank-DEMAND's
SNRs (train 15/10/5/0 dB, test 17.5/12.5/7.5/2.5 dB, over the active speech) with different synthetic noise kinds
for train and test (the real test noises are unseen too). Files are 16-bit PCM, 16 kHz.

``utterances`` counts clean/noisy pairs (60/20/20 over train/dev/test).
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
    finish,
    speaker_count,
    spread,
    to_float,
    to_int16,
    write_audio,
    write_lines,
)
from downstream_probes.corpora.espeak import SynthesisRequest, Voice
from downstream_probes.corpora.noises import make_noise
from downstream_probes.corpora.speakers import draw_voices, utterance_voice

TASK = "se"
SPLITS = ("train", "dev", "test")
FRACTIONS = {"train": 0.6, "dev": 0.2, "test": 0.2}
MINIMUM = {"train": 2, "dev": 1, "test": 1}
DEFAULT_UTTERANCES = 30
RAW_ROOT = "VoiceBank-DEMAND"
PREPARED_ROOT = "wav16k"
# VoiceBank-DEMAND's 28 training speakers; s3prl holds out p226 and p287 as dev. Test speakers: p232, p257.
DEV_SPEAKERS = ("p226", "p287")
TRAIN_SPEAKERS = (
    "p227", "p228", "p230", "p231", "p233", "p236", "p239", "p243", "p244", "p250", "p254", "p256", "p258",
    "p259", "p267", "p268", "p269", "p270", "p273", "p274", "p276", "p277", "p278", "p279", "p282", "p286",
)  # fmt: skip
TEST_SPEAKERS = ("p232", "p257")
SPEAKER_GENDERS = {"p226": "male", "p287": "male", "p232": "male", "p257": "female"}
SNRS = {"train": (15.0, 10.0, 5.0, 0.0), "dev": (15.0, 10.0, 5.0, 0.0), "test": (17.5, 12.5, 7.5, 2.5)}
NOISES = {"train": ("white", "pink", "hum", "babble"), "dev": ("white", "pink", "hum", "babble"),
          "test": ("brown", "fan", "babble")}  # fmt: skip
RAW_FOLDERS = {
    "train": "{kind}_trainset_28spk_wav_16k",
    "dev": "{kind}_trainset_28spk_wav_16k",
    "test": "{kind}_testset_wav_16k",
}


def minimum_utterances() -> int:
    return sum(MINIMUM.values())


@dataclass(frozen=True)
class _Pair:
    split: str
    speaker: str
    utt_id: str
    noise: str
    snr: float
    request: SynthesisRequest


def _plan(ctx: BuildContext) -> tuple[list[_Pair], dict[str, Voice]]:
    sizes = allocate(ctx.utterances, FRACTIONS, MINIMUM)
    names = {
        "train": TRAIN_SPEAKERS[: speaker_count(sizes["train"], per_speaker=4, least=1, most=len(TRAIN_SPEAKERS))],
        "dev": DEV_SPEAKERS[: speaker_count(sizes["dev"], per_speaker=1, least=1, most=2)],
        "test": TEST_SPEAKERS[: speaker_count(sizes["test"], per_speaker=1, least=1, most=2)],
    }
    rng = ctx.rng("speakers")
    ordered = [name for split in SPLITS for name in names[split]]
    voice_of = dict(zip(ordered, draw_voices(rng, [SPEAKER_GENDERS.get(name) for name in ordered]), strict=False))
    pairs = []
    for split in SPLITS:
        for speaker, count in zip(names[split], spread(sizes[split], len(names[split])), strict=False):
            for number in range(1, count + 1):
                utt_id = f"{speaker}_{number:03d}"
                utt_rng = ctx.rng("utterance", utt_id)
                sentence = text.asr_sentence(utt_rng)
                noise = NOISES[split][int(utt_rng.integers(len(NOISES[split])))]
                snr = SNRS[split][int(utt_rng.integers(len(SNRS[split])))]
                request = SynthesisRequest(
                    sentence, utterance_voice(voice_of[speaker], utt_rng), int(utt_rng.integers(2**31))
                )
                pairs.append(_Pair(split, speaker, utt_id, noise, snr, request))
    return pairs, voice_of


def _babble_requests(ctx: BuildContext) -> dict[str, list[SynthesisRequest]]:
    """Talkers for the babble noise: separate voices for train/dev and for test."""
    rng = ctx.rng("babble")
    voices = draw_voices(rng, [None] * 8)
    requests = {}
    for group, group_voices in (("train", voices[:4]), ("test", voices[4:])):
        requests[group] = [
            SynthesisRequest(" ".join(text.asr_sentence(rng) for _ in range(3)), voice, int(rng.integers(2**31)))
            for voice in group_voices
        ]
    return requests


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, active: slice) -> tuple[np.ndarray, np.ndarray]:
    """(clean, noisy) as float: ``noise`` scaled so that active-speech power over noise power is ``snr_db``; both
    scaled down together if the noisy signal would clip."""
    speech_power = float(np.mean(clean[active] ** 2))
    noise = noise * np.sqrt(speech_power / (10 ** (snr_db / 10)) / float(np.mean(noise**2)))
    noisy = clean + noise
    peak = float(np.max(np.abs(noisy)))
    if peak > 0.99:
        clean, noisy = clean * (0.99 / peak), noisy * (0.99 / peak)
    return clean, noisy


def build(ctx: BuildContext) -> TaskResult:
    pairs, voice_of = _plan(ctx)
    babble = _babble_requests(ctx)
    # The babble talkers come first so that the utterances can be written as they arrive.
    results = ctx.synthesize(babble["train"] + babble["test"] + [p.request for p in pairs], "se: VoiceBank-DEMAND")
    babble_audio = {group: [to_float(next(results).audio) for _ in babble[group]] for group in ("train", "test")}

    summaries = {split: SplitSummary() for split in SPLITS}
    logs: dict[str, list[str]] = {"train": [], "test": []}
    scp: dict[tuple[str, str], list[str]] = {(split, kind): [] for split in SPLITS for kind in ("clean", "noisy")}
    for pair, synthesis in zip(pairs, results, strict=False):
        finished = finish(synthesis, ctx.rng("finish", pair.utt_id))
        clean = to_float(finished.audio)
        active = slice(finished.words[0].start, finished.words[-1].end)
        babble_group = "test" if pair.split == "test" else "train"
        noise = make_noise(pair.noise, clean.shape[0], ctx.rng("noise", pair.utt_id), babble_audio[babble_group])
        clean, noisy = mix_at_snr(clean, noise, pair.snr, active)
        for kind, signal in (("clean", clean), ("noisy", noisy)):
            relative = f"{RAW_ROOT}/{RAW_FOLDERS[pair.split].format(kind=kind)}/{pair.utt_id}.wav"
            write_audio(ctx.work / relative, to_int16(signal))
            scp[(pair.split, kind)].append(f"{pair.utt_id} {ctx.final_path(relative)}")
        logs[babble_group].append(f"{pair.utt_id} {pair.noise} {pair.snr:g}")
        summaries[pair.split].add(pair.speaker, finished.num_samples)

    write_lines(ctx.work / RAW_ROOT / "log_trainset_28spk.txt", sorted(logs["train"]))
    write_lines(ctx.work / RAW_ROOT / "log_testset.txt", sorted(logs["test"]))
    for (split, kind), lines in scp.items():
        folder = ctx.work / PREPARED_ROOT / split / kind
        lines = sorted(lines)
        write_lines(folder / "wav.scp", lines)
        identity = [f"{line.split()[0]} {line.split()[0]}" for line in lines]
        write_lines(folder / "utt2spk", identity)
        write_lines(folder / "spk2utt", identity)

    return TaskResult(
        splits=summaries,
        voices=voice_of,
        s3prl={"loaderrc": {f"{split}_dir": f"{PREPARED_ROOT}/{split}" for split in SPLITS}},
        path_keys=[f"loaderrc.{split}_dir" for split in SPLITS],
        layout={"raw_root": RAW_ROOT, "prepared_root": PREPARED_ROOT},
        extra={
            "snrs": {split: list(SNRS[split]) for split in SPLITS},
            "noises": {s: list(NOISES[s]) for s in SPLITS},
            "wav_scp_paths": "absolute",
        },
    )
