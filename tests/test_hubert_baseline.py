"""The HuBERT baseline (transformers' HubertModel, fairseq keys mapped) against s3prl's own HuBERT upstream.

Both load the same tiny random weights written as a raw fairseq HuBERT checkpoint; s3prl reads it after our
``mrsuperb convert`` (s3prl's own converter needs fairseq). Every one of the 13 states must agree within 1e-4 on
a batch of unequal lengths, padded frames included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from downstream_probes.cli import main as mrsuperb
from upstream_mrhubert.checkpoints.io import CheckpointError, load_checkpoint
from upstream_mrhubert.config import parse_conv_feature_layers
from upstream_mrhubert.hub import hubert_base_ls960
from upstream_mrhubert.hubert_baseline import HubertBaseline
from upstream_mrhubert.testing.tiny_hubert import write_tiny_hubert_checkpoint

VARIANTS = {
    "base": {},  # post-LN, GroupNorm extractor
    "large_style": {"large_style": True},  # pre-LN, LayerNorm extractor, waveform normalisation
    "no_projection": {"embed_dim": 32},  # CNN width == model width: fairseq has no post_extract_proj
}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def batch() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(length, generator=generator) for length in (16000, 12345, 6400)]


@pytest.fixture(scope="module", params=list(VARIANTS))
def tiny_checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(f"hubert_{request.param}")
    return write_tiny_hubert_checkpoint(folder / "tiny_hubert.pt", **VARIANTS[request.param])


def _s3prl_hidden_states(fairseq_path: Path, batch: list[torch.Tensor]) -> list[torch.Tensor]:
    from s3prl.upstream.hubert.expert import UpstreamExpert

    converted = fairseq_path.with_name("converted.pt")
    if not converted.exists():
        assert mrsuperb(["convert", str(fairseq_path), str(converted)]) == 0
    expert = UpstreamExpert(str(converted)).eval()
    with torch.no_grad():
        return list(expert(batch)["hidden_states"])


@pytest.mark.slow  # compares with s3prl's own model or synthesises speech
def test_states_equal_s3prl_hubert(tiny_checkpoint: Path, batch: list[torch.Tensor]) -> None:
    upstream = hubert_base_ls960(ckpt=str(tiny_checkpoint)).eval()
    with torch.no_grad():
        ours = upstream(batch)["hidden_states"]
    reference = _s3prl_hidden_states(tiny_checkpoint, batch)

    assert upstream.layer_names == [f"T{i}" for i in range(13)]
    assert len(ours) == len(reference) == 13
    for name, mine, theirs in zip(upstream.layer_names, ours, reference, strict=False):
        assert mine.shape == theirs.shape, name
        assert (mine - theirs).abs().max().item() <= TOLERANCE, name
    # The layers do change the features: equal states are not equal by accident.
    assert (ours[12] - ours[0]).abs().max().item() > 0.1


@pytest.mark.slow  # compares with s3prl's own model or synthesises speech
def test_padding_follows_fairseq_not_cnn_lengths(tmp_path: Path) -> None:
    """fairseq counts ceil(n / (L // T)) valid frames; transformers would count the CNN output length of n."""
    model = HubertBaseline.from_checkpoint(load_checkpoint(write_tiny_hubert_checkpoint(tmp_path / "tiny.pt")))
    waveforms = torch.randn(2, 32000)
    padding_mask = torch.zeros(2, 32000, dtype=torch.bool)
    padding_mask[1, 16000:] = True
    with torch.no_grad():
        states = model(waveforms, padding_mask)
    frames = model.num_frames(32000)
    assert frames == 99
    chunk = 32000 // frames
    expected_valid = -(-16000 // chunk)  # 50, where the CNN alone would give 49
    assert int((~states[0].padding_mask[1]).sum()) == expected_valid == 50
    assert all(state.stride == 320 and state.features.shape[1] == frames for state in states)


def test_unexpected_parameter_is_refused(tmp_path: Path) -> None:
    loaded = load_checkpoint(write_tiny_hubert_checkpoint(tmp_path / "tiny.pt"))
    loaded.state_dict["encoder.layers.0.adapter.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="adapter"):
        HubertBaseline.from_checkpoint(loaded)


def test_conv_spec_is_parsed_without_eval() -> None:
    assert parse_conv_feature_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == (
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    )
    with pytest.raises(CheckpointError):
        parse_conv_feature_layers("__import__('os').getcwd()")
