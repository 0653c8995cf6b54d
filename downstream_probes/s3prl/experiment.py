"""The experiment folder of a run: which folder it is, one run at a time in it, and what ``-a``/``-e`` resume.

s3prl takes the experiment folder of a resumed or evaluated run from the arguments stored in its checkpoint, so a
copied or moved folder wrote into the original (results.json rewritten, evaluations.jsonl truncated) and evaluating
a moved folder re-created the old one. Here the folder is decided from the command line alone:

1. ``-p FOLDER`` when given;
2. else the folder holding the checkpoint ``-e`` names (or ``-e FOLDER`` itself);
3. else s3prl's own default, ``result/downstream/<-n>``.

The run holds the folder's advisory lock (``upstream_mrhubert.output_folder.folder_lock`` on ``FOLDER/.run.lock``)
while it runs, so a second run into the same folder (or a shared sweep or pre-training using it) stops at once,
naming the holder's pid. The operating system drops the lock when the holder exits, crashes or is killed (-9
included), so a lock file left behind never blocks a later run.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from downstream_probes.s3prl.options import find_option, set_option
from upstream_mrhubert.checkpoints.io import CheckpointError, read_restricted_pickle, verify_zip_checksums
from upstream_mrhubert.errors import MrsuperbError
from upstream_mrhubert.output_folder import file_sha256, folder_lock

S3PRL_DEFAULT_ROOT = Path("result") / "downstream"
MODE_OPTIONS = ("-m", "--mode")
AUTO_RESUME_FLAGS = ("-a", "--auto_resume")


def default_mode(argv: Sequence[str]) -> list[str]:
    """Add ``-m train`` when no mode is given (s3prl requires one), saying so in one line on stderr."""
    argv = list(argv)
    if any(arg in ("-h", "--help") for arg in argv) or find_option(argv, MODE_OPTIONS) is not None:
        return argv
    print("run_downstream.py: no -m/--mode given: training (-m train)", file=sys.stderr)
    return [*argv, "-m", "train"]


def experiment_folder(argv: Sequence[str]) -> Path:
    """The folder a run with s3prl's ``argv`` writes into (see the module docstring for the rule)."""
    expdir = find_option(argv, ("-p", "--expdir"))
    if expdir is not None and expdir[1]:
        return Path(expdir[1])
    past = find_option(argv, ("-e", "--past_exp"))
    if past is not None and past[1]:
        path = Path(past[1])
        return path if path.is_dir() else path.parent
    name = find_option(argv, ("-n", "--expname"))
    return S3PRL_DEFAULT_ROOT / str(name[1] if name is not None else None)


def _step(path: Path) -> int:
    try:
        return int(path.stem.split("-")[-1])
    except ValueError:
        return -1


def _unreadable_reason(path: Path) -> str | None:
    """Why a ``states-*.ckpt`` cannot be resumed from (cut short, corrupt), or None when it is whole."""
    if not zipfile.is_zipfile(path):
        return "truncated: no zip directory at its end"
    try:
        verify_zip_checksums(path)
    except CheckpointError as error:
        return str(error).split(": ", 1)[-1] if ": " in str(error) else str(error)
    return None


