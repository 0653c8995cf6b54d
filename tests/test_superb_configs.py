"""recipes/superb/<task>/config.yaml hold SUPERB's official hyperparameters: the training keys of s3prl's own configs
(asr/config.yaml, ctc/snips.yaml, fluent_commands/config.yaml, speech_commands/config.yaml,
enhancement_stft/configs/cfg_voicebank.yaml, diarization/config.yaml at s3prl commit ec8064b), as facts.

Data paths and the ASR language-model paths differ on purpose (docs/tasks.md lists each difference);
``benchmarks/differential_s3prl.py --s3prl CHECKOUT`` compares every key against a checkout."""

from __future__ import annotations

import pytest
import yaml

from downstream_probes.paths import recipes_dir

OFFICIAL = {
    "asr": {"runner.total_steps": 200000, "runner.eval_step": 2000, "runner.gradient_accumulate_steps": 1,
            "optimizer.lr": 1.0e-4, "specaug.adaptive": False, "downstream_expert.datarc.batch_size": 32,
            "downstream_expert.datarc.num_workers": 12},
    "sf": {"runner.total_steps": 200000, "runner.eval_step": 2000, "runner.gradient_accumulate_steps": 1,
           "optimizer.lr": 1.0e-4, "specaug.adaptive": False, "downstream_expert.corpus.batch_size": 32,
           "downstream_expert.corpus.num_workers": 12},
    "ic": {"runner.total_steps": 200000, "runner.eval_step": 5000, "runner.gradient_accumulate_steps": 1,
           "optimizer.lr": 1.0e-4, "downstream_expert.datarc.num_workers": 12},
    "ks": {"runner.total_steps": 200000, "runner.eval_step": 5000, "runner.gradient_accumulate_steps": 1,
           "optimizer.lr": 1.0e-4, "downstream_expert.datarc.batch_size": 32, "downstream_expert.datarc.num_workers": 8},
    "se": {"runner.total_steps": 150000, "runner.eval_step": 1250, "runner.gradient_accumulate_steps": 1,
           "optimizer.lr": 1.0e-4, "downstream_expert.loaderrc.train_batchsize": 8,
           "downstream_expert.loaderrc.num_workers": 4},
    "sd": {"runner.total_steps": 30000, "runner.eval_step": 500, "runner.gradient_accumulate_steps": 4,
           "optimizer.lr": 1.0e-4, "downstream_expert.loaderrc.train_batchsize": 8,
           "downstream_expert.loaderrc.num_workers": 8, "downstream_expert.datarc.frame_shift": None},
}  # fmt: skip


def _get(config: dict, dotted: str) -> object:
    for key in dotted.split("."):
        assert isinstance(config, dict) and key in config, f"{dotted} is missing"
        config = config[key]
    return config


@pytest.mark.parametrize("task", sorted(OFFICIAL))
def test_superb_config_has_the_official_training_values(task: str) -> None:
    config = yaml.safe_load((recipes_dir() / "superb" / task / "config.yaml").read_text())
    found = {key: _get(config, key) for key in OFFICIAL[task]}
    assert found == OFFICIAL[task]
