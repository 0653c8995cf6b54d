"""The efficiency profile agrees with the architecture.

Tiny look-alikes of mono-base (20/40 ms, 4-4-4), B2-a (20/40/80 ms, 3-2-2-2-3) and B5-a (20 ms, 4-4-4) keep the
paper's layer layout with small widths: the same 12 transformer layers cost fewer FLOPs the more of them run at a
lower frame rate, blocks with the same shapes cost the same, attention is counted (quadratic in frames), torch's
flop counter alone gives the waveform CNN and the positional convolution what their convolutions compute (the same
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
from upstream_mrhubert.audio import SAMPLE_RATE

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
            states = profiled.module(torch.zeros(1, round(SECONDS * SAMPLE_RATE)))
        assert states[0].features.shape[1] == FRAMES
        strides = profiling.level_strides(ARCHITECTURES[name].scaled(**WIDTHS).model_cfg())
        middle_frames = FRAMES * strides[0] // strides[-1]
        layers = entry["architecture"]["layers"]
        middle_layers = layers[len(layers) // 2]
        assert block(entry, "middle")["flops"] == middle_layers * transformer_layer_flops(middle_frames), name


def cnn_flops_by_hand(layers: list[tuple[int, int, int]], samples: int) -> int:
    """2 x multiply-adds of each Conv1d layer of a waveform CNN (one input channel, no padding)."""
    total, in_channels, frames = 0, 1, samples
    for channels, kernel, stride in layers:
        frames = (frames - kernel) // stride + 1
        total += 2 * channels * in_channels * kernel * frames
        in_channels = channels
    return total


def test_cnn_flops_are_what_its_convolutions_compute(measured, hubert_measured) -> None:
    """torch's counter on our plain CNN and on the HuBERT baseline's (same conv_feature_layers, same clip) sees
    the convolutions' own cost, 2 x multiply-adds of each layer, by hand."""
    _, hubert_entry = hubert_measured
    layers = list(profiling.conv_feature_layers(ARCHITECTURES["mrhubert_mono_base"].scaled(**WIDTHS).model_cfg()))
    assert layers == [(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2
    by_hand = cnn_flops_by_hand(layers, round(SECONDS * SAMPLE_RATE))
    assert cnn_flops_by_hand([(4, 10, 5), (6, 3, 2), (6, 2, 2)], 400) == 14_672  # 400 -> 79 -> 39 -> 19 frames
    for name in NAMES:
        assert block(measured[name][1], "cnn")["flops"] == by_hand, name
    assert block(hubert_entry, "cnn")["flops"] == by_hand
    assert hubert_entry["total"]["flops"] == sum(b["flops"] for b in hubert_entry["blocks"])


POS_CONV_BY_HAND = 2 * 32 * (32 // 4) * 16 * (FRAMES + 1)  # channels 32, groups 4, kernel 16: T + 1 output frames


def test_positional_conv_flops_match_a_hand_computation(measured, hubert_measured) -> None:
    """2 x multiply-adds of the grouped Conv1d (out x in/groups x kernel x output frames), in the block that runs
    it: encoders[0] for MR-HuBERT, the encoder for HuBERT; the same for both."""
    cfg = ARCHITECTURES["mrhubert_mono_base"].scaled(**WIDTHS).model_cfg()
    assert (cfg["conv_pos"], cfg["conv_pos_groups"]) == (16, 4)
    assert POS_CONV_BY_HAND == 860_160
    for name in NAMES:  # one positional convolution each, in the first block, at 20 ms
        entry = measured[name][1]
        first_layers = entry["architecture"]["layers"][0]
        assert (
            block(entry, "encoders[0]")["flops"] == first_layers * transformer_layer_flops(FRAMES) + POS_CONV_BY_HAND
        ), name
    _, hubert_entry = hubert_measured
    assert block(hubert_entry, "encoder")["flops"] == 2 * transformer_layer_flops(FRAMES) + POS_CONV_BY_HAND


def test_attention_on_cpu_is_counted() -> None:
    """torch's counter has no formula for its CPU attention kernel; ours gives torch's CUDA formula for it."""
    query = torch.zeros(2, 4, 10, 8)
    plain = FlopCounterMode(display=False)
    with plain:
        torch.nn.functional.scaled_dot_product_attention(query, query, query)
    counter = profiling.flop_counter()
    with counter:
        torch.nn.functional.scaled_dot_product_attention(query, query, query)
    assert counter.get_total_flops() == 2 * (2 * 4) * 10 * 10 * (8 + 8)
    assert plain.get_total_flops() in (0, counter.get_total_flops())  # 0 while torch lacks the formula


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
        "sample_rate": SAMPLE_RATE,
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
    assert "FlopCounterMode" in profile["flop_counter"] and "analytic" not in profile["flop_counter"]
    assert "| two | checkpoint two_res.pt | 20/40 |" in capsys.readouterr().out
