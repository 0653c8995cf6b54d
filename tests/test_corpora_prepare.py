"""``mrsuperb prepare``: each corpus module on a small tree in its download's layout (written here, real formats),
the files s3prl's readers take, idempotence, and one clear error naming a missing file and its download."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile

from downstream_probes.cli import main as cli_main
from downstream_probes.corpora.prepare import PrepareError, load_prepared, prepare
from downstream_probes.corpora.prepare.voicebank import resample_file


def _tone(samples: int, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(samples) / rate) + 0.01 * rng.standard_normal(samples)).astype(
        np.float32
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_librispeech(root: Path) -> Path:
    """LibriSpeech/<split>/<speaker>/<chapter>/ with FLACs and trans.txt, two utterances of different lengths."""
    for split, speaker in (("train-clean-100", "19"), ("dev-clean", "84"), ("test-clean", "61")):
        chapter = root / "LibriSpeech" / split / speaker / "7"
        chapter.mkdir(parents=True)
        for number, samples in enumerate((1600, 4800)):
            soundfile.write(chapter / f"{speaker}-7-{number:04d}.flac", _tone(samples), 16000)
        (chapter / f"{speaker}-7.trans.txt").write_text(f"{speaker}-7-0000 HELLO\n{speaker}-7-0001 HELLO WORLD\n")
    return root


def test_asr_writes_len_for_bucket_as_s3prl_and_is_idempotent(tmp_path: Path, capsys) -> None:
    raw = write_librispeech(tmp_path / "raw")
    assert cli_main(["prepare", "asr", "--raw", str(raw), "--out", str(tmp_path / "out"), "-q"]) == 0
    printed = capsys.readouterr().out
    bucket = tmp_path / "out" / "len_for_bucket"
    assert f"config.downstream_expert.datarc.bucket_file='{bucket}'" in printed
    assert f"config.downstream_expert.datarc.libri_root='{raw / 'LibriSpeech'}'" in printed
    with open(bucket / "dev-clean.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["", "file_path", "length", "label"],
        ["0", "dev-clean/84/7/84-7-0001.flac", "4800", ""],  # longest first, paths relative to LibriSpeech/
        ["1", "dev-clean/84/7/84-7-0000.flac", "1600", ""],
    ]
    assert sorted(p.name for p in bucket.iterdir()) == ["dev-clean.csv", "test-clean.csv", "train-clean-100.csv"]
    assert load_prepared(tmp_path / "out")["overrides"]["datarc"]["bucket_file"] == str(bucket)
    before = _snapshot(tmp_path / "out")
    prepare("asr", raw, tmp_path / "out")
    assert _snapshot(tmp_path / "out") == before


def test_asr_names_a_missing_split_and_its_download(tmp_path: Path, capsys) -> None:
    raw = write_librispeech(tmp_path / "raw")
    for path in sorted((raw / "LibriSpeech" / "test-clean").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (raw / "LibriSpeech" / "test-clean").rmdir()
    assert cli_main(["prepare", "asr", "--raw", str(raw), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "test-clean not found" in error and "openslr.org/resources/12/test-clean.tar.gz" in error
    assert not (tmp_path / "out").exists()  # nothing written before the input is checked


def test_asr_names_an_utterance_without_transcript(tmp_path: Path) -> None:
    raw = write_librispeech(tmp_path / "raw")
    soundfile.write(raw / "LibriSpeech" / "dev-clean" / "84" / "7" / "84-7-0002.flac", _tone(800), 16000)
    with pytest.raises(PrepareError, match=r"84-7-0002.flac has no line in .*84-7.trans.txt"):
        prepare("asr", raw, tmp_path / "out")


def write_voicebank_48k(root: Path) -> Path:
    """DataShare's four folders at 48 kHz: train speakers p226 (dev), p227 (train); test p232."""
    for kind in ("clean", "noisy"):
        for folder, names in (
            ("trainset_28spk_wav", ("p226_001", "p227_001", "p227_002")),
            ("testset_wav", ("p232_001",)),
        ):
            for index, name in enumerate(names):
                path = root / f"{kind}_{folder}" / f"{name}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(path, _tone(48000 + 300 * index, 48000, seed=index), 48000, subtype="PCM_16")
    return root