def newest_readable_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The ``states-*.ckpt`` of ``folder`` with the highest step that is whole; None when there is none at all.

    A run killed while saving (or a disk that filled up) can leave the newest checkpoint cut short; each one skipped
    is reported on stderr. Raises FileNotFoundError when every checkpoint is unreadable.
    """
    folder = Path(folder)
    candidates = sorted(folder.glob("states-*.ckpt"), key=_step, reverse=True)
    for index, path in enumerate(candidates):
        reason = _unreadable_reason(path)
        if reason is not None:
            print(f"run_downstream.py: skipping {path} ({reason})", file=sys.stderr)
            continue
        if index:
            print(f"run_downstream.py: resuming from {path.name}, the newest readable checkpoint", file=sys.stderr)
        return path
    if candidates:
        raise FileNotFoundError(
            f"{folder}: every states-*.ckpt is unreadable; remove them to start afresh, or pass another -p folder"
        )
    return None


def resolve_resume(argv: Sequence[str]) -> list[str]:
    """Turn ``-a`` (with checkpoints in the folder) or ``-e FOLDER`` into ``-e`` the newest readable checkpoint."""
    argv = list(argv)
    past = find_option(argv, ("-e", "--past_exp"))
    folder: Path | None = None
    if past is not None and past[1] and Path(past[1]).is_dir():
        folder = Path(past[1])
    elif any(flag in argv for flag in AUTO_RESUME_FLAGS):
        candidate = experiment_folder(argv)
        folder = candidate if candidate.is_dir() and any(candidate.glob("states-*.ckpt")) else None
    if folder is None:
        return argv
    chosen = newest_readable_checkpoint(folder)
    if chosen is None:
        return argv
    argv = [arg for arg in argv if arg not in AUTO_RESUME_FLAGS]  # s3prl's -a would pick the newest file again
    argv = set_option(argv, ("-e", "--past_exp"), str(chosen))
    return argv if find_option(argv, ("-p", "--expdir")) else [*argv, "-p", str(folder)]


def experiment_lock(folder: str | os.PathLike[str]) -> AbstractContextManager[Path]:
    """Hold the advisory lock of ``folder`` (created if needed) for the ``with`` block (``folder_lock``: the one
    lock ``probe-sweep --shared`` and ``mrsuperb pretrain`` take too); a folder holding a link is refused.

    Raises:
        FolderLocked (``upstream_mrhubert.output_folder``): another process holds it; the message names the folder
            and the holder's pid.
    """
    return folder_lock(folder, "-p")


def is_leader_launch(environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    """True unless this process is a non-zero rank of a distributed launch (only rank 0 takes the lock)."""
    environ = os.environ if environ is None else environ
    return str(environ.get("RANK", "0")) == "0"


class _TorchLoadingInto(types.ModuleType):
    """``torch`` as s3prl's run_downstream module sees it, with ``load`` replaced."""

    def __init__(self, real: types.ModuleType, load: Callable[..., Any]) -> None:
        super().__init__(real.__name__, real.__doc__)
        self.__dict__["_real"] = real
        self.__dict__["load"] = load

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_real"], name)


@contextmanager
def checkpoints_write_into(module: Any, folder: Path) -> Iterator[None]:
    """While the block runs, every checkpoint s3prl's ``module`` (``s3prl.run_downstream``) loads says its
    experiment folder is ``folder``: the stored ``Args.expdir`` of a copied or moved folder is never used."""
    real = module.torch

    def load(*args: Any, **kwargs: Any) -> Any:
        state = real.load(*args, **kwargs)
        if isinstance(state, dict) and isinstance(state.get("Args"), argparse.Namespace):
            state["Args"].expdir = str(folder)
        return state

    module.torch = _TorchLoadingInto(real, load)
    try:
        yield
    finally:
        module.torch = real


# ----------------------------------------------------------------------------------------------------------------
# settings checked before the upstream is built

RUNNER_STEPS = ("total_steps", "log_step", "eval_step", "save_step", "gradient_accumulate_steps")
# what a checkpoint's state holds: the optimizer's and scheduler's settings live in their state dicts, the expert's
# model settings in its weights' shapes, the arguments (upstream, layer) in the features the weights were fit to
STATEFUL_OVERRIDES = ("config.optimizer.", "config.scheduler.", "config.downstream_expert.modelrc.", "args.")
RESUMED_ARGS = (("-u", "--upstream"), ("-d", "--downstream"), ("-l", "--upstream_layer_selection"))


class RunSettingsError(MrsuperbError, ValueError):
    """A config value, override or resume that cannot work (named in the message)."""


