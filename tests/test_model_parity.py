"""Our MR-HuBERT against s3prl's copy of fairseq's model, on tiny random checkpoints written in fairseq's format.

s3prl's ``MultiresHubertModel`` (installed s3prl, used here only) is built from the same file through s3prl's own
config merging and a strict ``load_state_dict``; its states are collected with forward hooks the way s3prl's
MR-HuBERT expert collects them (every transformer layer's input, then every block's output). For 3 resolutions
s3prl's two upsamplers are swapped into fairseq's order (s3prl indexes ``upsample_modules[i]``, fairseq
``[levels-1-i]``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from upstream_mrhubert.checkpoints.io import (
    CheckpointError,
    LoadedCheckpoint,
    load_checkpoint,
    write_fairseq_checkpoint,
)
from upstream_mrhubert.checkpoints.keys import is_training_only
from upstream_mrhubert.config import MultiresHubertConfig
from upstream_mrhubert.layer_names import LayerState
from upstream_mrhubert.model import MultiresHubert
from upstream_mrhubert.testing.tiny import PRESETS, tiny_config, write_tiny_checkpoint

TOLERANCE = 1e-4
LENGTHS = (16000, 12345, 9000)  # a padded batch: three utterances of different lengths


pytestmark = pytest.mark.usefixtures("single_torch_thread")


BASE_NAMES = ["T0", "T1", "T2", "T3", "T4", "D0", "T5", "T6", "T7", "T8", "U0", "T9", "T10", "T11", "T12"]
EXPECTED_NAMES = {
    "base_2res": BASE_NAMES,
    "large_2res": [f"T{i}" for i in range(9)]
    + ["D0"]
    + [f"T{i}" for i in range(9, 17)]
    + ["U0"]
    + [f"T{i}" for i in range(17, 25)],
    "single_prediction": BASE_NAMES,
    "plain_samplers": BASE_NAMES,
    "mono_resolution": BASE_NAMES,
    "3res_32223": [
        "T0",
        "T1",
        "T2",
        "T3",
        "D0",
        "T4",
        "T5",
        "D1",
        "T6",
        "T7",
        "U0",
        "T8",
        "T9",
        "T10",
        "U1",
        "T11",
        "T12",
    ],
    "3res_22422": [
        "T0",
        "T1",
        "T2",
        "D0",
        "T3",
        "T4",
        "D1",
        "T5",
        "T6",
        "T7",
        "T8",
        "U0",
        "T9",
        "T10",
        "U1",
        "T11",
        "T12",
    ],
    "single_block": [f"T{i}" for i in range(13)],
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mrhubert_tiny")
    return {preset: write_tiny_checkpoint(folder / f"{preset}.pt", preset) for preset in PRESETS}


def _waveforms() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [0.1 * torch.randn(length, generator=generator) for length in LENGTHS]


def _padded(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([wav.numel() for wav in wavs])
    mask = torch.arange(int(lengths.max()))[None, :] >= lengths[:, None]
    return pad_sequence(wavs, batch_first=True), mask


def _s3prl_model(loaded: LoadedCheckpoint, *, fairseq_order: bool = True) -> nn.Module:
    from s3prl.upstream.multires_hubert.hubert_model import (
        MultiresHubertConfig as S3prlConfig,
    )
    from s3prl.upstream.multires_hubert.hubert_model import (
        MultiresHubertModel,
        MultiresHubertPretrainingConfig,
    )
    from s3prl.upstream.utils import merge_with_parent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's old weight_norm API in s3prl
        model = MultiresHubertModel(
            merge_with_parent(S3prlConfig, loaded.model_cfg),
            merge_with_parent(MultiresHubertPretrainingConfig, loaded.task_cfg),
            loaded.dictionaries_symbols,
        )
    model.load_state_dict(loaded.state_dict, strict=True)
    if fairseq_order:
        model.upsample_modules = nn.ModuleList(reversed(list(model.upsample_modules)))
    return model.train(False)


def _s3prl_states(
    model: nn.Module,
    wavs: list[torch.Tensor],
    *,
    normalize: bool,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Layer inputs and block outputs in execution order, as s3prl's expert hooks them, and the final mask."""
    recorded: list[torch.Tensor] = []
    handles = []
    for block in [*model.encoders, model.middle_encoder, *model.decoders]:
        for layer in block.layers:
            handles.append(layer.register_forward_hook(lambda m, i, o: recorded.append(i[0].transpose(0, 1))))
        handles.append(block.register_forward_hook(lambda m, i, o: recorded.append(o[0])))
    if normalize:
        wavs = [F.layer_norm(wav, wav.shape) for wav in wavs]
    padded, mask = _padded(wavs)
    try:
        with torch.no_grad():
            _, final_mask = model.extract_features(padded, padding_mask=mask, mask=False)
    finally:
        for handle in handles:
            handle.remove()
    return recorded, final_mask


