"""The MR-HuBERT building blocks against torch's reference operations, and the fairseq key translation."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from upstream_mrhubert.checkpoints import keys as fairseq_keys
from upstream_mrhubert.checkpoints.io import CheckpointError
from upstream_mrhubert.components import FeatureExtractor, PositionalConv, SamplerConv
from upstream_mrhubert.config import MultiresHubertConfig
from upstream_mrhubert.model import MultiresHubert, Regularization, frame_padding_mask, normalize_waveforms
from upstream_mrhubert.testing.tiny import tiny_config

STANDARD_CNN = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("mode", ["default", "layer_norm"])
@pytest.mark.parametrize("bias", [False, True])
def test_feature_extractor_against_torch_functional(mode: str, bias: bool) -> None:
    extractor = FeatureExtractor(STANDARD_CNN, mode=mode, bias=bias)
    with torch.no_grad():
        for parameter in extractor.parameters():
            if parameter.dim() == 1:
                parameter.normal_(0.0, 0.5)
        waveforms = torch.randn(3, 9000) + 0.3  # an offset, so the GroupNorm mean matters
        x = waveforms[:, None]
        for index, layer in enumerate(extractor.conv_layers):
            x = F.conv1d(x, layer.conv.weight, layer.conv.bias, stride=layer.stride)
            if mode == "layer_norm":
                x = F.layer_norm(x.transpose(1, 2), (x.size(1),), layer.norm.weight, layer.norm.bias).transpose(1, 2)
            elif index == 0:
                x = F.group_norm(x, x.size(1), layer.norm.weight, layer.norm.bias)
            x = F.gelu(x)
        out = extractor(waveforms)
    assert out.shape == (3, extractor.output_length(9000), 32)
    torch.testing.assert_close(out, x.transpose(1, 2), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="receptive field"):
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
    """With gradients enabled the positional weight is folded per call; the states are the same."""
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


def test_positional_convolution_is_torchs_weight_normed_conv() -> None:
    ours = PositionalConv(64, 16, 4)
    reference = nn.utils.parametrizations.weight_norm(nn.Conv1d(64, 64, 16, padding=8, groups=4), dim=2)
    with torch.no_grad():
        ours.weight_g.uniform_(0.5, 2.0)
        ours.bias.normal_()
        reference.parametrizations.weight.original0.copy_(ours.weight_g)
        reference.parametrizations.weight.original1.copy_(ours.weight_v)
        reference.bias.copy_(ours.bias)
    x = torch.randn(2, 50, 64)
    expected = F.gelu(reference(x.transpose(1, 2))[:, :, :-1]).transpose(1, 2)  # SamePad: even kernel
    torch.testing.assert_close(ours(x), expected, rtol=0, atol=1e-6)
    ours(x).sum().backward()  # gradients reach weight norm's two parameters
    assert ours.weight_g.grad is not None and ours.weight_v.grad is not None


def test_positional_convolution_folds_its_weight_once_without_gradients() -> None:
    conv = PositionalConv(32, 8, 4)
    with torch.no_grad():
        first = conv.weight()
        assert conv.weight() is first  # not recomputed per call
        conv.weight_g.mul_(2.0)  # an optimiser step or a load changes the parameters in place
        second = conv.weight()
    assert second is not first
    torch.testing.assert_close(second, 2.0 * first)


def test_positional_convolution_state_dict_holds_the_folded_weight() -> None:
    conv = PositionalConv(32, 8, 4)
    state = conv.state_dict()
    assert sorted(state) == ["bias", "weight"]
    with torch.no_grad():
        torch.testing.assert_close(state["weight"], conv.weight())
    other = PositionalConv(32, 8, 4)
    other.load_state_dict(state, strict=True)
    x = torch.randn(1, 20, 32)
    with torch.no_grad():
        torch.testing.assert_close(other(x), conv(x), rtol=0, atol=1e-6)


def _with_dropouts(regularization: Regularization) -> MultiresHubert:
    torch.manual_seed(0)
    model_cfg, task_cfg = tiny_config("base_2res")
    return MultiresHubert(MultiresHubertConfig.from_fairseq(model_cfg, task_cfg), regularization=regularization)


def test_dropouts_act_only_in_training() -> None:
    plain = _with_dropouts(Regularization(0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    noisy = _with_dropouts(Regularization(0.3, 0.3, 0.3, 0.0, 0.3, 0.3))
    waveforms = torch.randn(2, 4000)
    with torch.no_grad():
        expected = [state.features for state in plain.eval()(waveforms)]
        for state, reference in zip(noisy.eval()(waveforms), expected, strict=True):
            torch.testing.assert_close(state.features, reference, rtol=0, atol=0)
        for state, reference in zip(plain.train()(waveforms), expected, strict=True):  # no dropout: same in train
            torch.testing.assert_close(state.features, reference, rtol=0, atol=1e-6)
        trained = noisy.train()(waveforms)
    assert not torch.allclose(trained[-1].features, expected[-1])


def test_layerdrop_skips_layers_in_training() -> None:
    model = _with_dropouts(Regularization(0.0, 0.0, 0.0, 1.0, 0.0, 0.0)).train()  # every layer skipped
    with torch.no_grad():
        states = {state.name: state.features for state in model(torch.randn(1, 4000))}
    torch.testing.assert_close(states["T1"], states["T0"])  # T1 = T0 when layer 0 is skipped
    model.eval()
    with torch.no_grad():
        states = {state.name: state.features for state in model(torch.randn(1, 4000))}
    assert not torch.allclose(states["T1"], states["T0"])


def test_regularization_from_fairseq_cfg() -> None:
    read = Regularization.from_fairseq({"dropout": 0.2, "encoder_layerdrop": "0.05", "attention_dropout": None})
    assert read == replace(Regularization(), dropout=0.2, encoder_layerdrop=0.05)
    with pytest.raises(CheckpointError, match="activation_dropout"):
        Regularization.from_fairseq({"activation_dropout": 1.5})
    model = MultiresHubert.from_config({**tiny_config("base_2res")[0], "dropout": 0.25})
    assert model.regularization.dropout == 0.25
    assert model.encoders[0].layers[0].dropout.p == 0.25


def test_encode_gives_fairseqs_resolution_outputs() -> None:
    """encode's outputs are the named states after the residual sums, highest resolution first, and masked
    positions follow the samplers like the padding mask."""
    for preset, last_states in (("base_2res", ["T12+res", "T8+res"]), ("3res_32223", ["T12+res", "T10+res", "T7+res"])):
        model = MultiresHubert.from_config(*tiny_config(preset)).eval()
        waveforms = torch.randn(2, 8000)
        padding = torch.zeros_like(waveforms, dtype=torch.bool)
        padding[1, 5000:] = True
        with torch.no_grad():
            features = model.conv_features(waveforms, padding)
            frame_mask = model.frame_padding_mask(padding, features.size(1))
            masked = torch.zeros(2, features.size(1), dtype=torch.bool)
            masked[:, 3:9] = True
            out = model.encode(
                model.project_features(features), frame_mask, mask_indices=masked, include_block_outputs=True
            )
            states = {state.name: state for state in out.states}
            assert [state.name for state in out.states] == model.layer_names(include_block_outputs=True)
            assert len(out.resolution_outputs) == model.config.num_resolutions
            for output, padding_mask, indices, name in zip(
                out.resolution_outputs, out.padding_masks, out.mask_indices, last_states, strict=True
            ):
                torch.testing.assert_close(output, states[name].features, rtol=0, atol=0)
                assert padding_mask is not None and padding_mask.shape == output.shape[:2]
                assert indices is not None and indices.shape[0] == 2 and indices.shape[1] >= output.size(1) - 1
                assert indices.any()
