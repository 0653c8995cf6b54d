"""Speech-enhancement corpus in the layout of VoiceBank-DEMAND as Edinburgh DataShare's zips unpack (48 kHz);
``mrsuperb prepare se`` resamples it to 16 kHz and writes the Kaldi lists s3prl's ``enhancement_stft`` expert reads,
as for the real dataset (s3prl's ``scripts/Voicebank/data_prepare.py``, ``SeparationDataset`` with ``src: [noisy]``,
``tgt: [clean]``).

Layout under the corpus root::

    VoiceBank-DEMAND/{clean,noisy}_trainset_28spk_wav/p<NNN>_<MMM>.wav     train + dev speakers, 48 kHz
    VoiceBank-DEMAND/{clean,noisy}_testset_wav/p<NNN>_<MMM>.wav            test speakers (p232, p257), 48 kHz
    VoiceBank-DEMAND/log_trainset_28spk.txt, log_testset.txt               "<utt> <noise kind> <snr dB>"

As s3prl's preparation splits it, dev is the train-set speakers p226 and p287 and train the other 26; test is p232
and p257. The clean signal and the noise are added at VoiceBank-DEMAND's SNRs (train 15/10/5/0 dB, test
17.5/12.5/7.5/2.5 dB, over the active speech) with different synthetic noise kinds for train and test (the real
test noises are unseen too). The speech is synthesised at 16 kHz and written at 48 kHz (polyphase upsampling), so
its band ends at 8 kHz; files are 16-bit PCM.

``utterances`` counts clean/noisy pairs (60/20/20 over train/dev/test).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from downstream_probes.corpora import common, text
from downstream_probes.corpora.espeak import SAMPLE_RATE, SynthesisRequest, Voice
from downstream_probes.corpora.noises import make_noise
from downstream_probes.corpora.speakers import draw_voices, utterance_voice

TASK = "se"
SPLITS = ("train", "dev", "test")
FRACTIONS = {"train": 0.6, "dev": 0.2, "test": 0.2}
MINIMUM = {"train": 2, "dev": 1, "test": 1}
DEFAULT_UTTERANCES = 30
RAW_ROOT = "VoiceBank-DEMAND"
RAW_RATE = 48_000
# VoiceBank-DEMAND's 28 training speakers; s3prl holds out p226 and p287 as dev. Test speakers: p232, p257.
DEV_SPEAKERS = ("p226", "p287")
TRAIN_SPEAKERS = (
    "p227",
    "p228",
    "p230",
    "p231",
    "p233",
    "p236",
    "p239",
    "p243",
    "p244",
    "p250",
    "p254",
    "p256",
    "p258",
    "p259",
    "p267",
    "p268",
    "p269",
    "p270",
    "p273",
    "p274",
    "p276",
    "p277",
    "p278",
    "p279",
    "p282",
    "p286",
)
TEST_SPEAKERS = ("p232", "p257")
SPEAKER_GENDERS = {"p226": "male", "p287": "male", "p232": "male", "p257": "female"}
SNRS = {"train": (15.0, 10.0, 5.0, 0.0), "dev": (15.0, 10.0, 5.0, 0.0), "test": (17.5, 12.5, 7.5, 2.5)}
NOISES = {
    "train": ("white", "pink", "hum", "babble"),
    "dev": ("white", "pink", "hum", "babble"),
    "test": ("brown", "fan", "babble"),
}
RAW_FOLDERS = {
    "train": "{kind}_trainset_28spk_wav",
    "dev": "{kind}_trainset_28spk_wav",
    "test": "{kind}_testset_wav",
}


@dataclass(frozen=True)
class _Pair(common.PlannedUtterance):
    utt_id: str
    noise: str
    snr: float


def _plan(ctx: common.BuildContext) -> tuple[list[_Pair], dict[str, Voice]]:
    sizes = common.allocate(ctx.utterances, FRACTIONS, MINIMUM)
    names = {
        "train": TRAIN_SPEAKERS[
            : common.speaker_count(sizes["train"], per_speaker=4, least=1, most=len(TRAIN_SPEAKERS))
        ],
        "dev": DEV_SPEAKERS[: common.speaker_count(sizes["dev"], per_speaker=1, least=1, most=2)],
        "test": TEST_SPEAKERS[: common.speaker_count(sizes["test"], per_speaker=1, least=1, most=2)],
    }
    rng = ctx.rng("speakers")
    ordered = [name for split in SPLITS for name in names[split]]
    voice_of = dict(zip(ordered, draw_voices(rng, [SPEAKER_GENDERS.get(name) for name in ordered]), strict=False))
    pairs = []
    for split in SPLITS:
        for speaker, count in zip(names[split], common.spread(sizes[split], len(names[split])), strict=False):
            for number in range(1, count + 1):
                utt_id = f"{speaker}_{number:03d}"
                utt_rng = ctx.rng("utterance", utt_id)
                sentence = text.asr_sentence(utt_rng)
                noise = NOISES[split][int(utt_rng.integers(len(NOISES[split])))]
                snr = SNRS[split][int(utt_rng.integers(len(SNRS[split])))]
                request = SynthesisRequest(
                    sentence, utterance_voice(voice_of[speaker], utt_rng), int(utt_rng.integers(2**31))
                )
                pairs.append(_Pair(split=split, speaker=speaker, request=request, utt_id=utt_id, noise=noise, snr=snr))
    return pairs, voice_of


def _babble_requests(ctx: common.BuildContext) -> dict[str, list[SynthesisRequest]]:
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


def write_48k(path: Path, signal: np.ndarray) -> None:
    """A 16 kHz float signal written as DataShare's 48 kHz 16-bit WAV (polyphase upsampling by 3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    upsampled = resample_poly(signal, RAW_RATE // SAMPLE_RATE, 1)
    soundfile.write(str(path), common.to_int16(upsampled), RAW_RATE, subtype="PCM_16", format="WAV")