def _ours(path: Path, **kwargs: bool) -> MultiresHubert:
    return MultiresHubert.from_checkpoint(load_checkpoint(path), **kwargs)


def _run(model: MultiresHubert, wavs: list[torch.Tensor], **kwargs: bool) -> list[LayerState]:
    with torch.no_grad():
        return model(*_padded(wavs), **kwargs)


def _max_difference(ours: list[LayerState], reference: list[torch.Tensor]) -> dict[str, float]:
    assert len(ours) == len(reference)
    differences = {}
    for state, expected in zip(ours, reference, strict=False):
        frames = state.features.size(1)
        assert expected.size(1) - frames in (0, 1)  # s3prl's layer inputs keep the pad-to-even frame
        differences[state.name] = float((state.features - expected[:, :frames]).abs().max())
    return differences


@pytest.mark.parametrize("preset", PRESETS)
def test_every_state_matches_s3prl(checkpoints: dict[str, Path], preset: str) -> None:
    loaded = load_checkpoint(checkpoints[preset])
    wavs = _waveforms()
    reference, reference_mask = _s3prl_states(_s3prl_model(loaded), wavs, normalize=bool(loaded.task_cfg["normalize"]))
    ours = _run(MultiresHubert.from_checkpoint(loaded), wavs, include_block_outputs=True)
    paper_states = [state for state in ours if not state.name.endswith("+res")]

    assert [state.name for state in paper_states] == EXPECTED_NAMES[preset]
    differences = _max_difference(paper_states, reference)
    assert max(differences.values()) <= TOLERANCE, differences
    assert torch.equal(ours[-1].padding_mask, reference_mask)  # the model's final mask, as fairseq returns it
    for state in ours:
        assert state.padding_mask is not None and state.padding_mask.shape == state.features.shape[:2]
        assert not state.padding_mask[0].any() and state.padding_mask[2].any()  # longest unpadded, shortest padded


def test_s3prl_upsampler_order_differs_for_three_resolutions(checkpoints: dict[str, Path]) -> None:
    """Guard that the 3-resolution comparison really depends on the upsampler order."""
    loaded = load_checkpoint(checkpoints["3res_22422"])
    wavs = _waveforms()
    s3prl_order, _ = _s3prl_states(_s3prl_model(loaded, fairseq_order=False), wavs, normalize=False)
    differences = _max_difference(_run(MultiresHubert.from_checkpoint(loaded), wavs), s3prl_order)
    names = EXPECTED_NAMES["3res_22422"]
    assert max(differences[name] for name in names[: names.index("U0")]) <= TOLERANCE
    assert min(differences[name] for name in names[names.index("U0") :]) > 1e-3


def test_pre_residual_changes_only_the_decoders(checkpoints: dict[str, Path]) -> None:
    for preset in ("base_2res", "3res_32223"):
        wavs = _waveforms()
        post = _run(_ours(checkpoints[preset]), wavs)
        pre = _run(_ours(checkpoints[preset], pre_residual=True), wavs)
        assert [s.name for s in pre] == [s.name for s in post] == EXPECTED_NAMES[preset]
        first_decoder = EXPECTED_NAMES[preset].index("U0")
        for index, (a, b) in enumerate(zip(post, pre, strict=False)):
            if index < first_decoder:
                assert torch.equal(a.features, b.features), a.name
            else:
                frames = min(a.features.size(1), b.features.size(1))  # the skip sum crops to the shorter
                assert (a.features[:, :frames] - b.features[:, :frames]).abs().max() > 1e-3, a.name


