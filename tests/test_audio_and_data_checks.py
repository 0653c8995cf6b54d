"""Broken corpora reaching run_downstream.py (issue 14, item 5 and the corpus errors): one clear error naming the file.

Audio: every read checks the sample rate, the channels, the length and that the samples are finite
(``downstream_probes.audio.read_audio``, which s3prl's datasets reach through ``torchaudio.load``). The
Fluent Speech Commands CSVs (IC) are checked before the upstream is built: columns, complete rows, labels seen in
training, readable audio.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from downstream_probes.audio import AudioError, CorpusInputError, read_audio
from downstream_probes.data_checks import check_corpus


def _write(path: Path, samples: np.ndarray, rate: int = 16000, subtype: str | None = None) -> Path:
    soundfile.write(str(path), samples, rate, subtype=subtype)
    return path


@pytest.fixture
def clips(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    good = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    nan = good.copy()
    nan[100] = np.nan
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    return {
        "good": _write(tmp_path / "good.wav", good),
        "rate_8k": _write(tmp_path / "rate_8k.wav", good, rate=8000),
        "stereo": _write(tmp_path / "stereo.wav", np.stack([good, good], axis=1)),
        "empty": _write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32)),
        "short": _write(tmp_path / "short.wav", good[:100]),
        "nan": _write(tmp_path / "nan.wav", nan, subtype="FLOAT"),
        "garbage": garbage,
    }


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        ("rate_8k", r"8000 Hz.*16000"),
        ("stereo", r"2 channels"),
        ("empty", r"(no samples|too short)"),
        ("short", r"100 samples.*too short"),
        ("nan", r"NaN|infinite"),
        ("garbage", r"not a readable audio file"),
    ],
)
def test_bad_audio_is_named(clips: dict[str, Path], clip: str, message: str) -> None:
    with pytest.raises(AudioError, match=rf"{clips[clip].name}.*{message}"):
        read_audio(clips[clip])


def test_good_audio_reads(clips: dict[str, Path]) -> None:
    samples, rate = read_audio(clips["good"])
    assert rate == 16000 and samples.shape == (1, 8000) and samples.dtype == np.float32


@pytest.mark.parametrize("clip", ["rate_8k", "stereo", "short", "garbage"])
def test_s3prl_datasets_read_through_the_checked_reader(clips: dict[str, Path], clip: str) -> None:
    """s3prl's IC/ASR/SF datasets call torchaudio.load; the compatibility layer routes it through read_audio."""
    import torchaudio

    from downstream_probes.s3prl import compat

    compat.apply()
    with pytest.raises(AudioError, match=clips[clip].name):
        torchaudio.load(str(clips[clip]))
    waveform, rate = torchaudio.load(str(clips["good"]))
    assert tuple(waveform.shape) == (1, 8000) and rate == 16000


# --------------------------------------------------------------------------------------------------------------
# the Fluent Speech Commands CSVs (IC)


@pytest.fixture
def fsc(tmp_path: Path) -> Path:
    from conftest import write_tiny_fluent_commands

    return write_tiny_fluent_commands(tmp_path / "fsc")


def _ic(root: Path) -> dict:
    return {"datarc": {"file_path": str(root)}}


def test_a_good_ic_corpus_passes(fsc: Path) -> None:
    check_corpus("ic", _ic(fsc))


def test_missing_column_is_named(fsc: Path) -> None:
    csv = fsc / "data" / "valid_data.csv"
    csv.write_text(csv.read_text().replace(",location", ",place"))
    with pytest.raises(CorpusInputError, match=r"valid_data\.csv.*location"):
        check_corpus("ic", _ic(fsc))


def test_label_unseen_in_training_is_named(fsc: Path) -> None:
    csv = fsc / "data" / "test_data.csv"
    lines = csv.read_text().splitlines()
    lines[2] = lines[2].replace("lights", "heating")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusInputError, match=r"test_data\.csv.*line 3.*object.*'heating'.*train_data\.csv"):
        check_corpus("ic", _ic(fsc))


def test_truncated_csv_is_reported_as_truncated(fsc: Path) -> None:
    csv = fsc / "data" / "train_data.csv"
    csv.write_bytes(csv.read_bytes()[:-25])
    with pytest.raises(CorpusInputError, match=r"train_data\.csv.*(truncated|incomplete)"):
        check_corpus("ic", _ic(fsc))


@pytest.mark.parametrize("clip", ["rate_8k", "stereo", "short", "garbage"])
def test_bad_wav_inside_the_corpus_is_named(fsc: Path, clips: dict[str, Path], clip: str) -> None:
    shutil.copyfile(clips[clip], fsc / "wavs" / "valid_2.wav")
    with pytest.raises(AudioError, match=r"valid_2\.wav"):
        check_corpus("ic", _ic(fsc))


def test_missing_wav_is_named(fsc: Path) -> None:
    (fsc / "wavs" / "test_1.wav").unlink()
    with pytest.raises(CorpusInputError, match=r"test_1\.wav.*(not found|does not exist)"):
        check_corpus("ic", _ic(fsc))


@pytest.mark.slow
def test_an_8khz_wav_stops_training_with_the_file_named(
    fsc: Path, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from downstream_probes.paths import recipes_dir
    from downstream_probes.s3prl import run_downstream
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    shutil.copyfile(clips["rate_8k"], fsc / "wavs" / "train_3.wav")
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    status = run_downstream.main(
        ["-m", "train", "-u", "mrhubert_local", "-k", str(checkpoint), "-d", "ic",
         "-c", str(recipes_dir() / "quick" / "ic" / "config.yaml"), "-p", str(tmp_path / "exp"), "--device", "cpu",
         "-o", f"config.downstream_expert.datarc.file_path={fsc},,config.runner.total_steps=1"]
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert "train_3.wav" in err and "8000 Hz" in err
    assert not (tmp_path / "exp" / "results.json").exists()


def test_speech_commands_reads_through_the_checked_reader(clips: dict[str, Path]) -> None:
    """KS reads with SoX effects that convert rate and channels themselves: those are allowed, damage is not."""
    from downstream_probes.s3prl.compat.sox_effects import apply_effects_file

    effects = [["channels", "1"], ["rate", "16000"]]
    for clip in ("garbage", "nan", "short"):
        with pytest.raises(AudioError, match=clips[clip].name):
            apply_effects_file(clips[clip], effects)
    converted, rate = apply_effects_file(clips["rate_8k"], effects)
    assert rate == 16000 and converted.shape == (1, 16000)
