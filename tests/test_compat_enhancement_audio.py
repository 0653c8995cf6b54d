"""SE: s3prl's enhancement dataset reads through the one checked audio reader once the fixes are applied."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from downstream_probes.audio import AudioError
from downstream_probes.s3prl import compat


def test_enhancement_dataset_audio_is_checked(tmp_path: Path) -> None:
    compat.for_s3prl.check_enhancement_audio()
    compat.for_s3prl.check_enhancement_audio()  # idempotent
    import s3prl.downstream.enhancement_stft.dataset as dataset

    good, wrong_rate, stereo = tmp_path / "good.wav", tmp_path / "8k.wav", tmp_path / "stereo.wav"
    soundfile.write(good, np.full(16000, 0.1, dtype="float32"), 16000)
    soundfile.write(wrong_rate, np.zeros(8000, dtype="float32"), 8000)
    soundfile.write(stereo, np.zeros((16000, 2), dtype="float32"), 16000)
    samples, rate = dataset.librosa.load(str(good), sr=16000)
    assert rate == 16000 and samples.shape == (16000,) and np.allclose(samples, 0.1, atol=1e-3)  # 16-bit PCM
    with pytest.raises(AudioError, match="8k.wav"):
        dataset.librosa.load(str(wrong_rate), sr=16000)
    with pytest.raises(AudioError, match="stereo.wav"):
        dataset.librosa.load(str(stereo), sr=16000)
    assert dataset.librosa.stft is __import__("librosa").stft  # the rest of librosa is librosa's
