"""Pretraining (``upstream_mrhubert.pretraining``): masking, targets, heads, schedule, and short real runs.

The runs use a tiny model (32-dim, 1-1-1 layers, 16-channel CNN) on a tiny synthetic ASR corpus, so that each takes
seconds; their checkpoints are loaded back by our upstream and, converted, by s3prl's own ``multires_hubert_local``.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from upstream_mrhubert.checkpoints.io import load_checkpoint
from upstream_mrhubert.pretraining import checkpointing
from upstream_mrhubert.pretraining.config import PretrainConfig, RecipeError, load_recipe
from upstream_mrhubert.pretraining.data import frames_of
from upstream_mrhubert.pretraining.masking import compute_span_mask
from upstream_mrhubert.pretraining.network import MaskedPredictionModel
from upstream_mrhubert.pretraining.prediction_heads import LABEL_OFFSET, PredictionHeads, count_correct
from upstream_mrhubert.pretraining.schedule import polynomial_decay_lr
from upstream_mrhubert.pretraining.targets import layer_feature_extractor, mfcc_features, subsample_targets
from upstream_mrhubert.pretraining.trainer import train

pytestmark = pytest.mark.usefixtures("single_torch_thread")

REPO = Path(__file__).resolve().parents[1]

TINY: dict[str, Any] = {
    "model": {
        "embed_dim": 32,
        "ffn_dim": 64,
        "num_heads": 4,
        "layers": [1, 1, 1],
        "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "final_dim": 16,
    },
    "targets": {"clusters": 8, "fit_frames": 4000},
    "data": {"crop_seconds": 1.5, "batch_size": 4},
    "optim": {"lr": 2.0e-3, "warmup_steps": 4, "max_steps": 24},
    "run": {"log_every": 4, "valid_every": 12, "save_every": 4, "valid_batches": 1},
}


def tiny_config(**sections: dict[str, Any]) -> PretrainConfig:
    raw = {name: {**values, **sections.get(name, {})} for name, values in TINY.items()}
    for name, values in sections.items():
        raw.setdefault(name, values)
    return PretrainConfig.from_mapping(raw, where="the test recipe")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from downstream_probes.corpora import build_corpus

    return build_corpus("asr", tmp_path_factory.mktemp("corpus") / "asr", utterances=20, seed=0, progress=False)


@pytest.fixture(scope="module")
def finished_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("run") / "tiny"
    return out, train(tiny_config(), corpus, out, progress=False)


# ---------------------------------------------------------------------------------------------------------------
# Recipe


def test_ablation_switches_map_to_fairseq_cfg() -> None:
    base_model, base_task = tiny_config().fairseq_cfg()
    assert base_model["label_rate_ratios"] == [1, 2] == base_task["label_rate_ratios"]
    assert not base_model["use_single_prediction"] and base_model["use_single_target"]

    b4a, _ = tiny_config(loss={"aux_loss": False}).fairseq_cfg()
    assert b4a["use_single_prediction"]
    b5a = tiny_config(model={"downsample": False})
    assert b5a.fairseq_cfg()[0]["label_rate_ratios"] == [1, 1]
    assert b5a.network_config().resolution_strides == (320, 320)
    three = tiny_config(model={"resolutions": 3, "layers": [3, 2, 2, 2, 3]})
    assert three.fairseq_cfg()[0]["override_encoder_layers"] == "[3,2,2,2,3]"
    assert three.network_config().layer_counts == (3, 2, 2, 3, 2)  # fairseq's rule: decoders read the list backwards
    assert three.network_config().resolution_strides == (320, 640, 1280)
    assert tiny_config(model={"residual": "pre"}).pre_residual


def test_recipe_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="model.layers"):
        tiny_config(model={"resolutions": 3})
    with pytest.raises(RecipeError, match=r"unknown field\(s\) \['aux'\]"):
        tiny_config(loss={"aux": False})
    with pytest.raises(RecipeError, match="model.residual"):
        tiny_config(model={"residual": "middle"})
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("optim: {lr: fast}\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: optim.lr='fast' must be a number"):
        load_recipe(recipe)


def test_shipped_recipes_load() -> None:
    recipes = sorted((REPO / "recipes" / "pretrain").glob("*.yaml"))
    assert len(recipes) >= 4
    for recipe in recipes:
        load_recipe(recipe).network_config()


def test_cli_reports_a_bad_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from downstream_probes.cli import main as mrsuperb

    args = [
        "pretrain",
        "--config",
        str(tmp_path / "nope.yaml"),
        "--corpus",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert mrsuperb(args) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------
# Masking, targets, heads, schedule


def test_span_masks_follow_fairseq_semantics() -> None:
    rng = np.random.default_rng(0)
    padding = torch.zeros(3, 200, dtype=torch.bool)
    padding[2, 150:] = True
    mask = compute_span_mask((3, 200), padding, mask_prob=0.8, mask_length=10, rng=rng)
    counts = mask.sum(dim=1)
    assert (counts == counts[0]).all()  # require_same_masks: the batch's smallest count everywhere
    assert not mask[padding].any()
    # int(0.8 * n / 10 + u) spans of 10 frames, overlaps merged: between one span and 0.8 n frames masked
    assert 10 <= int(counts[0]) <= 0.8 * 150 + 10
    short = compute_span_mask((1, 12), None, mask_prob=0.01, mask_length=3, rng=rng)
    assert int(short.sum()) >= 3  # min_masks=2 spans even where mask_prob asks for none
    with pytest.raises(ValueError, match="utterance of 3 frames"):
        compute_span_mask((1, 3), None, mask_prob=0.8, mask_length=10, rng=rng)


def test_low_resolution_targets_are_the_20ms_stream_subsampled() -> None:
    stream = torch.arange(2 * 11).reshape(2, 11)
    at_40, frames_40 = subsample_targets(stream, 2, 6)  # 6 frames of 40 ms need 12 > 11 labels: cut to 5
    assert frames_40 == 5 and torch.equal(at_40, stream[:, 0:10:2])
    at_80, frames_80 = subsample_targets(stream, 4, 3)
    assert frames_80 == 2 and torch.equal(at_80, stream[:, [0, 4]])
    same, frames = subsample_targets(stream, 1, 11)
    assert frames == 11 and torch.equal(same, stream)
    assert MaskedPredictionModel(tiny_config(model={"resolutions": 3, "layers": [1] * 5}), 8).target_ratios == [1, 2, 4]
    assert MaskedPredictionModel(tiny_config(model={"downsample": False}), 8).target_ratios == [1, 1]


def test_mfcc_frames_align_with_the_cnn() -> None:
    samples = 16000 + 123
    features = mfcc_features(np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 0.1)
    assert features.shape == ((samples - 400) // 320 + 1, 39)


def test_iteration_two_features_come_from_a_named_layer_at_20ms(tmp_path: Path) -> None:
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "previous.pt")
    wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    high = layer_feature_extractor(checkpoint, "T4")(wave)
    low = layer_feature_extractor(checkpoint, "D0")(wave)  # 40 ms, each frame repeated to 20 ms
    assert high.shape == low.shape == (frames_of(16000), 32)
    assert torch.equal(low[0::2][: low.shape[0] // 2], low[1::2][: low.shape[0] // 2])
    with pytest.raises(ValueError, match="no state 'T99'"):
        layer_feature_extractor(checkpoint, "T99")


def test_cosine_logits_and_accuracy_rule() -> None:
    heads = PredictionHeads(embed_dim=8, final_dim=4, clusters=5, heads=2)
    assert heads.label_embs_concat[1].shape == (5 + LABEL_OFFSET, 4)
    logits = heads.logits(0, torch.randn(7, 8), logit_temp=0.1)
    assert logits.shape == (7, 5 + LABEL_OFFSET) and logits.abs().max() <= 10.0 + 1e-5  # |cos| / 0.1
    ties = torch.zeros(3, 4)
    assert count_correct(ties, torch.zeros(3, dtype=torch.long)) == 0  # all-equal rows are not correct
    assert count_correct(torch.eye(4)[:3], torch.tensor([0, 1, 3])) == 2


def test_learning_rate_schedule() -> None:
    schedule = {"peak": 1e-3, "warmup": 10, "total": 110, "end": 0.0, "power": 1.0}
    assert polynomial_decay_lr(0, **schedule) == 0.0
    assert polynomial_decay_lr(5, **schedule) == pytest.approx(5e-4)
    assert polynomial_decay_lr(10, **schedule) == pytest.approx(1e-3)
    assert polynomial_decay_lr(60, **schedule) == pytest.approx(5e-4)
    assert polynomial_decay_lr(110, **schedule) == 0.0 == polynomial_decay_lr(500, **schedule)


@pytest.mark.parametrize("aux_loss", [True, False])
def test_low_resolution_heads_get_gradients_only_with_the_aux_loss(aux_loss: bool) -> None:
    model = MaskedPredictionModel(tiny_config(loss={"aux_loss": aux_loss}), 8).train()
    waves = torch.randn(2, 16000) * 0.1
    targets = torch.randint(0, 8, (2, 49))
    model(waves, targets, np.random.default_rng(0)).objective.backward()
    keys = set(model.fairseq_state_dict())
    assert {"mask_emb", "final_projs.0.weight", "label_embs_concat.0"} <= keys
    assert model.heads.final_projs[0].weight.grad is not None and model.heads.mask_emb.grad is not None
    low_resolution = [
        p for name, p in model.heads.named_parameters() if name.startswith(("final_projs.1", "label_embs_concat.1"))
    ]
    if aux_loss:
        assert "final_projs.1.weight" in keys
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in low_resolution)
    else:  # fairseq's use_single_prediction: only the 20 ms head exists, nothing at 40 ms to train
        assert not any(key.startswith(("final_projs.1", "label_embs_concat.1")) for key in keys)
        assert low_resolution == []
        # the middle (40 ms) output reaches the loss only through the decoder: every network weight still learns
        assert all(p.grad is not None for p in model.network.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------------------
# Runs


@pytest.mark.slow
def test_short_run_lowers_the_loss_and_records_everything(finished_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = finished_run
    history = results["history"]
    assert [h["step"] for h in history] == list(range(4, 25, 4))
    assert history[-1]["loss"] < history[0]["loss"] - 0.5
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["status"] == "finished" and on_disk["steps_done"] == 24 and on_disk["seed"] == 0
    assert on_disk["config"] == tiny_config().as_dict()
    assert {"torch", "numpy", "scikit-learn"} <= set(on_disk["versions"])
    assert 0 < on_disk["targets"]["majority_baseline_valid"] < 1
    assert [v["step"] for v in on_disk["valid_history"]] == [12, 24]
    assert {"acc_m_0", "acc_m_1", "loss_m_0", "loss_m_1"} <= set(on_disk["valid_history"][-1])
    assert (out / "targets" / "train.km").is_file() and (out / "targets" / "dict.km.txt").is_file()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    with pytest.raises(ValueError, match="pass -a"):
        train(tiny_config(), Path(on_disk["corpus"]), out, progress=False)


@pytest.mark.slow
def test_checkpoint_loads_in_our_upstream_and_converted_in_s3prl(
    finished_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from downstream_probes.s3prl.plugins import build_hub_upstream
    from upstream_mrhubert import hub
    from upstream_mrhubert.convert import convert_to_s3prl

    out, _ = finished_run
    best = out / "checkpoints" / "checkpoint_best.pt"
    loaded = load_checkpoint(best)
    assert loaded.source_format == "fairseq" and loaded.dictionaries_symbols[0][4:] == [str(k) for k in range(8)]
    assert {"mask_emb", "final_projs.1.bias", "label_embs_concat.1"} <= set(loaded.state_dict)

    converted, s3prl_name = convert_to_s3prl(best, tmp_path / "converted.pt")
    assert s3prl_name == "multires_hubert_local"
    ours = hub.mrhubert_local(ckpt=str(best)).eval()
    theirs = build_hub_upstream("multires_hubert_local", ckpt=str(converted)).eval()
    wavs = [torch.randn(16000) * 0.1, torch.randn(12000) * 0.1]
    with torch.no_grad():
        our_states, their_states = ours(wavs)["hidden_states"], theirs(wavs)["hidden_states"]
    assert len(our_states) == len(their_states)
    for mine, other in zip(our_states, their_states, strict=True):
        frames = min(mine.size(1), other.size(1))
        assert torch.allclose(mine[:, :frames], other[:, :frames], atol=1e-4, rtol=1e-4)
    # the trained weights are what our upstream runs: they differ from a fresh initialisation
    fresh = MaskedPredictionModel(tiny_config(), 8).fairseq_state_dict()
    assert not torch.equal(fresh["post_extract_proj.weight"], loaded.state_dict["post_extract_proj.weight"])


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from upstream_mrhubert.pretraining.config import load_recipe
from upstream_mrhubert.pretraining.trainer import train
train(load_recipe(sys.argv[1]), sys.argv[2], sys.argv[3], progress=False)
"""


