"""Shared test set-up: deterministic, offline, and one tiny s3prl training shared by the tests that need a run."""

from __future__ import annotations

import importlib.util
import os
import re
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Files that registry packages ship, fetched by the set-up (`make models`) into the checkout's ignored .cache/.
os.environ.setdefault("WHISPER_UPSTREAM_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache", "whisper"))
os.environ.setdefault("MRSUPERB_PACKAGES_DIR", os.path.join(os.path.dirname(__file__), "..", ".cache", "packages"))

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
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


def load_recipe(script: str) -> ModuleType:
    """The recipe script ``recipes/<script>`` (e.g. ``demo/run.py``) as a module, loaded once per session as
    ``python recipes/<script>`` runs it: its own folder first on ``sys.path`` while it executes (so it finds the
    modules beside it, as ``demo/run.py`` finds ``whisper_pair.py``), and registered in ``sys.modules`` (dataclasses
    look their module up while the script is executed)."""
    from downstream_probes.paths import recipes_dir

    name = "recipe_" + re.sub(r"\W", "_", script.removesuffix(".py"))
    if name in sys.modules:
        return sys.modules[name]
    path = recipes_dir() / script
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module


class TinyIcRun(NamedTuple):
    """A finished run_downstream.py training and the upstream checkpoint it used."""

    expdir: Path
    upstream_checkpoint: Path
    steps: int


@pytest.fixture(scope="module")
def workspace(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for one test module's runs (named after the module)."""
    return tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])


@pytest.fixture(scope="module")
def tiny_ckpt(workspace: Path) -> Path:
    """A tiny random MR-HuBERT (4-4-4 layout) in the real fairseq format."""
    from upstream_mrhubert.testing.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(workspace / "tiny.pt", "base_2res", seed=0)


@pytest.fixture(scope="module")
def corpus_overrides(workspace: Path):
    """Each task's data as a user gets it: ``mrsuperb corpus TASK`` writes the raw layout of the real dataset
    (smallest size), ``mrsuperb prepare TASK`` prepares it; the ``-o`` it prints is handed out (built once per
    module and task)."""
    import contextlib
    import io

    from downstream_probes import corpora
    from downstream_probes.cli import main as cli_main

    cache: dict[str, str] = {}

    def get(task: str) -> str:
        if task not in cache:
            root, prepared = workspace / "corpora" / task, workspace / "prepared" / task
            size = str(corpora.minimum_utterances(task))
            assert cli_main(["corpus", task, "--out", str(root), "--utterances", size, "--quiet"]) == 0
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                assert cli_main(["prepare", task, "--raw", str(root), "--out", str(prepared), "-q"]) == 0
            line = next(line for line in printed.getvalue().splitlines() if line.startswith('-o "'))
            cache[task] = line.removeprefix('-o "').removesuffix('"')
        return cache[task]

    return get


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
        "test_checkpoint_hostile.py::test_genuine_tiny_checkpoints_still_build",
        "test_model_parity.py::test_every_state_matches_s3prl",
        "test_analysis_cca_pipeline.py::test_log_mel_matches_librosa_settings_of_the_reference",
        "test_leaderboard.py::test_html_page_as_a_browser_renders_it",
        "test_profiling.py::test_random_weights_are_labelled",
        "test_hub.py::test_converted_checkpoints_load_too",
        "test_pretrain_toy_report.py::test_report_tables_compare_each_variant_with_its_random_twin",
        # a fresh interpreter each (the preflight must stop before s3prl is imported), pyannote imported
        "test_corpora_prepare.py::test_asr_without_len_for_bucket_stops_before_s3prl",
        "test_corpora_prepare.py::test_other_tasks_without_prepared_data_stop_before_s3prl",
        "test_corpora_prepare.py::test_sd_scores_its_own_reference_as_perfect",
        "test_corpora_prepare.py::test_sd_preparation_and_der_on_a_real_conversation",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        test = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if fixtures & SLOW_FIXTURES or item.path.name in SLOW_MODULES or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