def check_runner_config(config: Any) -> None:
    """Every step count s3prl's runner divides by or counts to is a whole number >= 1 (``-o
    config.runner.save_step=0`` was a ZeroDivisionError after the upstream was built).

    Raises:
        RunSettingsError: naming the field.
    """
    runner = config.get("runner") if isinstance(config, dict) else None
    if not isinstance(runner, dict):
        raise RunSettingsError("the config has no runner section; start from recipes/superb/<task>/config.yaml")
    for key in RUNNER_STEPS:
        value = runner.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RunSettingsError(
                f"config.runner.{key}={value!r} must be a whole number of at least 1; fix the config or pass "
                f"-o config.runner.{key}=N"
            )


def parse_overrides(override: str) -> list[tuple[str, Any]]:
    """s3prl's ``-o`` as (dotted key, value) pairs, the values read as s3prl reads them (a Python literal, else
    the text)."""
    import ast

    pairs = []
    for option in override.split(",,"):
        key, separator, text = option.strip().partition("=")
        if not separator or not key.strip():
            raise RunSettingsError(f"-o {option!r}: expected config.FIELD=VALUE or args.FIELD=VALUE")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        pairs.append((key.strip(), value))
    return pairs


def _saved_value(state: dict[str, Any], key: str) -> tuple[bool, Any]:
    first, *rest = key.split(".")
    node: Any = state.get("Config") if first == "config" else state.get("Args")
    for name in rest:
        if first == "args" and not isinstance(node, dict):
            node = vars(node) if hasattr(node, "__dict__") else {}
        if not isinstance(node, dict) or name not in node:
            return False, None
        node = node[name]
    return True, node


def check_resume_settings(argv: Sequence[str]) -> None:
    """A training run resumed with ``-e``/``-a`` takes its arguments and config from the checkpoint (s3prl's rule);
    an ``-o`` value the saved state holds (``STATEFUL_OVERRIDES``: optimizer, scheduler, the expert's model, the
    arguments), ``-k``, ``-u``, ``-d`` or ``-l`` on the command line that contradicts them used to be recorded in
    results.json while training went on with the saved ones (``-a -o config.optimizer.lr=0.5`` kept the optimizer
    at 0.001). Refused, naming the fields. Other overrides (more ``total_steps``, a moved corpus) apply.

    Raises:
        RunSettingsError: naming each contradicted field and the checkpoint.
    """
    mode = find_option(argv, MODE_OPTIONS)
    past = find_option(argv, ("-e", "--past_exp"))
    if past is None or not past[1] or not Path(past[1]).is_file():
        return

    # read through the allow-listed loader first, in every mode: a planted file is one error, not s3prl's
    # raw UnpicklingError
    path = Path(past[1])
    state = read_restricted_pickle(path, remedy="resume from another checkpoint of the folder, or start afresh")
    if not isinstance(state, dict):
        raise RunSettingsError(f"{path} is not an s3prl checkpoint (a {type(state).__name__})")
    if mode is None or mode[1] != "train":
        return
    differing = []
    override = find_option(argv, ("-o", "--override"))
    for key, value in parse_overrides(override[1]) if override is not None and override[1] else []:
        if not key.startswith(STATEFUL_OVERRIDES):
            continue  # e.g. more total_steps, a moved corpus: nothing saved holds them
        found, saved = _saved_value(state, key)
        if not found or saved != value:
            differing.append(f"{key} ({saved!r} -> {value!r})" if found else f"{key} (not set -> {value!r})")
    for names in (*RESUMED_ARGS, ("-k", "--upstream_ckpt")):
        given = find_option(argv, names)
        if given is None or given[1] is None:
            continue
        found, saved = _saved_value(state, f"args.{names[1].lstrip('-')}")
        same = str(saved) == str(given[1])
        if names[0] == "-k" and found and saved and Path(str(saved)).is_file() and Path(given[1]).is_file():
            same = file_sha256(str(saved)) == file_sha256(given[1])
        if found and not same:
            differing.append(f"{names[0]} ({saved!r} -> {given[1]!r})")
    if differing:
        raise RunSettingsError(
            f"{path} was trained with other settings than this resume asks for: {'; '.join(differing)}; resume "
            "without them (the run goes on with its saved settings), or start a new run in another folder with -p"
        )