def test_block_output_names_and_values(checkpoints: dict[str, Path]) -> None:
    model = _ours(checkpoints["3res_22422"])
    expected = [
        "T0",
        "T1",
        "T2",
        "D0",
        "T3",
        "T4",
        "D1",
        "T5",
        "T6",
        "T7",
        "T8",
        "T8+res",
        "U0",
        "T9",
        "T10",
        "T10+res",
        "U1",
        "T11",
        "T12",
        "T12+res",
    ]
    assert model.layer_names(include_block_outputs=True) == expected
    assert model.layer_names() == EXPECTED_NAMES["3res_22422"]
    states = {s.name: s for s in _run(model, _waveforms(), include_block_outputs=True)}
    assert list(states) == expected
    # The decoder's true output adds the skip from the encoder of the same resolution, over the shorter length.
    for block_output, skip in (("T12", "T2"), ("T10", "T4")):
        frames = states[f"{block_output}+res"].features.size(1)
        expected_sum = states[block_output].features[:, :frames] + states[skip].features[:, :frames]
        torch.testing.assert_close(states[f"{block_output}+res"].features, expected_sum)
    pre = _ours(checkpoints["3res_22422"], pre_residual=True)
    assert [n for n in pre.layer_names(include_block_outputs=True) if n.endswith("+res")] == ["T8+res"]
    single = _ours(checkpoints["single_block"])
    assert single.layer_names(include_block_outputs=True) == EXPECTED_NAMES["single_block"] + ["T12+res"]


@pytest.mark.parametrize(
    ("preset", "strides"),
    [
        ("base_2res", {"T0": 320, "T4": 320, "D0": 640, "T8": 640, "U0": 320, "T12": 320}),
        (
            "3res_22422",
            {"T2": 320, "D0": 640, "T4": 640, "D1": 1280, "T8": 1280, "U0": 640, "T10": 640, "U1": 320, "T12": 320},
        ),
        ("mono_resolution", dict.fromkeys(BASE_NAMES, 320)),
    ],
)
def test_native_strides(checkpoints: dict[str, Path], preset: str, strides: dict[str, int]) -> None:
    states = {s.name: s for s in _run(_ours(checkpoints[preset]), _waveforms())}
    frames_at_320 = states["T0"].features.size(1)
    for name, stride in strides.items():
        assert states[name].stride == stride, name
        # ceil at every halving, and upsampling doubles that
        assert 0 <= states[name].features.size(1) - frames_at_320 * 320 // stride <= 2, name


def test_without_padding_mask(checkpoints: dict[str, Path]) -> None:
    model = _ours(checkpoints["base_2res"])
    wav = _waveforms()[:1]
    unmasked = _run(model, wav)  # _padded gives an all-False mask for one utterance
    with torch.no_grad():
        no_mask = model(wav[0][None])
    assert all(state.padding_mask is None for state in no_mask)
    for a, b in zip(unmasked, no_mask, strict=False):
        torch.testing.assert_close(a.features, b.features, rtol=0, atol=1e-5)