def test_se_resamples_48k_and_writes_s3prl_lists(tmp_path: Path) -> None:
    raw = write_voicebank_48k(tmp_path / "raw")
    out = tmp_path / "out"
    prepared = prepare("se", raw, out)
    assert prepared.counts == {"train": 2, "dev": 1, "test": 1}
    audio = out / "noisy_trainset_28spk_wav_16k" / "p227_002.wav"
    info = soundfile.info(str(audio))
    assert info.samplerate == 16000 and info.frames == 16200 and info.subtype == "PCM_16"
    # the 220 Hz tone keeps its level through the polyphase filter
    original, _ = soundfile.read(str(raw / "noisy_trainset_28spk_wav" / "p227_002.wav"))
    resampled, _ = soundfile.read(str(audio))
    assert np.sqrt(np.mean(resampled**2)) == pytest.approx(np.sqrt(np.mean(original**2)), rel=0.02)
    train = out / "wav16k" / "train"
    assert (train / "noisy" / "wav.scp").read_text() == (
        f"p227_001 {out / 'noisy_trainset_28spk_wav_16k' / 'p227_001.wav'}\n"
        f"p227_002 {out / 'noisy_trainset_28spk_wav_16k' / 'p227_002.wav'}\n"
    )
    assert (train / "clean" / "utt2spk").read_text() == "p227_001 p227_001\np227_002 p227_002\n"
    assert (out / "wav16k" / "dev" / "clean" / "spk2utt").read_text() == "p226_001 p226_001\n"
    assert (out / "wav16k" / "test" / "clean" / "wav.scp").read_text().startswith("p232_001 ")
    assert prepared.overrides == {"loaderrc": {f"{s}_dir": str(out / "wav16k" / s) for s in ("train", "dev", "test")}}
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*.wav")}
    prepare("se", raw, out)
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.wav")} == before  # resampled once


def test_se_resampling_is_redone_for_a_cut_file(tmp_path: Path) -> None:
    source = tmp_path / "a.wav"
    soundfile.write(source, _tone(4800, 48000), 48000)
    target = tmp_path / "out" / "a.wav"
    target.parent.mkdir()
    soundfile.write(target, _tone(100), 16000)  # a half-finished earlier result
    resample_file(source, target)
    assert soundfile.info(str(target)).frames == 1600


def test_se_names_the_missing_zip(tmp_path: Path) -> None:
    raw = write_voicebank_48k(tmp_path / "raw")
    for path in (raw / "noisy_testset_wav").iterdir():
        path.unlink()
    (raw / "noisy_testset_wav").rmdir()
    with pytest.raises(PrepareError, match=r"noisy_testset_wav not found .*datashare.ed.ac.uk.*noisy_testset_wav.zip"):
        prepare("se", raw, tmp_path / "out")


def write_librimix(root: Path, rttm_dir: Path) -> Path:
    """Libri2Mix/wav16k/max/{metadata,<set>/mix_both} and LibriMix's source RTTMs, one mixture per split."""
    meta = root / "Libri2Mix" / "wav16k" / "max" / "metadata"
    meta.mkdir(parents=True)
    rttm_dir.mkdir(parents=True)
    for number, (mixtures, rttm) in enumerate(
        (("train-100", "train_clean_100.rttm"), ("dev", "dev_clean.rttm"), ("test", "test_clean.rttm"))
    ):
        first, second = f"{100 + number}-5-0000", f"{200 + number}-6-0001"
        mix_id = f"{first}_{second}"
        generated = f"/storage/Libri2Mix/wav16k/max/{mixtures}/mix_both/{mix_id}.wav"  # where it was generated
        wav = root / "Libri2Mix" / "wav16k" / "max" / mixtures / "mix_both" / f"{mix_id}.wav"
        wav.parent.mkdir(parents=True)
        soundfile.write(wav, _tone(40000), 16000)
        (meta / f"mixture_{mixtures}_mix_both.csv").write_text(
            "mixture_ID,mixture_path,source_1_path,source_2_path,noise_path,length\n"
            f"{mix_id},{generated},/s1/{mix_id}.wav,/s2/{mix_id}.wav,/noise/{mix_id}.wav,40000\n"
        )
        (rttm_dir / rttm).write_text(
            f"SPEAKER 5-0000 1   0.370   1.340 <NA> <NA> {100 + number} <NA> <NA>\n"
            f"SPEAKER 5-0000 1   1.900   0.410 <NA> <NA> {100 + number} <NA> <NA>\n"
            f"SPEAKER 6-0001 1   0.050   2.200 <NA> <NA> {200 + number} <NA> <NA>\n"
        )
    return root


