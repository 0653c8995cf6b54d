"""Shared test set-up: deterministic, offline, and one tiny s3prl training shared by the tests that need a run."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Files that registry packages ship, fetched by the set-up (`make models`) into the checkout's ignored .cache/.
os.environ.setdefault("WHISPER_UPSTREAM_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache", "whisper"))
os.environ.setdefault("MRSUPERB_PACKAGES_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache", "packages"))

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import soundfile
import torch


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and are not slowed down by other processes on a shared machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_tiny_fluent_commands(root: Path) -> Path:
    """Fluent Speech Commands layout (data/{train,valid,test}_data.csv + wavs) with 16 half-second noise clips."""
    rng = np.random.default_rng(0)
    (root / "data").mkdir(parents=True)
    (root / "wavs").mkdir()
    header = ",path,speakerId,transcription,action,object,location\n"
    for split, count in (("train", 8), ("valid", 4), ("test", 4)):
        rows = []
        for index in range(count):
            relative = f"wavs/{split}_{index}.wav"
            soundfile.write(str(root / relative), (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
            action = ("activate", "deactivate")[index % 2]
            rows.append(f"{index},{relative},spk{index % 2},turn it on,{action},lights,none\n")
        (root / "data" / f"{split}_data.csv").write_text(header + "".join(rows))
    return root


class TinyIcRun(NamedTuple):
    """A finished run_downstream.py training and the upstream checkpoint it used."""

    expdir: Path
    upstream_checkpoint: Path
    steps: int


@pytest.fixture(scope="session")
def tiny_ic_run(tmp_path_factory: pytest.TempPathFactory) -> TinyIcRun:
    """One IC training of the tiny MR-HuBERT through run_downstream.py (s3prl's runner), shared by the session.

    ``mrhubert_local`` reaches s3prl's hub through this package's ``s3prl.upstreams`` entry point, the same route a
    third-party plugin takes. Evaluated on dev and test at step 2, so the run has results.json, dev-best.ckpt,
    states-2.ckpt and layer_weights.json. Tests must treat the directory as read-only.
    """
    from downstream_probes.paths import recipes_dir
    from downstream_probes.s3prl import run_downstream
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    steps = 2
    root = tmp_path_factory.mktemp("tiny_ic_run")
    checkpoint = write_tiny_checkpoint(root / "tiny.pt", "base_2res", seed=0)
    data = write_tiny_fluent_commands(root / "fsc")
    expdir = root / "exp"
    status = run_downstream.main(
        ["-m", "train", "-u", "mrhubert_local", "-k", str(checkpoint), "-d", "ic",
         "-c", str(recipes_dir() / "quick" / "ic" / "config.yaml"), "-p", str(expdir),
         "-o", f"config.downstream_expert.datarc.file_path={data},,config.runner.total_steps={steps}",
         "--device", "cpu"]
    )  # fmt: skip
    assert status == 0
    return TinyIcRun(expdir=expdir, upstream_checkpoint=checkpoint, steps=steps)


@pytest.fixture(scope="session")
def real_speech_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus of ``mrsuperb corpus real`` (recordings that registry packages ship), built once per session
    through the command line from the archives the set-up fetched (``make models``). Read-only for tests."""
    from downstream_probes.cli import main as cli_main

    out = tmp_path_factory.mktemp("real_speech") / "corpus"
    assert cli_main(["corpus", "real", "--out", str(out)]) == 0
    return out


# Tests that train with s3prl, build corpora or start fresh interpreters are end-to-end: marked ``slow`` here, in one
# place, by the fixtures and modules that make them so (``pytest -m "not slow"`` runs the quick part).
SLOW_FIXTURES = frozenset({"tiny_ic_run", "corpus", "real_speech_corpus", "whisper_ic_run"})
SLOW_MODULES = frozenset(
    {
        "test_run_downstream.py",
        "test_corpora.py",
        "test_compat_still_needed.py",
        "test_import_side_effects.py",
        "test_s3prl_compat.py",  # these two patch the process and import s3prl's hub (and all its upstreams)
        "test_plugins.py",
        "test_whisper_upstream.py",  # trains with s3prl, runs Whisper and CTranslate2
    }
)

# The slowest of the rest (one to three seconds each: several models built, a browser started, librosa imported).
SLOW_TESTS = frozenset(
    {
        "test_analysis_analyze.py::test_analyze_bad_input",
        "test_analysis_compare.py::test_local_checkpoints_of_one_upstream_are_different_models",
        "test_analysis_compare.py::test_compare_reports_spearman_kendall_and_top_k",
        "test_rel_checkpoints.py::test_genuine_tiny_checkpoints_still_build",
        "test_model_parity.py::test_every_state_matches_s3prl",
        "test_analysis_cca_pipeline.py::test_log_mel_matches_librosa_settings_of_the_reference",
        "test_leaderboard.py::test_html_page_as_a_browser_renders_it",
        "test_profiling.py::test_random_weights_are_labelled",
        "test_hub.py::test_converted_checkpoints_load_too",
        "test_pretrain_toy_report.py::test_report_tables_compare_each_variant_with_its_random_twin",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        test = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if fixtures & SLOW_FIXTURES or item.path.name in SLOW_MODULES or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