def test_sampler_kernel_is_read_from_the_weights(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    loaded = load_checkpoint(checkpoints["base_2res"])
    model_cfg = {k: v for k, v in loaded.model_cfg.items() if k != "conv_adapator_kernal"}  # fairseq default: 7
    path = write_fairseq_checkpoint(
        tmp_path / "k.pt",
        model_cfg=model_cfg,
        task_cfg=loaded.task_cfg,
        state_dict=loaded.state_dict,
        dictionaries_symbols=loaded.dictionaries_symbols,
    )
    model = _ours(path)
    assert MultiresHubertConfig.from_fairseq(model_cfg).sampler_kernel_size == 7
    assert model.config.sampler_kernel_size == 1
    for a, b in zip(_run(model, _waveforms()), _run(_ours(checkpoints["base_2res"]), _waveforms()), strict=False):
        assert torch.equal(a.features, b.features)


def test_fairseq_state_dict_round_trip(checkpoints: dict[str, Path]) -> None:
    for preset in ("base_2res", "large_2res", "plain_samplers"):
        loaded = load_checkpoint(checkpoints[preset])
        model = MultiresHubert.from_checkpoint(loaded)
        exported = model.fairseq_state_dict()
        assert set(exported) == {key for key in loaded.state_dict if not is_training_only(key)}
        config = MultiresHubertConfig.from_fairseq(loaded.model_cfg, loaded.task_cfg)
        again = MultiresHubert.from_fairseq_state_dict(config, exported)
        for a, b in zip(_run(model, _waveforms()), _run(again, _waveforms()), strict=False):
            torch.testing.assert_close(a.features, b.features, rtol=0, atol=1e-5)


def test_mismatched_weights_give_one_clear_error(checkpoints: dict[str, Path]) -> None:
    loaded = load_checkpoint(checkpoints["base_2res"])
    config = MultiresHubertConfig.from_fairseq(loaded.model_cfg, loaded.task_cfg)
    missing = {k: v for k, v in loaded.state_dict.items() if k != "encoders.0.layers.1.fc1.weight"}
    with pytest.raises(CheckpointError, match=r"ckpt\.pt.*missing encoders\.0\.layers\.1\.fc1\.weight"):
        MultiresHubert.from_fairseq_state_dict(config, missing, source="ckpt.pt")
    extra = {**loaded.state_dict, "encoders.0.extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"unexpected encoders\.0\.extra\.weight"):
        MultiresHubert.from_fairseq_state_dict(config, extra)
    wider = MultiresHubertConfig.from_fairseq({**loaded.model_cfg, "encoder_ffn_embed_dim": 128}, loaded.task_cfg)
    with pytest.raises(CheckpointError, match="wrong shape"):
        MultiresHubert.from_fairseq_state_dict(wider, loaded.state_dict)


def test_config_parsing() -> None:
    model_cfg, task_cfg = tiny_config("3res_32223")
    config = MultiresHubertConfig.from_fairseq(model_cfg, task_cfg)
    assert config.layer_counts == (3, 2, 2, 3, 2)  # decoders[i] take override[len-1-i]
    assert config.resolution_strides == (320, 640, 1280)
    as_text = MultiresHubertConfig.from_fairseq({**model_cfg, "label_rate_ratios": "[1, 2, 1, 2]"})
    assert as_text.label_rate_ratios == ((1, 2), (1, 2))
    default = MultiresHubertConfig.from_fairseq({"label_rate_ratios": [1, 2], "unknown_key": 1})
    assert default.layer_counts == (2, 2, 2) and default.embed_dim == 768  # fairseq's defaults ("2" as text)
    with pytest.raises(CheckpointError, match="override_encoder_layers"):
        MultiresHubertConfig.from_fairseq({**model_cfg, "override_encoder_layers": "[4,4,4]"})
    with pytest.raises(CheckpointError, match="label_rate_ratios"):
        MultiresHubertConfig.from_fairseq({**model_cfg, "label_rate_ratios": [1, 2, 1]})
    with pytest.raises(CheckpointError, match="layer_type"):
        MultiresHubertConfig.from_fairseq({**model_cfg, "layer_type": "conformer"})


def test_block_without_layers_matches_s3prl(tmp_path: Path) -> None:
    """fairseq builds a block with 0 layers (override_encoder_layers "[4,0,4]"): its output (the LayerNorm of the
    downsampled frames) is the only state after the downsampling, so it takes the name D0."""
    from upstream_mrhubert.testing.tiny import tiny_dictionaries, tiny_state_dict

    model_cfg, task_cfg = tiny_config("base_2res")
    model_cfg["override_encoder_layers"] = "[4,0,4]"
    dictionaries = tiny_dictionaries(model_cfg)
    path = write_fairseq_checkpoint(
        tmp_path / "empty_middle.pt",
        model_cfg=model_cfg,
        task_cfg=task_cfg,
        state_dict=tiny_state_dict(model_cfg, task_cfg, dictionaries),
        dictionaries_symbols=dictionaries,
    )
    loaded = load_checkpoint(path)
    wavs = _waveforms()
    reference, _ = _s3prl_states(_s3prl_model(loaded), wavs, normalize=False)
    ours = _run(MultiresHubert.from_checkpoint(loaded), wavs)
    assert [s.name for s in ours] == ["T0", "T1", "T2", "T3", "T4", "D0", "U0", "T5", "T6", "T7", "T8"]
    assert max(_max_difference(ours, reference).values()) <= TOLERANCE