def test_sd_writes_kaldi_folders_from_libri2mix(tmp_path: Path) -> None:
    raw = write_librimix(tmp_path / "raw", tmp_path / "raw" / "metadata" / "LibriSpeech")
    out = tmp_path / "out"
    prepared = prepare("sd", raw, out)
    assert prepared.counts == {"train": 1, "dev": 1, "test": 1}
    dev = out / "dev"
    mix = "101-5-0000_201-6-0001"
    wav = raw / "Libri2Mix" / "wav16k" / "max" / "dev" / "mix_both" / f"{mix}.wav"
    assert (dev / "wav.scp").read_text() == f"{mix} {wav}\n"
    assert (dev / "segments").read_text().splitlines() == [
        f"{mix}_000370_001710 {mix} 0.37 1.71",
        f"{mix}_001900_002310 {mix} 1.9 2.31",
        f"{mix}_000050_002250 {mix} 0.05 2.25",
    ]
    assert (dev / "utt2spk").read_text().splitlines()[2] == f"{mix}_000050_002250 201"
    assert (dev / "spk2utt").read_text() == f"101 {mix} {mix}\n201 {mix}\n"
    assert (dev / "reco2dur").read_text() == f"{mix} 2.5\n"
    assert (dev / "rttm").read_text().splitlines()[
        0
    ] == f"SPEAKER\t{mix}\t1\t0.37\t1.3399999999999999\t<NA>\t<NA>\t101\t<NA>"


def test_sd_scores_its_own_reference_as_perfect(tmp_path: Path) -> None:
    from downstream_probes.s3prl.diarization import diarization_error_rate, read_reco2dur, read_rttm

    raw = write_librimix(tmp_path / "raw", tmp_path / "rttm")
    prepare("sd", raw, tmp_path / "out", rttm_dir=tmp_path / "rttm")
    reference = read_rttm(tmp_path / "out" / "test" / "rttm")
    assert diarization_error_rate(reference, reference, read_reco2dur(tmp_path / "out" / "test" / "reco2dur")) == 0