def build(ctx: common.BuildContext) -> common.TaskResult:
    pairs, voice_of = _plan(ctx)
    babble = _babble_requests(ctx)
    # The babble talkers come first so that the utterances can be written as they arrive.
    results = ctx.synthesize(babble["train"] + babble["test"] + [p.request for p in pairs], "se: VoiceBank-DEMAND")
    babble_audio = {group: [common.to_float(next(results).audio) for _ in babble[group]] for group in ("train", "test")}

    summaries = {split: common.SplitSummary() for split in SPLITS}
    logs: dict[str, list[str]] = {"train": [], "test": []}
    for pair, synthesis in zip(pairs, results, strict=False):
        finished = common.finish(synthesis, ctx.rng("finish", pair.utt_id))
        clean = common.to_float(finished.audio)
        active = slice(finished.words[0].start, finished.words[-1].end)
        babble_group = "test" if pair.split == "test" else "train"
        noise = make_noise(pair.noise, clean.shape[0], ctx.rng("noise", pair.utt_id), babble_audio[babble_group])
        clean, noisy = mix_at_snr(clean, noise, pair.snr, active)
        for kind, signal in (("clean", clean), ("noisy", noisy)):
            relative = f"{RAW_ROOT}/{RAW_FOLDERS[pair.split].format(kind=kind)}/{pair.utt_id}.wav"
            write_48k(ctx.work / relative, signal)
        logs[babble_group].append(f"{pair.utt_id} {pair.noise} {pair.snr:g}")
        summaries[pair.split].add(pair.speaker, finished.num_samples)

    common.write_lines(ctx.work / RAW_ROOT / "log_trainset_28spk.txt", sorted(logs["train"]))
    common.write_lines(ctx.work / RAW_ROOT / "log_testset.txt", sorted(logs["test"]))
    return common.TaskResult(
        splits=summaries,
        voices=voice_of,
        s3prl={},
        path_keys=[],
        layout={"raw_root": RAW_ROOT, "raw_sample_rate": str(RAW_RATE)},
        extra={
            "snrs": {split: list(SNRS[split]) for split in SPLITS},
            "noises": {s: list(NOISES[s]) for s in SPLITS},
        },
    )
