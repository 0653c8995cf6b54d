"""The MR-HuBERT building blocks against torch's reference operations, and the fairseq key translation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from upstream_mrhubert import fairseq_keys
from upstream_mrhubert.components import (
    FeatureExtractor,
    PositionalConv,
    SamplerConv,
    _ConvMatrices,
    _packed_conv,
)
from upstream_mrhubert.model import MultiresHubert, frame_padding_mask, normalize_waveforms
from upstream_mrhubert.tiny import tiny_config

STANDARD_CNN = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (2, 2), (4, 2), (5, 3), (3, 1)])
@pytest.mark.parametrize("extra", [0, 3, 5, 10, 11, 98])
def test_packed_convolution_matches_conv1d(kernel: int, stride: int, extra: int) -> None:
    length = kernel + extra
    conv = nn.Conv1d(24, 20, kernel, stride=stride, bias=True)
    x = torch.randn(length, 24)
    with torch.no_grad():
        expected = conv(x.T[None])[0].T
        out = _packed_conv(x, _ConvMatrices.of(conv))
    assert out.shape == (length // stride, 20)
    torch.testing.assert_close(out[: expected.size(0)], expected, rtol=0, atol=1e-5)
    assert not out[expected.size(0) :].any()  # rows past the last full window are zero


@pytest.mark.parametrize("mode", ["default", "layer_norm"])
@pytest.mark.parametrize("bias", [False, True])
def test_streamed_feature_extractor_matches_reference_path(mode: str, bias: bool) -> None:
    """The inference path (segments, packed batch, folded GroupNorm, Winograd) against plain Conv1d/GroupNorm."""
    extractor = FeatureExtractor(STANDARD_CNN, mode=mode, bias=bias, chunk_bytes=64 * 1024)  # many segments
    with torch.no_grad():
        for parameter in extractor.parameters():
            if parameter.dim() == 1:
                parameter.normal_(0.0, 0.5)
    waveforms = torch.randn(3, 9000) + 0.3  # an offset, so the GroupNorm mean matters
    for length in (400, 719, 9000):
        expected = extractor(waveforms[:, :length])  # parameters require grad: the reference path
        with torch.no_grad():
            streamed = extractor(waveforms[:, :length])
        assert streamed.shape == expected.shape == (3, extractor.output_length(length), 32)
        torch.testing.assert_close(streamed, expected.detach(), rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="receptive field"), torch.no_grad():
        extractor(waveforms[:, :399])


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_sampler_convolution(kernel: int, transposed: bool) -> None:
    sampler = SamplerConv(16, kernel, 2, transposed=transposed)
    with torch.no_grad():
        sampler.norm.weight.normal_()
        sampler.norm.bias.normal_()
        x = torch.randn(2, 11, 16)
        if transposed:
            y = F.conv_transpose1d(x.transpose(1, 2), sampler.weight, stride=2, output_padding=1)
        else:
            y = F.conv1d(x.transpose(1, 2), sampler.weight, stride=2, padding=(kernel - 1) // 2)
        expected = F.gelu(F.group_norm(y, 1, sampler.norm.weight, sampler.norm.bias)).transpose(1, 2)
        torch.testing.assert_close(sampler(x), expected, rtol=0, atol=1e-5)


def test_weight_norm_folding_matches_torch() -> None:
    conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(8, 8, 5, groups=2), name="weight", dim=2)
    with torch.no_grad():
        conv.parametrizations.weight.original0.uniform_(0.5, 2.0)
        g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
        torch.testing.assert_close(fairseq_keys.fold_weight_norm(g, v), conv.weight)


def test_key_translation_round_trip() -> None:
    for preset in ("base_2res", "large_2res", "plain_samplers"):
        model = MultiresHubert.from_config(*tiny_config(preset))
        ours = model.state_dict()
        fairseq = fairseq_keys.to_fairseq(ours, extractor_mode=model.config.extractor_mode)
        assert "encoders.0.layers.0.self_attn.q_proj.weight" in fairseq
        assert "encoders.0.pos_conv.0.weight_g" in fairseq and "feature_extractor.conv_layers.0.0.weight" in fairseq
        back = fairseq_keys.from_fairseq(
            {**fairseq, "mask_emb": torch.zeros(1), "final_projs.0.weight": torch.zeros(1)}
        )
        assert back.keys() == ours.keys()
        for key in ours:
            torch.testing.assert_close(back[key], ours[key], rtol=1e-6, atol=1e-6)


def test_gradient_path_gives_the_same_states() -> None:
    """With gradients enabled every in-place shortcut is off and the CNN runs its reference layers."""
    model = MultiresHubert.from_config(*tiny_config("base_2res")).eval()
    waveforms = torch.randn(2, 6000)
    mask = torch.zeros_like(waveforms, dtype=torch.bool)
    mask[1, 4000:] = True
    with_grad = model(waveforms, mask)
    assert with_grad[-1].features.requires_grad
    with torch.no_grad():
        without = model(waveforms, mask)
    for a, b in zip(with_grad, without, strict=False):
        torch.testing.assert_close(a.features.detach(), b.features, rtol=0, atol=1e-5)


def test_waveform_normalisation_ignores_padding() -> None:
    waveforms = torch.randn(2, 1000) * 3 + 1
    mask = torch.zeros_like(waveforms, dtype=torch.bool)
    mask[1, 600:] = True
    normalized = normalize_waveforms(waveforms, mask)
    torch.testing.assert_close(normalized[0], F.layer_norm(waveforms[0], (1000,)))
    torch.testing.assert_close(normalized[1, :600], F.layer_norm(waveforms[1, :600], (600,)))
    assert not normalized[1, 600:].any()


def test_frame_padding_mask_follows_fairseq() -> None:
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, 5:] = True  # 10 samples, 3 frames: chunks of 3 samples, the last sample dropped
    assert frame_padding_mask(mask, 3).tolist() == [[False, False, True]]


@pytest.mark.parametrize(("taps", "frames", "block"), [(16, 300, 64), (15, 301, 64), (16, 50, 32), (32, 700, 256)])
def test_positional_convolution_by_fft_matches_direct(taps: int, frames: int, block: int) -> None:
    conv = PositionalConv(64, taps, 4)
    with torch.no_grad():
        conv.bias.normal_()
        x = torch.randn(2, frames, 64)
        torch.testing.assert_close(conv._by_fft(x, block), conv._direct(x), rtol=0, atol=2e-5)


def test_positional_convolution_uses_the_fft_only_where_it_pays() -> None:
    base = PositionalConv(768, 128, 16)
    assert base._fft_block(batch=4, frames=399) == 256  # 8 s of audio: the FFT path
    assert base._fft_block(batch=1, frames=25) is None  # half a second: direct
    x = torch.randn(4, 399, 768)
    with torch.no_grad():  # forward takes the FFT path here
        torch.testing.assert_close(base(x), F.gelu(base._direct(x)), rtol=0, atol=1e-5)
