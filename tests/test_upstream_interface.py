"""The s3prl upstream interface: input checks, 20 ms alignment, layer names, native access, s3prl's Featurizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from downstream_probes.cli import main as mrsuperb
from upstream_mrhubert.hub import hubert_base_ls960, mrhubert_local
from upstream_mrhubert.layer_names import LayerState
from upstream_mrhubert.testing.tiny import write_tiny_checkpoint
from upstream_mrhubert.testing.tiny_hubert import write_tiny_hubert_checkpoint
from upstream_mrhubert.upstream import S3prlUpstream, WaveformError, align_to_output_rate


@pytest.fixture(scope="module")
def hubert_upstream(tmp_path_factory: pytest.TempPathFactory) -> S3prlUpstream:
    path = write_tiny_hubert_checkpoint(tmp_path_factory.mktemp("upstream") / "tiny_hubert.pt")
    return hubert_base_ls960(ckpt=str(path)).eval()


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one clear error naming the item and what to do


@pytest.mark.parametrize(
    ("wavs", "expected"),
    [
        ([], "empty batch"),
        (torch.zeros(2, 16000), r"list\(batch\)"),
        ([torch.zeros(16000), torch.zeros(2, 16000)], r"waveform 1 .*shape \(2, 16000\).*mono"),
        ([torch.zeros(16000, 2)], r"waveform 0 .*mono"),
        ([torch.zeros(16000), torch.zeros(0)], "waveform 1 of the batch is empty"),
        ([torch.zeros(16000), torch.zeros(399)], "waveform 1 .*399 samples.*400"),
        ([torch.tensor([0.0] * 500 + [float("nan")] + [0.0] * 99)], "waveform 0 .*NaN or inf.*sample 500"),
        ([torch.zeros(600), torch.full((600,), float("inf"))], "waveform 1 .*NaN or inf.*sample 0"),
        ([torch.zeros(16000, dtype=torch.int16)], "waveform 0 .*int16.*float"),
        ([[0.0] * 16000], "waveform 0 .*list.*torch"),
    ],
    ids=[
        "empty-batch",
        "tensor-batch",
        "stereo",
        "stereo-transposed",
        "empty-wav",
        "short",
        "nan",
        "inf",
        "int",
        "list",
    ],
)
def test_bad_input_gets_one_clear_error(hubert_upstream: S3prlUpstream, wavs: object, expected: str) -> None:
    with pytest.raises(WaveformError, match=expected) as caught:
        hubert_upstream(wavs)
    assert isinstance(caught.value, ValueError)


@pytest.mark.slow  # compares with s3prl's own model or synthesises speech
def test_shortest_accepted_input_gives_one_frame(hubert_upstream: S3prlUpstream) -> None:
    wavs = [torch.randn(400), torch.randn(1000)]
    with torch.no_grad():
        states = hubert_upstream(wavs)["hidden_states"]
        native = hubert_upstream.native_states(wavs)
    assert all(state.shape[:2] == (2, 2) for state in states)  # (1000 - 400) // 320 + 1 frames for the longest
    assert native[0].padding_mask.tolist() == [[False, True], [False, False]]


# ---------------------------------------------------------------------------------------------------------------
# 20 ms alignment (s3prl's rule: repeat by stride / 320, crop all to the shortest)


def _state(name: str, frames: int, stride: int) -> LayerState:
    features = torch.arange(frames, dtype=torch.float32).view(1, frames, 1).expand(2, frames, 3).clone()
    return LayerState(name=name, features=features, padding_mask=None, stride=stride)


def test_alignment_repeats_and_crops_like_s3prl() -> None:
    aligned = align_to_output_rate([_state("T0", 11, 320), _state("D0", 5, 640), _state("D1", 3, 1280)])
    assert [state.shape for state in aligned] == [(2, 10, 3)] * 3
    assert aligned[0][0, :, 0].tolist() == list(range(10))
    assert aligned[1][0, :, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert aligned[2][0, :, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_alignment_refuses_strides_s3prl_cannot_align() -> None:
    with pytest.raises(ValueError, match="480"):
        align_to_output_rate([_state("T0", 10, 320), _state("D0", 7, 480)])


# ---------------------------------------------------------------------------------------------------------------
# The interface s3prl uses


def test_output_contract(hubert_upstream: S3prlUpstream) -> None:
    wavs = [torch.randn(16000), torch.randn(8000)]
    with torch.no_grad():
        output = hubert_upstream(wavs)
        native = hubert_upstream.native_states(wavs)
    hidden = output["hidden_states"]
    assert isinstance(hidden, list) and len(hidden) == len(hubert_upstream.layer_names) == 13
    assert hubert_upstream.layer_names == hubert_upstream.model.layer_names() == [state.name for state in native]
    assert output["last_hidden_state"] is hidden[-1]
    assert all(state.shape == (2, 49, 48) for state in hidden)
    assert hubert_upstream.get_downsample_rates("hidden_states") == 320
    assert all(state.stride == 320 for state in native)
    assert native[1].padding_mask is not None and int((~native[1].padding_mask[1]).sum()) == 25
    torch.testing.assert_close(native[5].features, hidden[5])


def test_train_mode_gives_every_state(hubert_upstream: S3prlUpstream) -> None:
    """s3prl fine-tunes (-f) in train mode: dropout on, but no layer may be skipped (no layerdrop)."""
    hubert_upstream.train()
    try:
        for _ in range(2):
            assert len(hubert_upstream([torch.randn(4000)])["hidden_states"]) == 13
    finally:
        hubert_upstream.eval()


@pytest.mark.parametrize("layer_selection", [None, 7])
def test_s3prl_featurizer_accepts_the_upstream(hubert_upstream: S3prlUpstream, layer_selection: int | None) -> None:
    from s3prl.upstream.interfaces import Featurizer

    featurizer = Featurizer(hubert_upstream, upstream_device="cpu", layer_selection=layer_selection)
    assert featurizer.downsample_rate == 320 and featurizer.output_dim == 48
    wavs = [torch.randn(16000), torch.randn(9600)]
    with torch.no_grad():
        features = featurizer(wavs, hubert_upstream(wavs))
    assert [tuple(f.shape) for f in features] == [(49, 48), (30, 48)]  # s3prl crops to round(len / 320)
    if layer_selection is not None:
        with torch.no_grad():
            torch.testing.assert_close(features[1], hubert_upstream(wavs)["hidden_states"][7][1, :30])
    else:
        assert featurizer.weights.shape == (13,)


# ---------------------------------------------------------------------------------------------------------------
# MR-HuBERT through the upstream, against s3prl's own MR-HuBERT upstream on the same converted checkpoint


@pytest.fixture(scope="module")
def mrhubert_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """(fairseq file, s3prl-converted file written by `mrsuperb convert`) per tiny preset."""
    folder = tmp_path_factory.mktemp("mrhubert")
    files = {}
    for preset in ("base_2res", "3res_32223"):
        fairseq_file = write_tiny_checkpoint(folder / f"{preset}.pt", preset)
        converted = folder / f"{preset}.converted.pt"
        assert mrsuperb(["convert", str(fairseq_file), str(converted)]) == 0
        files[preset] = (fairseq_file, converted)
    return files


def _s3prl_multires_states(converted: Path, wavs: list[torch.Tensor], *, fairseq_upsampler_order: bool) -> list:
    from s3prl.upstream.multires_hubert.expert import UpstreamExpert

    expert = UpstreamExpert(str(converted)).eval()  # s3prl's own loader reads our converted file
    if fairseq_upsampler_order:
        # s3prl runs upsample_modules[i] for decoder i; fairseq (and we) run upsample_modules[levels-1-i].
        expert.model.upsample_modules = torch.nn.ModuleList(reversed(list(expert.model.upsample_modules)))
    with torch.no_grad():
        return list(expert(wavs)["hidden_states"])


@pytest.mark.parametrize(
    ("preset", "names"),
    [
        ("base_2res", "T0 T1 T2 T3 T4 D0 T5 T6 T7 T8 U0 T9 T10 T11 T12"),
        ("3res_32223", "T0 T1 T2 T3 D0 T4 T5 D1 T6 T7 U0 T8 T9 T10 U1 T11 T12"),
    ],
)
@pytest.mark.slow  # compares with s3prl's own model or synthesises speech
def test_mrhubert_states_at_20ms_equal_s3prl(
    mrhubert_checkpoints: dict[str, tuple[Path, Path]], preset: str, names: str
) -> None:
    fairseq_file, converted = mrhubert_checkpoints[preset]
    upstream = mrhubert_local(ckpt=str(fairseq_file)).eval()
    wavs = [torch.randn(16000), torch.randn(11111), torch.randn(7000)]
    with torch.no_grad():
        ours = upstream(wavs)["hidden_states"]
    reference = _s3prl_multires_states(converted, wavs, fairseq_upsampler_order=preset.startswith("3res"))

    assert upstream.layer_names == upstream.model.layer_names() == names.split()
    assert len(ours) == len(reference)
    for name, mine, theirs in zip(upstream.layer_names, ours, reference, strict=False):
        assert mine.shape == theirs.shape, name
        assert (mine - theirs).abs().max().item() <= 1e-4, name


@pytest.mark.slow  # compares with s3prl's own model or synthesises speech
def test_native_states_keep_their_rate(mrhubert_checkpoints: dict[str, tuple[Path, Path]]) -> None:
    upstream = mrhubert_local(ckpt=str(mrhubert_checkpoints["3res_32223"][0])).eval()
    wavs = [torch.randn(16000)]
    with torch.no_grad():
        native = {state.name: state for state in upstream.native_states(wavs)}
        aligned = dict(zip(upstream.layer_names, upstream(wavs)["hidden_states"], strict=False))
    assert [native[name].stride for name in ("T0", "D0", "D1", "T7", "U0", "U1", "T12")] == [
        320,
        640,
        1280,
        1280,
        640,
        320,
        320,
    ]
    assert native["T0"].features.shape[1] == 49 and native["D1"].features.shape[1] <= 13
    frames = aligned["T0"].shape[1]
    torch.testing.assert_close(aligned["D1"], native["D1"].features.repeat_interleave(4, dim=1)[:, :frames])
    torch.testing.assert_close(aligned["D0"], native["D0"].features.repeat_interleave(2, dim=1)[:, :frames])


@pytest.mark.slow  # compares with s3prl's own model or synthesises speech
def test_block_outputs_and_pre_residual_options(
    mrhubert_checkpoints: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    fairseq_file = str(mrhubert_checkpoints["base_2res"][0])
    default = mrhubert_local(ckpt=fairseq_file).eval()
    config = tmp_path / "options.yaml"
    config.write_text("include_block_outputs: true\n")
    with_blocks = mrhubert_local(ckpt=fairseq_file, model_config=str(config)).eval()
    assert [name for name in with_blocks.layer_names if name not in default.layer_names] == ["T8+res", "T12+res"]
    wavs = [torch.randn(8000)]
    with torch.no_grad():
        plain, extended = default(wavs)["hidden_states"], with_blocks(wavs)["hidden_states"]
    assert len(extended) == len(with_blocks.layer_names) == len(plain) + 2
    for name, state in zip(default.layer_names, plain, strict=False):
        torch.testing.assert_close(extended[with_blocks.layer_names.index(name)], state)

    pre_residual = mrhubert_local(ckpt=fairseq_file, pre_residual=True).eval()
    assert pre_residual.pre_residual and pre_residual.layer_names == default.layer_names
    with torch.no_grad():
        moved = pre_residual(wavs)["hidden_states"]
    index_u0 = default.layer_names.index("U0")
    torch.testing.assert_close(moved[index_u0 - 1], plain[index_u0 - 1])  # encoder and middle untouched
    assert (moved[-1] - plain[-1]).abs().max() > 1e-3  # the decoder sees a different input


@pytest.mark.slow  # compares with s3prl's own model or synthesises speech
def test_s3prl_featurizer_selects_a_named_layer(mrhubert_checkpoints: dict[str, tuple[Path, Path]]) -> None:
    from s3prl.upstream.interfaces import Featurizer

    upstream = mrhubert_local(ckpt=str(mrhubert_checkpoints["base_2res"][0])).eval()
    index = upstream.layer_names.index("D0")
    featurizer = Featurizer(upstream, upstream_device="cpu", layer_selection=index)
    wavs = [torch.randn(12800)]
    with torch.no_grad():
        (features,) = featurizer(wavs, upstream(wavs))
        native_d0 = next(state for state in upstream.native_states(wavs) if state.name == "D0")
    assert features.shape[0] == 39  # (12800 - 400) // 320 + 1 frames (s3prl would keep up to round(12800 / 320))
    torch.testing.assert_close(features, native_d0.features[0].repeat_interleave(2, dim=0)[:39])