@pytest.mark.slow
def test_resume_after_a_kill_continues_from_the_saved_step(
    corpus: Path, finished_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_config().as_dict()))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(recipe), str(corpus), str(out)], env=env)
    try:
        deadline = time.monotonic() + 240
        saved = None
        while time.monotonic() < deadline and child.poll() is None:
            saved = checkpointing.load_resume(out) if (out / "checkpoints" / "resume.pt").exists() else None
            if saved is not None and saved.step >= 8:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the run finished before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
    assert saved is not None
    killed_at = checkpointing.load_resume(out)
    assert killed_at is not None and 8 <= killed_at.step < 24

    results = train(load_recipe(recipe), corpus, out, resume=True, progress=False)
    steps = [h["step"] for h in results["history"]]
    assert steps == list(range(4, 25, 4))  # nothing lost, nothing twice
    assert results["steps_done"] == 24
    _, uninterrupted = finished_run
    for resumed, straight in zip(results["history"], uninterrupted["history"], strict=True):
        assert math.isclose(resumed["loss"], straight["loss"], rel_tol=1e-3), (resumed, straight)


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(corpus: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_config(optim={"max_steps": 4, "accumulate": 2}).as_dict()))
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).parent / "torchrun"
    mrsuperb = Path(sys.executable).parent / "mrsuperb"
    command = [str(torchrun), "--nproc_per_node", "2", "--no-python", str(mrsuperb), "pretrain", "--config"]
    command += [str(recipe), "--corpus", str(corpus), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=600)
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["status"] == "finished"
    assert [h["step"] for h in results["history"]] == [4]
    assert (out / "checkpoints" / "checkpoint_best.pt").is_file()