def test_sd_names_the_missing_rttm_and_where_it_comes_from(tmp_path: Path, capsys) -> None:
    raw = write_librimix(tmp_path / "raw", tmp_path / "elsewhere")
    assert cli_main(["prepare", "sd", "--raw", str(raw), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "metadata/LibriSpeech" in error and "github.com/s3prl/LibriMix" in error


def test_checked_tasks_name_the_missing_part(tmp_path: Path) -> None:
    (tmp_path / "SNIPS" / "train").mkdir(parents=True)
    (tmp_path / "SNIPS" / "all.iob.snips.txt").write_text("")
    with pytest.raises(PrepareError, match=r"slots.txt not found.*1oBRZd"):
        prepare("sf", tmp_path, tmp_path / "out")
    with pytest.raises(PrepareError, match=r"_background_noise_.*speech_commands_v0.01.tar.gz"):
        prepare("ks", tmp_path, tmp_path / "out")
    with pytest.raises(PrepareError, match=r"train_data.csv.*Fluent Speech Commands"):
        prepare("ic", tmp_path, tmp_path / "out")
    with pytest.raises(PrepareError, match="--rttm-dir is for sd"):
        prepare("ic", tmp_path, tmp_path / "out", rttm_dir=tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# run_downstream.py without prepared data: one line, before s3prl (and so the upstream) is loaded

_PREFLIGHT = """
import sys
from downstream_probes.s3prl import run_downstream
status = run_downstream.main(sys.argv[1:])
print(status, "s3prl" in sys.modules, "s3prl.run_downstream" in sys.modules)
"""


def _run_without_data(tmp_path: Path, task: str, override: str) -> tuple[str, str]:
    import os
    import subprocess
    import sys

    from downstream_probes.paths import recipes_dir

    argv = ["-m", "train", "-u", "mrhubert_local", "-k", str(tmp_path / "never_read.pt"), "-d", task,
            "-c", str(recipes_dir() / "quick" / task / "config.yaml"), "-p", str(tmp_path / "exp"), "-o", override]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _PREFLIGHT, *argv], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    return done.stdout.strip(), done.stderr.strip()


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_asr_without_len_for_bucket_stops_before_s3prl(tmp_path: Path, state: str) -> None:
    raw = write_librispeech(tmp_path / "raw")
    bucket = tmp_path / "len_for_bucket"
    if state == "empty":
        bucket.mkdir()
        (bucket / "train-clean-100.csv").write_text(",file_path,length,label\n")
    override = (
        f"config.downstream_expert.datarc.libri_root='{raw / 'LibriSpeech'}',,"
        f"config.downstream_expert.datarc.bucket_file='{bucket}'"
    )
    stdout, stderr = _run_without_data(tmp_path, "asr", override)
    assert stdout == "2 False False"  # exit status 2; s3prl never imported, so no upstream was built
    assert len(stderr.splitlines()) == 1
    named = bucket if state == "missing" else bucket / "train-clean-100.csv"
    assert f"{named} {'not found' if state == 'missing' else 'has no rows'}" in stderr
    assert "mrsuperb prepare asr --raw" in stderr


def _loaderrc(folder: str) -> str:
    """The three ``loaderrc.<split>_dir`` overrides, ``folder`` holding ``{split}`` (and ``{d}``, the test folder)."""
    return ",,".join(
        f"config.downstream_expert.loaderrc.{split}_dir='{{d}}/{folder.replace('{split}', split)}'"
        for split in ("train", "dev", "test")
    )


@pytest.mark.parametrize(
    ("task", "override", "named"),
    [
        ("se", _loaderrc("wav16k/{split}"), "wav16k/train/noisy/wav.scp"),
        ("sd", _loaderrc("{split}"), "train/wav.scp"),
        (
            "ks",
            (
                "config.downstream_expert.datarc.speech_commands_root='{d}/sc',,"
                "config.downstream_expert.datarc.speech_commands_test_root='{d}/sc_test'"
            ),
            "sc/_background_noise_",
        ),
    ],
)
def test_other_tasks_without_prepared_data_stop_before_s3prl(tmp_path: Path, task: str, override: str, named: str):
    stdout, stderr = _run_without_data(tmp_path, task, override.format(d=tmp_path))
    assert stdout == "2 False False"
    assert f"{tmp_path / named} not found" in stderr and f"mrsuperb prepare {task} --raw" in stderr


# ----------------------------------------------------------------------------------------------------------------
# a real recording: pyannote.audio 4.0.7's sample.wav (30 s, two speakers who overlap) with its reference
# sample.rttm, read from the wheel that `make fixtures` downloads (pip download --no-deps; not installed). Licence:
# MIT (pyannote_audio-4.0.7.dist-info/licenses/LICENSE, "Copyright (c) 2020 CNRS"); the wheel does not say where
# the recording itself comes from.

PYANNOTE_WHEEL = Path(__file__).parent / ".fixtures" / "pyannote_audio-4.0.7-py3-none-any.whl"


@pytest.fixture(scope="module")
def pyannote_sample() -> dict[str, bytes]:
    import os
    import zipfile

    if not PYANNOTE_WHEEL.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{PYANNOTE_WHEEL} missing: `make fixtures` downloads it (make test does)")
        pytest.skip(f"{PYANNOTE_WHEEL} missing: run `make fixtures` (pip download --no-deps pyannote.audio==4.0.7)")
    with zipfile.ZipFile(PYANNOTE_WHEEL) as wheel:
        return {name: wheel.read(f"pyannote/audio/sample/sample.{name}") for name in ("wav", "rttm")}


def test_sd_preparation_and_der_on_a_real_conversation(tmp_path: Path, pyannote_sample: dict[str, bytes]) -> None:
    """The real conversation as a Libri2Mix mixture (its two speakers as the two sources): prepared, read by s3prl's
    own KaldiData, and scored against pyannote's reference with our DER."""
    from s3prl.downstream.diarization.dataset import KaldiData

    from downstream_probes.audio import read_audio
    from downstream_probes.s3prl.diarization import diarization_error_rate, read_reco2dur, read_rttm

    speakers = {"speaker90": ("90", "1-0000"), "speaker91": ("91", "2-0000")}  # label -> (LibriSpeech-style id, reco)
    mix_id = "90-1-0000_91-2-0000"
    raw = tmp_path / "raw"
    wav = raw / "Libri2Mix" / "wav16k" / "max" / "test" / "mix_both" / f"{mix_id}.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(pyannote_sample["wav"])
    audio, rate = read_audio(wav)
    metadata = raw / "Libri2Mix" / "wav16k" / "max" / "metadata"
    metadata.mkdir(parents=True)
    rttm_dir = raw / "metadata" / "LibriSpeech"
    rttm_dir.mkdir(parents=True)
    reference_lines = pyannote_sample["rttm"].decode().splitlines()
    sources = []
    for line in reference_lines:
        fields = line.split()
        speaker, reco = speakers[fields[7]]
        sources.append(f"SPEAKER {reco} 1 {fields[3]} {fields[4]} <NA> <NA> {speaker} <NA> <NA>")
    for mixtures, rttm in (
        ("train-100", "train_clean_100.rttm"),
        ("dev", "dev_clean.rttm"),
        ("test", "test_clean.rttm"),
    ):
        row = f"{mix_id},/gen/Libri2Mix/wav16k/max/test/mix_both/{mix_id}.wav,s1,s2,noise,{audio.shape[1]}"
        (metadata / f"mixture_{mixtures}_mix_both.csv").write_text(
            "mixture_ID,mixture_path,source_1_path,source_2_path,noise_path,length\n" + row + "\n"
        )
        (rttm_dir / rttm).write_text("\n".join(sources) + "\n")
    prepare("sd", raw, tmp_path / "out")
    test = tmp_path / "out" / "test"

    data = KaldiData(str(test))  # s3prl's own reader of the prepared folder
    assert rate == 16000 and data.reco2dur[mix_id] == 30.0
    assert sorted(data.spk2utt) == ["90", "91"] and len(data.segments[mix_id]) == len(reference_lines)
    (tmp_path / "reference.rttm").write_bytes(pyannote_sample["rttm"])
    reference = {mix_id: read_rttm(tmp_path / "reference.rttm")["sample"]}
    prepared = read_rttm(test / "rttm")
    durations = read_reco2dur(test / "reco2dur")
    assert diarization_error_rate(reference, prepared, durations) == pytest.approx(0.0, abs=1e-9)
    one_speaker = {mix_id: prepared[mix_id].subset(["90"])}  # speaker 91's turns missed
    missed = sum(s.duration for s, _, label in reference[mix_id].itertracks(yield_label=True) if label == "speaker91")
    total = sum(s.duration for s, _ in reference[mix_id].itertracks())
    assert diarization_error_rate(reference, one_speaker, durations) == pytest.approx(missed / total, abs=1e-6)


def test_a_second_preparation_into_a_held_folder_is_refused(tmp_path: Path) -> None:
    """Two preparations into one --out interleaved their files; the second now stops at once (issue 24's lock)."""
    from downstream_probes.corpora.prepare import prepare
    from upstream_mrhubert.output_folder import FolderLocked, folder_lock

    out = tmp_path / "prepared"
    with folder_lock(out), pytest.raises(FolderLocked, match=r"in use by another run .*--out"):
        prepare("ic", tmp_path / "raw", out)
    assert sorted(p.name for p in out.iterdir()) == [".run.lock"]
