"""SE: VoiceBank-DEMAND as Edinburgh DataShare's zips unpack (48 kHz), prepared as s3prl's enhancement recipe reads
it (``enhancement_stft/scripts/Voicebank/data_prepare.py``).

``prepare_voicebank(raw, out)``:

1. 16 kHz audio: ``{clean,noisy}_{trainset_28spk,testset}_wav/`` (48 kHz) are resampled into
   ``out/{clean,noisy}_{trainset_28spk,testset}_wav_16k/`` (16-bit PCM) as s3prl's SUPERB docs ask: they follow
   SpeechBrain's ``download_vctk``, which resamples with torchaudio's ``Resample`` (windowed sinc, its defaults);
   so does this step (``torchaudio.functional.resample``). A folder that already exists at 16 kHz in
   ``raw`` (``..._wav_16k/``, s3prl's preprocessed archive) is used where it lies. A file already resampled is
   kept (the step is idempotent).
2. Kaldi lists: ``out/wav16k/{train,dev,test}/{clean,noisy}/{wav.scp,utt2spk,spk2utt}``, one line per utterance
   in file-name order, ``<utt> <absolute path>`` and ``<utt> <utt>``: dev is the training speakers p226 and p287,
   train the other 26, test the test set (p232, p257), as s3prl's script splits them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from downstream_probes.corpora.prepare import common
from upstream_mrhubert.atomic_io import atomic_output

TASK = "se"
SAMPLE_RATE = 16_000
PREPARED = "wav16k"
SPLITS = ("train", "dev", "test")
KINDS = ("clean", "noisy")
SETS = {"train": "trainset_28spk_wav", "dev": "trainset_28spk_wav", "test": "testset_wav"}
DEV_SPEAKERS = ("p226", "p287")
ROOTS = ("VoiceBank-DEMAND", "noisy-vctk-16k")  # folder names the zips are commonly unpacked into
DOWNLOAD = "VoiceBank-DEMAND, https://datashare.ed.ac.uk/handle/10283/2791 ({name}.zip, unpacked into {raw})"


def resample_file(source: Path, target: Path, rate: int = SAMPLE_RATE) -> None:
    """``source`` resampled to ``rate`` as 16-bit PCM WAV at ``target`` (atomically); kept if already done."""
    info = soundfile.info(str(source))
    divisor = math.gcd(int(info.samplerate), rate)
    up, down = rate // divisor, int(info.samplerate) // divisor
    expected = math.ceil(info.frames * up / down)
    if target.is_file():
        done = soundfile.info(str(target))
        if done.samplerate == rate and done.frames == expected:
            return
    audio, _ = soundfile.read(str(source), dtype="float32", always_2d=True)
    if audio.shape[1] != 1:
        raise common.PrepareError(
            f"{source} has {audio.shape[1]} channels; VoiceBank-DEMAND is mono: download it again"
        )
    resampled = torchaudio.functional.resample(torch.from_numpy(audio[:, 0]), int(info.samplerate), rate).numpy()
    samples = np.clip(np.rint(resampled.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    with atomic_output(target) as stream:
        soundfile.write(stream, samples, rate, subtype="PCM_16", format="WAV")


def _audio_folder(raw: Path, out: Path, kind: str, dataset: str, progress: bool) -> Path:
    """The 16 kHz folder of ``<kind>_<dataset>``: in ``raw`` if it is there, else resampled into ``out``."""
    ready = raw / f"{kind}_{dataset}_16k"
    if ready.is_dir():
        return ready
    source = raw / f"{kind}_{dataset}"
    download = DOWNLOAD.format(name=source.name, raw=raw)
    if not source.is_dir():
        raise common.PrepareError(f"{source} not found (nor {ready.name}); it comes from {download}")
    files = common.require_nonempty(source.glob("*.wav"), source, "*.wav", download)
    target = out / f"{kind}_{dataset}_16k"
    for wav in tqdm(files, desc=f"se: {source.name} -> 16 kHz", unit="file", disable=not progress):
        resample_file(wav, target / wav.name)
    return target


def prepare_voicebank(raw: common.Folder, out: common.Folder, *, progress: bool = False) -> common.Prepared:
    """Resample VoiceBank-DEMAND to 16 kHz (where needed) and write s3prl's Kaldi lists.

    Args:
        raw: the folder (or its ``VoiceBank-DEMAND/`` or ``noisy-vctk-16k/``) holding ``clean_trainset_28spk_wav/``, ``noisy_trainset_28spk_wav/``, ``clean_testset_wav/``
            and ``noisy_testset_wav/`` (or their ``_16k`` versions).
        out: where the 16 kHz audio and ``wav16k/`` go.
        progress: show a tqdm bar per resampled folder.

    Returns:
        The record: ``loaderrc.{train,dev,test}_dir``, utterances per split.
    """
    raw_dir = common.folder(raw, "--raw")
    root = next(
        (
            path
            for path in (raw_dir, *(raw_dir / name for name in ROOTS))
            if any(path.glob("clean_trainset_28spk_wav*"))
        ),
        raw_dir,
    )
    out_dir = common.out_folder(out, raw_dir)
    audio = {
        (kind, dataset): _audio_folder(root, out_dir, kind, dataset, progress)
        for dataset in dict.fromkeys(SETS.values())
        for kind in KINDS
    }
    counts, written = {}, []
    for split in SPLITS:
        for kind in KINDS:
            source = audio[(kind, SETS[split])]
            names = sorted(wav.name for wav in source.glob("*.wav"))
            if split != "test":
                names = [n for n in names if n.startswith(DEV_SPEAKERS) == (split == "dev")]
            utterances = [name.removesuffix(".wav") for name in names]
            target = out_dir / PREPARED / split / kind
            written.append(
                common.write_lines(
                    target / "wav.scp", (f"{u} {source / n}" for u, n in zip(utterances, names, strict=True))
                )
            )
            for list_name in ("utt2spk", "spk2utt"):
                written.append(common.write_lines(target / list_name, (f"{u} {u}" for u in utterances)))
            counts[split] = len(utterances)
        clean = (out_dir / PREPARED / split / "clean" / "wav.scp").read_text().split("\n")
        noisy = (out_dir / PREPARED / split / "noisy" / "wav.scp").read_text().split("\n")
        if [line.split(" ")[0] for line in clean] != [line.split(" ")[0] for line in noisy]:
            raise common.PrepareError(
                f"{audio[('clean', SETS[split])]} and {audio[('noisy', SETS[split])]} hold different utterances; "
                "unpack both zips completely"
            )
    overrides = {"loaderrc": {f"{split}_dir": str(out_dir / PREPARED / split) for split in SPLITS}}
    return common.write_record(common.Prepared(TASK, raw_dir, out_dir, overrides, counts, written))