# ------------------------------------------------------------------------------------------------------------
# A real one-node Slurm cluster (Debian's slurm-wlm and munge), for the tests of the Slurm executor.

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue")


def _daemon_binary(name: str) -> str | None:
    import shutil

    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def _unavailable(reason: str) -> None:
    """Skip with the reason; in CI (CI=true) fail instead: there the cluster must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Slurm tests must run in CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SlurmCluster(NamedTuple):
    """A running one-node cluster: its config (``SLURM_CONF`` is set to it while the fixture lives)."""

    conf: Path
    root: Path
    partition: str


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd in the foreground from a temporary folder, stopped by PID afterwards.

    slurm.conf: ``proctrack/linuxproc``, ``task/none``, ``select/cons_tres`` and the node as ``slurmd -C`` reports
    it (its real CPUs and memory). Needs root (munged's key, slurmd starting jobs); skips with the reason when
    Slurm is not installed (``apt-get install slurm-wlm munge``), fails instead under ``CI=true``.
    """
    import signal
    import socket
    import subprocess
    import time

    missing = [name for name in SLURM_BINARIES if _daemon_binary(name) is None]
    if missing:
        _unavailable(f"Slurm is not installed (no {', '.join(missing)}): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        _unavailable("the one-node Slurm cluster needs root (munged's key, slurmd starting jobs)")
    root = tmp_path_factory.mktemp("slurm")
    for folder in ("state", "spool", "munge"):
        (root / folder).mkdir()
    (root / "munge").chmod(0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = root / "munge" / "munge.socket"
    node = subprocess.run([_daemon_binary("slurmd"), "-C"], capture_output=True, text=True, check=True)
    node_line = next(line for line in node.stdout.splitlines() if line.startswith("NodeName="))
    host = socket.gethostname().split(".")[0]
    node_line = node_line.replace(f"NodeName={node_line.split()[0].split('=')[1]}", f"NodeName={host}", 1)
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=mrsuperbtest",
                f"SlurmctldHost={host}(127.0.0.1)",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge_socket}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'slurmd.log'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "SchedulerType=sched/backfill",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "MpiDefault=none",
                "ReturnToService=2",
                "SlurmdTimeout=60",
                "InactiveLimit=0",
                "KillWait=5",
                f"{node_line} NodeAddr=127.0.0.1 State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    previous_conf = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    daemons: list[subprocess.Popen] = []
    try:
        munged = [_daemon_binary("munged"), "-F", "-f", f"--socket={munge_socket}", f"--key-file={key}"]
        munged += [f"--{name}-file={root / 'munge' / f'munged.{name}'}" for name in ("pid", "log", "seed")]
        daemons.append(subprocess.Popen(munged, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 20
        while not munge_socket.exists():
            assert daemons[0].poll() is None and time.monotonic() < deadline, root / "munge" / "munged.log"
            time.sleep(0.1)
        for daemon in ("slurmctld", "slurmd"):
            command = [_daemon_binary(daemon), "-D", "-f", str(conf)]
            daemons.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 90
        state = ""
        while state != "idle":
            problem = next((d.args[0] for d in daemons if d.poll() is not None), None)
            if problem or time.monotonic() > deadline:
                logs = "\n".join((root / f"{d}.log").read_text()[-1500:] for d in ("slurmctld", "slurmd")
                                 if (root / f"{d}.log").exists())  # fmt: skip
                pytest.fail(f"the one-node Slurm cluster did not come up ({problem or 'node not idle'}):\n{logs}")
            done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
            state = done.stdout.strip()
            time.sleep(0.5)
        yield SlurmCluster(conf=conf, root=root, partition="debug")
    finally:
        # jobs still finishing (a test may be done with a job's result before the job has exited) end first: a
        # slurmd stopped under them would leave their slurmstepd and srun behind
        if len(daemons) == 3 and all(daemon.poll() is None for daemon in daemons):
            for cancel in (False, True):
                if cancel:
                    subprocess.run(["scancel", "--partition=debug", "--full"], capture_output=True)
                deadline = time.monotonic() + 60
                while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
        for daemon in reversed(daemons):
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
        if previous_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous_conf
