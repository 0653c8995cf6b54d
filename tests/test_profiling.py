"""The efficiency profile agrees with the architecture.

Tiny look-alikes of mono-base (20/40 ms, 4-4-4), B2-a (20/40/80 ms, 3-2-2-2-3) and B5-a (20 ms, 4-4-4) keep the
paper's layer layout with small widths: the same 12 transformer layers cost fewer FLOPs the more of them run at a
lower frame rate, blocks with the same shapes cost the same, attention is counted (quadratic in frames), the
waveform CNN and the positional convolution cost what their convolutions compute whatever kernels run (and the same
as in the HuBERT baseline), the per-block breakdown adds up to the totals, random weights are labelled, and
profile.json is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from downstream_probes.cli import main as mrsuperb
from downstream_probes.reports import profile as profiling
from upstream_mrhubert.architectures import ARCHITECTURES

WIDTHS = {"embed_dim": 32, "ffn_dim": 64, "heads": 4, "conv_channels": 16}
FRAMES = 104  # 20 ms frames of the clip: even at 20, 40 and 80 ms, so no level pads its input
SECONDS = (320 * (FRAMES - 1) + 400) / 16_000  # the CNN's receptive field is 400 samples, its stride 320
NAMES = ("mrhubert_mono_base", "mrhubert_b2a", "mrhubert_b5a")


@pytest.fixture(scope="module")
def measured() -> dict[str, tuple[profiling.ProfiledModel, dict]]:
    """name -> (the random-init tiny model, its profile entry)."""
    out = {}
    for name in NAMES:
        arch = ARCHITECTURES[name].scaled(**WIDTHS)
        profiled = profiling.profiled_from_architecture(name, arch.model_cfg(), arch.task_cfg(), seed=0)
        out[name] = (profiled, profiling.profile_model(profiled, seconds=SECONDS, repeats=1, seed=0))
    return out


@pytest.fixture(scope="module")
def hubert_measured() -> tuple[profiling.ProfiledModel, dict]:
    """A 2-layer HuBERT baseline (transformers) with the same widths, CNN and positional convolution."""
    arch = ARCHITECTURES["hubert_base_ls960"].scaled(**WIDTHS, layers=(2,))
    hubert = profiling.profiled_from_architecture("hubert", arch.model_cfg(), arch.task_cfg(), seed=0)
    return hubert, profiling.profile_model(hubert, seconds=SECONDS, repeats=1, seed=0)


def block(entry: dict, name: str) -> dict:
    return next(b for b in entry["blocks"] if b["name"] == name)


def transformer_layer_flops(frames: int) -> int:
    """One layer on ``frames`` frames: 2T(4d^2 + 2df) for the projections and the FFN, 4T^2 d for attention."""
    d, f = WIDTHS["embed_dim"], WIDTHS["ffn_dim"]
    return 2 * frames * (4 * d * d + 2 * d * f) + 4 * frames * frames * d


def test_lower_frame_rates_cost_fewer_flops_at_equal_depth(measured) -> None:
    mono, b2a, b5a = (measured[name][1] for name in NAMES)
    assert [sum(e["architecture"]["layers"]) for e in (mono, b2a, b5a)] == [12, 12, 12]
    assert b2a["total"]["flops"] < mono["total"]["flops"] < b5a["total"]["flops"]
    assert mono["total"]["flops_per_second"] == pytest.approx(mono["total"]["flops"] / SECONDS)
    # Identical blocks on identical inputs cost exactly the same.
    assert block(mono, "cnn")["flops"] == block(b2a, "cnn")["flops"] == block(b5a, "cnn")["flops"]
    assert block(mono, "encoders[0]")["flops"] == block(b5a, "encoders[0]")["flops"]
    assert block(mono, "decoders[0]")["flops"] == block(b5a, "decoders[0]")["flops"]
    assert block(b5a, "middle")["flops"] == block(b5a, "decoders[0]")["flops"]  # 4 layers at 20 ms, no pos-conv
    # Half the frames: linear parts halve, attention quarters, so the 40 ms middle costs less than half.
    assert 0.25 * block(b5a, "middle")["flops"] < block(mono, "middle")["flops"] < 0.5 * block(b5a, "middle")["flops"]
    by_resolution = {g["resolution_ms"]: g for g in b2a["resolutions"]}
    assert sorted(by_resolution) == [20.0, 40.0, 80.0] and "middle" in by_resolution[80.0]["blocks"]


def test_transformer_blocks_match_the_layer_formula(measured) -> None:
    """Middle blocks: layers x (2T(4d^2 + 2df) + 4T^2 d) with T the frames it runs on, attention included."""
    for name in NAMES:
        profiled, entry = measured[name]
        with torch.no_grad():
            states = profiled.module(torch.zeros(1, round(SECONDS * profiling.SAMPLE_RATE)))
        assert states[0].features.shape[1] == FRAMES
        strides = profiling.level_strides(ARCHITECTURES[name].scaled(**WIDTHS).model_cfg())
        middle_frames = FRAMES * strides[0] // strides[-1]
        layers = entry["architecture"]["layers"]
        middle_layers = layers[len(layers) // 2]
        assert block(entry, "middle")["flops"] == middle_layers * transformer_layer_flops(middle_frames), name


def test_cnn_flops_are_computed_not_counted_by_kernel() -> None:
    """2 x multiply-adds of each Conv1d layer, by hand for a 3-layer CNN on 400 samples; torch's flop counter
    gives the same on plain Conv1d layers."""
    layers = [(4, 10, 5), (6, 3, 2), (6, 2, 2)]
    # frames 400 -> (400-10)//5+1 = 79 -> (79-3)//2+1 = 39 -> (39-2)//2+1 = 19
    by_hand = 2 * 4 * 1 * 10 * 79 + 2 * 6 * 4 * 3 * 39 + 2 * 6 * 6 * 2 * 19
    assert by_hand == 14_672
    assert profiling.conv_feature_extractor_flops(layers, 400) == by_hand
    assert profiling.conv1d_flops(8, 6, 3, 10, groups=2) == 2 * 6 * 4 * 3 * 10
    convs = torch.nn.Sequential(
        *(
            torch.nn.Conv1d(c_in, c_out, k, stride=s, bias=False)
            for c_in, (c_out, k, s) in zip([1, 4, 6], layers, strict=False)
        )
    )
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        convs(torch.zeros(1, 1, 400))
    assert counter.get_total_flops() == by_hand
    with pytest.raises(profiling.ProfileError, match="no frame after CNN layer 0"):
        profiling.conv_feature_extractor_flops(layers, 9)


def test_our_cnn_and_the_hubert_baselines_cost_the_same(measured, hubert_measured) -> None:
    """Same conv_feature_layers, same clip: the same CNN FLOPs for MR-HuBERT (Winograd/packed kernels) and the
    HuBERT baseline (transformers' plain Conv1d), which is what torch's counter sees on the plain layers."""
    hubert, hubert_entry = hubert_measured
    arch = ARCHITECTURES["hubert_base_ls960"].scaled(**WIDTHS, layers=(2,))
    mono = measured["mrhubert_mono_base"][1]
    conv_layers = profiling.conv_feature_layers(ARCHITECTURES["mrhubert_mono_base"].scaled(**WIDTHS).model_cfg())
    assert conv_layers == profiling.conv_feature_layers(arch.model_cfg())
    analytic = profiling.conv_feature_extractor_flops(conv_layers, round(SECONDS * profiling.SAMPLE_RATE))
    assert block(mono, "cnn")["flops"] == block(hubert_entry, "cnn")["flops"] == analytic
    clip = profiling.profile_clip(SECONDS, seed=0)
    counted = profiling.count_flops(hubert.module, hubert.blocks, profiling.forward_of(hubert, clip))
    assert counted["cnn"] == analytic
    assert hubert_entry["total"]["flops"] == sum(b["flops"] for b in hubert_entry["blocks"])


POS_CONV_BY_HAND = 2 * 32 * (32 // 4) * 16 * (FRAMES + 1)  # channels 32, groups 4, kernel 16: T + 1 output frames


def test_positional_conv_flops_match_a_hand_computation(measured, hubert_measured) -> None:
    """2 x multiply-adds of the grouped Conv1d (out x in/groups x kernel x output frames), added to the transformer
    layers of the block that runs it: encoders[0] for MR-HuBERT, the encoder for HuBERT; the same for both."""
    assert (
        ARCHITECTURES["mrhubert_mono_base"].scaled(**WIDTHS).model_cfg()["conv_pos"],
        ARCHITECTURES["mrhubert_mono_base"].scaled(**WIDTHS).model_cfg()["conv_pos_groups"],
    ) == (16, 4)
    assert POS_CONV_BY_HAND == 860_160
    assert profiling.positional_conv_flops(32, 16, 4, FRAMES) == POS_CONV_BY_HAND
    assert profiling.positional_conv_flops(8, 3, 2, 10) == 2 * 8 * 4 * 3 * 10  # odd kernel: T output frames
    with pytest.raises(profiling.ProfileError, match="no output frame"):
        profiling.positional_conv_flops(8, 16, 2, 3, padding=0)
    # torch's counter on a plain grouped Conv1d (the direct convolution) sees the same.
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        torch.nn.Conv1d(32, 32, 16, padding=8, groups=4)(torch.zeros(1, 32, FRAMES))
    assert counter.get_total_flops() == POS_CONV_BY_HAND

    for name in NAMES:  # one positional convolution each, in the first block, at 20 ms
        profiled, entry = measured[name]
        assert [s.module_path for s in profiled.positional_convs] == ["encoders.0.pos_conv"], name
        first_layers = entry["architecture"]["layers"][0]
        assert (
            block(entry, "encoders[0]")["flops"] == first_layers * transformer_layer_flops(FRAMES) + POS_CONV_BY_HAND
        ), name
    hubert, hubert_entry = hubert_measured
    assert [s.module_path for s in hubert.positional_convs] == ["hubert.encoder.pos_conv_embed"]
    assert block(hubert_entry, "encoder")["flops"] == 2 * transformer_layer_flops(FRAMES) + POS_CONV_BY_HAND


@pytest.mark.parametrize("fft_block", [32, 64])
def test_positional_conv_flops_are_the_same_through_the_fft(
    measured, monkeypatch: pytest.MonkeyPatch, fft_block: int
) -> None:
    """The same tiny model through the FFT (overlap-save) and through the direct convolution: torch's counter sees
    different FLOPs (the FFTs are invisible to it), the profile the same, the direct convolution's."""
    from upstream_mrhubert.components import PositionalConv

    profiled, _ = measured["mrhubert_mono_base"]
    run = profiling.forward_of(profiled, profiling.profile_clip(SECONDS, seed=0))

    def flops_through(block_size: int | None) -> tuple[dict[str, int], dict[str, int], torch.Tensor]:
        monkeypatch.setattr(PositionalConv, "_fft_block", lambda self, batch, frames: block_size)
        counted = profiling.count_flops(profiled.module, profiled.blocks, run)
        profiled_flops = profiling.profile_model(profiled, seconds=SECONDS, repeats=1, seed=0)
        return counted, {b["name"]: b["flops"] for b in profiled_flops["blocks"]}, run()[-1].features

    counted_fft, through_fft, out_fft = flops_through(fft_block)
    counted_direct, direct, out_direct = flops_through(None)
    torch.testing.assert_close(out_fft, out_direct, rtol=1e-4, atol=1e-4)  # same embedding either way
    assert counted_fft["encoders[0]"] != counted_direct["encoders[0]"]  # the FFT path did run
    assert through_fft == direct
    assert direct == {**counted_direct, "cnn": direct["cnn"]}  # on the direct path the counter agrees


def test_breakdown_adds_up_to_the_totals(measured) -> None:
    for name in NAMES:
        profiled, entry = measured[name]
        blocks = entry["blocks"]
        assert blocks[-1]["name"] == profiling.OTHER_BLOCK
        assert sum(b["flops"] for b in blocks) == entry["total"]["flops"]
        assert (
            sum(b["params"] for b in blocks)
            == entry["total"]["params"]
            == sum(p.numel() for p in profiled.module.parameters())
        )
        assert sum(g["flops"] for g in entry["resolutions"]) == entry["total"]["flops"]
        assert sum(g["params"] for g in entry["resolutions"]) == entry["total"]["params"]
        assert sorted(n for g in entry["resolutions"] for n in g["blocks"]) == sorted(b["name"] for b in blocks)
        assert sum(b["latency_s"] for b in blocks) >= entry["total"]["latency_s"] * (1 - 1e-9)
        assert block(entry, "other")["flops"] >= 0 and entry["total"]["peak_memory_bytes"] > 0


def test_random_weights_are_labelled(measured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        assert measured[name][1]["weights"] == f"random-init (architecture of {name})"
    profile = {
        **_profile_of(measured),
        "comparisons": profiling.compare([e for _, e in measured.values()], "mrhubert_b5a"),
    }
    table = profiling.profile_markdown(profile)
    assert table.count("random-init (architecture of") == len(NAMES)
    # A registered name without its checkpoint in the cache folder: random weights of the registered architecture.
    monkeypatch.setenv("MRHUBERT_CKPT_DIR", str(tmp_path / "empty-cache"))
    resolved = profiling.profiled_upstream("mrhubert_b5a")
    assert resolved.weights == "random-init (architecture of mrhubert_b5a)"
    assert resolved.architecture["resolutions_ms"] == [20.0, 20.0] and resolved.architecture["layers"] == [4, 4, 4]


def _profile_of(measured) -> dict:
    return {
        "schema": profiling.PROFILE_SCHEMA,
        "created": "2024-01-01T00:00:00+00:00",
        "seconds": SECONDS,
        "sample_rate": profiling.SAMPLE_RATE,
        "batch_size": 1,
        "repeats": 1,
        "seed": 0,
        "threads": 1,
        "machine": {},
        "versions": {"torch": torch.__version__},
        "flop_counter": profiling.FLOP_COUNTER_NOTE,
        "reference": "mrhubert_b5a",
        "upstreams": [entry for _, entry in measured.values()],
        "comparisons": [],
    }


def test_profile_json_is_written_atomically(measured, tmp_path: Path) -> None:
    path = tmp_path / "out" / "profile.json"
    profile = _profile_of(measured)
    profiling.write_profile(profile, path)
    assert profiling.read_profile(path) == json.loads(json.dumps(profile))
    assert "## Efficiency profile" in path.with_suffix(".md").read_text()
    before = path.read_bytes()
    with pytest.raises(TypeError):  # not JSON-serialisable: nothing replaced, nothing left behind
        profiling.write_profile({**profile, "seed": object()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["profile.json", "profile.md"]
    (tmp_path / "other.json").write_text('{"schema": "something else"}')
    with pytest.raises(profiling.ProfileError, match="mrsuperb.profile/1"):
        profiling.read_profile(tmp_path / "other.json")
    with pytest.raises(FileNotFoundError, match="mrsuperb profile"):
        profiling.read_profile(tmp_path / "missing.json")


def test_command_line_bad_input_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert mrsuperb(["profile", "-u", "mrhubert_b5a", "--reference", "mrhubert_b2a"]) == 2
    assert "--reference mrhubert_b2a is not among the profiled upstreams" in capsys.readouterr().err
    assert mrsuperb(["profile", "-u", "no_such_upstream_xyz", "--seconds", "1"]) == 2
    assert "unknown upstream 'no_such_upstream_xyz'" in capsys.readouterr().err


def test_upstreams_are_timed_in_turns() -> None:
    calls: list[str] = []
    models = [(torch.nn.Identity(), [], lambda name=name: calls.append(name)) for name in ("a", "b")]
    latencies = profiling.measure_latencies_interleaved(models, repeats=2)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # one warm-up each, then rounds
    assert [sorted(blocks) for _, blocks in latencies] == [[profiling.OTHER_BLOCK]] * 2


def test_command_line_profiles_checkpoints_and_compares(tmp_path: Path, capsys) -> None:
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    two_res = write_tiny_checkpoint(tmp_path / "two_res.pt", "base_2res", seed=0)
    one_res = write_tiny_checkpoint(tmp_path / "one_res.pt", "mono_resolution", seed=0)
    out = tmp_path / "profile.json"
    argv = [
        "profile",
        "-u",
        "two",
        "one",
        "-k",
        f"two={two_res}",
        "-k",
        f"one={one_res}",
        "--reference",
        "one",
        "--seconds",
        "1",
        "--repeats",
        "2",
        "--out",
        str(out),
    ]
    assert mrsuperb(argv) == 0
    profile = profiling.read_profile(out)
    assert [e["name"] for e in profile["upstreams"]] == ["two", "one"] and profile["reference"] == "one"
    assert [e["weights"] for e in profile["upstreams"]] == ["checkpoint two_res.pt", "checkpoint one_res.pt"]
    (comparison,) = profile["comparisons"]
    assert comparison["upstream"] == "two" and 0 < comparison["flops_ratio"] < 1
    assert all(e["total"]["latency_s"] > 0 for e in profile["upstreams"])
    assert "CNN" in profile["flop_counter"] and "analytic" in profile["flop_counter"]
    assert "| two | checkpoint two_res.pt | 20/40 |" in capsys.readouterr().out