# ---------------------------------------------------------------------------------------------------------------
# Hostile recipes, folders and state files (issue 24): one error naming the field or file, before the k-means


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"data": {"batch_size": 0}}, "data.batch_size=0"),
        ({"run": {"log_every": 0}}, "run.log_every=0"),
        ({"run": {"save_every": 0}}, "run.save_every=0"),
        ({"run": {"valid_every": 0}}, "run.valid_every=0"),
        ({"run": {"valid_batches": 0}}, "run.valid_batches=0"),
        ({"run": {"seed": -1}}, "run.seed=-1"),
        ({"data": {"min_seconds": 0.0}}, "data.min_seconds=0.0"),
        ({"data": {"crop_seconds": 0.0}}, "data.crop_seconds=0.0"),
        ({"targets": {"fit_frames": 0}}, "targets.fit_frames=0"),
        ({"targets": {"batch_size": 0}}, "targets.batch_size=0"),
        ({"loss": {"logit_temp": 0.0}}, "loss.logit_temp=0.0"),
        ({"optim": {"lr": float("inf")}}, "optim.lr=inf"),
    ],
)
def test_recipe_values_that_cannot_work_are_named(sections: dict[str, Any], field: str) -> None:
    """Each used to fail deep in the run (ZeroDivisionError after the k-means, sklearn's batch_size, masking) or
    to run on: logit_temp 0 gave NaN losses to `status: finished`, valid_batches 0 a validation loss of 0.0."""
    with pytest.raises(RecipeError, match=rf"the test recipe: {re.escape(field)}"):
        tiny_config(**sections)


