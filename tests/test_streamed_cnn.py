"""The opt-in streamed CNN (upstream option ``cnn_segment_frames``) gives the whole-utterance CNN's frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from upstream_mrhubert import hub
from upstream_mrhubert.components import FeatureExtractor
from upstream_mrhubert.precision import BF16_RELATIVE_ERROR_BOUND, autocast
from upstream_mrhubert.streamed_cnn import streamed_features
from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

STANDARD_CNN = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("mode", ["default", "layer_norm"])
@pytest.mark.parametrize("segment_frames", [1, 7, 50, 1000])
def test_streamed_features_equal_the_whole_utterance_cnn(mode: str, segment_frames: int) -> None:
    extractor = FeatureExtractor(STANDARD_CNN, mode=mode, bias=True)
    with torch.no_grad():
        for parameter in extractor.parameters():
            if parameter.dim() == 1:
                parameter.normal_(0.0, 0.5)
        waveforms = torch.randn(3, 9000) + 0.3  # an offset, so the GroupNorm mean matters
        for length in (400, 719, 9000):
            expected = extractor(waveforms[:, :length])
            streamed = streamed_features(extractor, waveforms[:, :length], segment_frames)
            assert streamed.shape == expected.shape
            torch.testing.assert_close(streamed, expected, rtol=0, atol=2e-5)
        with pytest.raises(ValueError, match="receptive field"):
            streamed_features(extractor, waveforms[:, :399], segment_frames)


def test_streamed_features_under_bf16_autocast() -> None:
    extractor = FeatureExtractor(STANDARD_CNN)
    waveforms = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        expected = extractor(waveforms)
        with autocast("bf16", "cpu"):
            streamed = streamed_features(extractor, waveforms, 10).float()
    assert float((streamed - expected).norm() / expected.norm()) <= BF16_RELATIVE_ERROR_BOUND


def test_streamed_cnn_as_an_upstream_option(tmp_path: Path) -> None:
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt", "base_2res")
    config = tmp_path / "streamed.yaml"
    config.write_text("cnn_segment_frames: 8\n")
    plain = hub.build_upstream("mrhubert_local", ckpt=checkpoint)
    streamed = hub.build_upstream("mrhubert_local", ckpt=checkpoint, model_config=config)
    assert streamed.model.cnn_segment_frames == 8
    wavs = [torch.randn(9000) * 0.1, torch.randn(6000) * 0.1]
    with torch.no_grad():
        for ours, expected in zip(streamed(wavs)["hidden_states"], plain(wavs)["hidden_states"], strict=True):
            torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="cnn_segment_frames must be a positive integer"):
        hub.build_upstream("mrhubert_local", ckpt=checkpoint, cnn_segment_frames=0)