def test_a_second_run_into_a_held_folder_is_refused(corpus: Path, tmp_path: Path) -> None:
    from upstream_mrhubert.output_folder import FolderLocked, folder_lock

    out = tmp_path / "held"
    with folder_lock(out), pytest.raises(FolderLocked, match=rf"{out} is in use by another run \(pid {os.getpid()}\)"):
        train(tiny_config(), corpus, out, progress=False)
    assert not (out / "results.json").exists()


def _resume_file(out: Path) -> Path:
    return out / "checkpoints" / "resume.pt"


@pytest.mark.slow
def test_damaged_resume_states_are_one_error_naming_the_file(
    corpus: Path, finished_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """resume.pt missing a key, holding a list, a weight of another shape, NaN weights, or cut short: each used to
    be a raw traceback (or, NaN weights, a resume into NaN steps)."""
    import shutil

    from upstream_mrhubert.pretraining.config import PretrainRunError

    source, _ = finished_run
    state = torch.load(_resume_file(source), map_location="cpu", weights_only=True)
    first = next(iter(state["model"]))
    variants = {
        "missing": ({k: v for k, v in state.items() if k != "optimizer"}, r"missing \['optimizer'\]"),
        "list": ([1, 2], "holds a list, not a resume state"),
        "shape": ({**state, "model": {**state["model"], first: torch.zeros(3)}}, "does not fit this recipe's model"),
        "nan": ({**state, "model": {**state["model"], first: state["model"][first] * float("nan")}}, "NaN"),
    }
    for name, (payload, message) in variants.items():
        out = tmp_path / name
        shutil.copytree(source, out)
        torch.save(payload, _resume_file(out))
        with pytest.raises(PretrainRunError, match=message):
            train(tiny_config(), corpus, out, resume=True, progress=False)
    out = tmp_path / "cut"
    shutil.copytree(source, out)
    _resume_file(out).write_bytes(_resume_file(source).read_bytes()[:1000])
    from upstream_mrhubert.errors import MrsuperbError

    with pytest.raises(MrsuperbError, match="resume.pt"):
        train(tiny_config(), corpus, out, resume=True, progress=False)


@pytest.mark.slow
def test_diverging_run_stops_with_status_diverged(corpus: Path, tmp_path: Path) -> None:
    """lr 1e8 used to run on NaN weights to `status: finished`, exit 0, with an unloadable checkpoint_last.pt."""
    from upstream_mrhubert.pretraining.config import PretrainDiverged

    out = tmp_path / "diverging"
    config = tiny_config(optim={"lr": 1.0e8, "warmup_steps": 0, "max_steps": 12})
    with pytest.raises(PretrainDiverged, match=r"diverged at step \d+"):
        train(config, corpus, out, progress=False)
    text = (out / "results.json").read_text()
    results = json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in results.json"))
    assert results["status"] == "diverged" and results["diverged_step"] >= 1
    last = out / "checkpoints" / "checkpoint_last.pt"
    if last.exists():  # saved before the divergence: finite, loadable
        load_checkpoint(last)


@pytest.mark.slow
def test_reused_targets_must_match_their_settings_and_the_corpus(
    corpus: Path, finished_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Targets of an 8-cluster run copied into a 6-cluster run were used (results.json said 6); -a after the
    corpus changed silently redid the k-means with permuted cluster ids."""
    import shutil

    from upstream_mrhubert.pretraining.config import PretrainRunError

    source, _ = finished_run
    out = tmp_path / "six"
    shutil.copytree(source / "targets", out / "targets")
    config = tiny_config(targets={"clusters": 6}, optim={"max_steps": 1}, run={"valid_every": 1, "log_every": 1})
    train(config, corpus, out, progress=False)
    record = json.loads((out / "targets" / "targets.json").read_text())
    assert record["settings"]["clusters"] == 6
    assert (out / "targets" / "dict.km.txt").read_text().count("\n") == 6
    assert max(int(x) for line in (out / "targets" / "train.km").read_text().split("\n") for x in line.split()) < 6

    changed = tmp_path / "changed_corpus"
    shutil.copytree(corpus, changed)
    extra = sorted((changed / "LibriSpeech").rglob("*.flac"))[0]
    shutil.copy(extra, extra.with_name("9999-9999-9999.flac"))
    with pytest.raises(PretrainRunError, match="cannot resume .* do not fit .*corpus"):
        train(config, changed, out, resume=True, progress=False)


def test_non_finite_target_states_name_the_checkpoint_and_layer(corpus: Path, tmp_path: Path) -> None:
    """NaN target states were reported by sklearn's k-means with no checkpoint or layer named (issue 24)."""
    from upstream_mrhubert.checkpoints.io import write_fairseq_checkpoint
    from upstream_mrhubert.pretraining.config import PretrainRunError
    from upstream_mrhubert.testing.tiny import tiny_config as tiny_model_config
    from upstream_mrhubert.testing.tiny import tiny_dictionaries, tiny_state_dict

    model_cfg, task_cfg = tiny_model_config("base_2res")
    dictionaries = tiny_dictionaries(model_cfg)
    state = tiny_state_dict(model_cfg, task_cfg, dictionaries, seed=0)
    state["decoders.0.layers.3.fc2.weight"] = state["decoders.0.layers.3.fc2.weight"] * 1e38  # T12 overflows
    checkpoint = write_fairseq_checkpoint(
        tmp_path / "overflowing.pt", model_cfg=model_cfg, task_cfg=task_cfg, state_dict=state,
        dictionaries_symbols=dictionaries,
    )  # fmt: skip
    config = tiny_config(targets={"kind": "layer", "checkpoint": str(checkpoint), "layer": "T12"})
    with pytest.raises(PretrainRunError, match=rf"state T12 of {checkpoint} gives NaN or infinite values for "):
        train(config, corpus, tmp_path / "out", progress=False)
