"""``run_downstream.py``: s3prl 0.4.18's SUPERB runner, with its full command line, on today's stack.

Before s3prl starts, ``prepare_s3prl`` applies the compatibility layer (``compat``) and registers every upstream of the
``s3prl.upstreams`` entry-point group (``plugins``). On top of s3prl's options:

- ``-d`` takes our task names (asr, sf, ic, ks, se, sd) as well as s3prl's expert names; without ``-c`` the
  SUPERB config of ``recipes/superb/<task>/config.yaml`` is used;
- ``-l`` takes a layer name of the upstream (``T7``, ``D0``) as well as an index;
- ``--device`` defaults to cuda when available, else cpu; under ``torchrun`` the local rank comes from the
  environment and the backend is gloo on CPU, nccl on GPU;
- ``-m train`` checks first that the task's data is prepared (``preflight``: ASR's ``len_for_bucket`` tables, the
  Kaldi lists of SE and SD, the roots of SF, IC and KS), so a missing folder is one line naming it and the
  ``mrsuperb prepare`` command, before s3prl or the upstream is loaded;
- every ``train``/``evaluate`` writes ``<expdir>/results.json``; training with a weighted sum also exports
  ``layer_weights.json``.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import os
import shutil
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

from downstream_probes.data_checks import check_prepared
from downstream_probes.paths import recipes_dir
from downstream_probes.s3prl import compat as s3prl_compat
from downstream_probes.s3prl import experiment, plugins
from downstream_probes.s3prl.options import find_option, set_option
from downstream_probes.s3prl.runner import expand_recipe_paths, make_probe_runner, unset_data_paths
from downstream_probes.tasks import TASKS, task_for
from upstream_mrhubert.checkpoints.download import CKPT_DIR_ENV
from upstream_mrhubert.errors import USER_ERRORS, UsageError
from upstream_mrhubert.layer_names import layer_names

LAYER_OPTIONS = ("-l", "--upstream_layer_selection")
UNSUPPORTED_OPTIONS = {
    "--push_to_hf_hub": "s3prl's push relies on huggingface_hub.Repository (removed in huggingface_hub 1.0); "
    "upload the experiment folder with `hf upload` instead",
}


def extract_layer_name(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """Take ``-l NAME`` out of the arguments (s3prl's parser only accepts an integer); indices stay."""
    argv = list(argv)
    found = find_option(argv, LAYER_OPTIONS)
    if found is None or found[1] is None:
        return argv, None
    value = found[1]
    try:
        int(value)
    except ValueError:
        return set_option(argv, LAYER_OPTIONS, None), value
    return argv, None


def resolve_task_and_config(argv: Sequence[str]) -> list[str]:
    """Map our task names onto s3prl's experts and, without ``-c``, point at our SUPERB config."""
    argv = list(argv)
    found = find_option(argv, ("-d", "--downstream"))
    if found is None or found[1] is None:
        return argv
    spec = task_for(found[1])
    if spec is None:
        return argv
    argv = set_option(argv, ("-d", "--downstream"), spec.downstream)
    if find_option(argv, ("-c", "--config")) is None:
        config = recipes_dir() / "superb" / spec.task / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"SUPERB config for task {spec.task!r} not found: {config}")
        argv += ["-c", str(config)]
    return argv


def reject_unsupported(argv: Sequence[str]) -> None:
    for option, reason in UNSUPPORTED_OPTIONS.items():
        found = find_option(argv, (option,))
        if found is not None and str(found[1]).lower() not in ("false", "0", "none"):
            raise UsageError(f"{option}: {reason}")
    hub = find_option(argv, ("--hub",))
    if hub is not None and hub[1] == "huggingface":
        raise UsageError(
            "--hub huggingface: s3prl logs in with a username/password API that huggingface_hub removed; "
            "download the upstream and pass it with -u/-k instead"
        )


def check_paths(argv: Sequence[str]) -> None:
    """One clear error for a missing config or checkpoint instead of s3prl's traceback."""
    for names in (("-c", "--config"), ("-i", "--init_ckpt")):
        found = find_option(argv, names)
        if found is not None and found[1] is not None and not Path(found[1]).exists():
            raise FileNotFoundError(f"{names[0]} {found[1]}: file not found")
    mode = find_option(argv, ("-m", "--mode"))
    named = [find_option(argv, names) for names in (("-p", "--expdir"), ("-n", "--expname"), ("-e", "--past_exp"))]
    if mode is not None and mode[1] == "train" and all(found is None or not found[1] for found in named):
        raise UsageError("-m train needs an experiment folder: give -p FOLDER (or -n NAME for result/downstream/NAME)")
    found = find_option(argv, ("-e", "--past_exp"))
    if found is not None and found[1] is not None:
        path = Path(found[1])
        if not path.exists():
            raise FileNotFoundError(f"-e {path}: no such checkpoint or experiment folder")
        if path.is_dir() and not list(path.glob("states-*.ckpt")):
            raise FileNotFoundError(f"-e {path}: the folder holds no states-*.ckpt to resume from")


def _apply_overrides(config: dict, overrides: str) -> None:
    """s3prl's ``-o`` rule (``config.a.b=VALUE`` joined by ``,,``, values read as Python literals) on ``config``."""
    for option in overrides.split(",,"):
        key, separator, text = option.strip().partition("=")
        fields = key.strip().split(".")
        if not separator or fields[0] != "config" or len(fields) < 2:
            continue
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        section = config
        for field in fields[1:-1]:
            section = section.setdefault(field, {})
        section[fields[-1]] = value


def preflight(argv: Sequence[str]) -> None:
    """Before s3prl starts: for ``-m train`` (the default mode) of a SUPERB task, check that its data is prepared (the
    config of ``-c``
    with the ``-o`` overrides; ``data_checks.check_prepared``). A config still holding a ``/path/to/``
    placeholder is left to the runner's own message."""
    import yaml

    mode, task, config_path = (
        find_option(argv, names) for names in (("-m", "--mode"), ("-d", "--downstream"), ("-c", "--config"))
    )
    spec = task_for(task[1]) if task is not None and task[1] else None
    if (mode is not None and mode[1] != "train") or spec is None or config_path is None or not config_path[1]:
        return
    config = yaml.safe_load(Path(config_path[1]).read_text(encoding="utf-8")) or {}
    override = find_option(argv, ("-o", "--override"))
    if override is not None and override[1]:
        _apply_overrides(config, override[1])
    expand_recipe_paths(config, recipes_dir())
    if unset_data_paths(config):
        return
    try:
        check_prepared(spec.task, config.get("downstream_expert", {}))
    except KeyError as missing:
        raise UsageError(f"{config_path[1]}: downstream_expert lacks the data key {missing}") from None


def override_option(downstream_expert: dict, prefix: str = "config.downstream_expert") -> str:
    """s3prl's ``-o`` string setting every leaf of a nested ``downstream_expert`` mapping (e.g. a corpus's paths).

    s3prl evaluates each value as a Python literal, so values are written with ``repr``; options are joined
    with s3prl's ``,,`` separator.
    """
    options: list[str] = []
    for key, value in downstream_expert.items():
        if isinstance(value, dict):
            options.append(override_option(value, f"{prefix}.{key}"))
        else:
            text = repr(value)
            if "=" in text or ",," in text:
                raise UsageError(f"{prefix}.{key}={text}: s3prl's -o cannot carry '=' or ',,' in a value")
            options.append(f"{prefix}.{key}={text}")
    return ",,".join(option for option in options if option)


def build_argv(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """All argument rewriting, in order; returns s3prl's argv and the layer name given to ``-l`` (if any)."""
    argv, layer_name = extract_layer_name(argv)
    argv = resolve_task_and_config(argv)
    argv = s3prl_compat.prepare_argv(argv)
    return argv, layer_name


def prepare_s3prl() -> None:
    """The one call that patches anything: every compatibility fix (``compat.apply``) and every entry-point upstream
    registered on ``s3prl.hub``. The runner entry points (``run``, and whatever builds upstreams through s3prl's hub)
    make it; importing this package does not."""
    s3prl_compat.apply()
    plugins.register_entry_point_upstreams()


def help_epilog() -> str:
    """What s3prl's own help does not say about our additions."""
    tasks_line = ", ".join(f"{spec.task} ({spec.downstream})" for spec in TASKS.values())
    return (
        "\nmrsuperb additions:\n"
        f"  -d TASK     our task names, each with s3prl's expert: {tasks_line};\n"
        "              without -c, the SUPERB config recipes/superb/TASK/config.yaml is used\n"
        f"              ({recipes_dir() / 'superb'}); quick configs for tests: recipes/quick/TASK/config.yaml\n"
        "  -l LAYER    a layer name of the upstream as well as an index; MR-HuBERT base (4-4-4):\n"
        f"              {' '.join(layer_names([4, 4, 4]))}; HuBERT base: T0..T12\n"
        "  -u NAME     every upstream above: s3prl's own and those of the s3prl.upstreams entry points\n"
        "              (mrsuperb upstreams lists the entry points, their packages and checkpoints)\n"
        "  --device    defaults to cuda when available, else cpu\n"
    )


def show_help(argv: Sequence[str]) -> None:
    """s3prl's help with only real upstreams in its list (not the names its hub module happens to import), no
    import warnings, and our additions after it."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            prepare_s3prl()
            import s3prl.run_downstream as s3prl_run_downstream
        finally:
            logging.disable(logging.NOTSET)
    saved = (sys.argv, s3prl_run_downstream.hub)
    s3prl_run_downstream.hub = SimpleNamespace(**plugins.real_upstreams(s3prl_run_downstream.hub))
    sys.argv = ["run_downstream.py", *argv]
    try:
        s3prl_run_downstream.get_downstream_args()
    except SystemExit:
        sys.stdout.write(help_epilog())
        raise
    finally:
        sys.argv, s3prl_run_downstream.hub = saved


def run(argv: Sequence[str]) -> None:
    """Run s3prl's ``run_downstream.main`` with ``argv`` (without the program name)."""
    if any(arg in ("-h", "--help") for arg in argv):
        show_help(argv)
        return
    preflight(resolve_task_and_config(argv))  # before s3prl is imported: seconds, not a model build
    prepare_s3prl()
    reject_unsupported(argv)
    argv = experiment.resolve_resume(experiment.default_mode(argv))
    s3prl_argv, layer_name = build_argv(argv)
    check_paths(s3prl_argv)
    experiment.check_resume_settings(s3prl_argv)
    folder = experiment.experiment_folder(s3prl_argv)

    import s3prl.run_downstream as s3prl_run_downstream

    saved = (sys.argv, builtins.isinstance, torch.multiprocessing.get_sharing_strategy(), s3prl_run_downstream.Runner)
    s3prl_run_downstream.Runner = make_probe_runner(layer_name)
    sys.argv = ["run_downstream.py", *s3prl_argv]
    lock = experiment.experiment_lock(folder) if experiment.is_leader_launch() else nullcontext()
    before = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else None
    cache_dir = find_option(s3prl_argv, ("--cache_dir",))
    if cache_dir is not None and cache_dir[1]:
        # s3prl sends its own downloads there (torch.hub.set_dir); ours follow (upstream_mrhubert.checkpoints)
        saved_env = os.environ.get(CKPT_DIR_ENV)
        os.environ[CKPT_DIR_ENV] = cache_dir[1]
    try:
        with lock, experiment.checkpoints_write_into(s3prl_run_downstream, folder):
            s3prl_run_downstream.main()
    except BaseException:
        if experiment.is_leader_launch():
            undo_failed_start(folder, before)
        raise
    finally:
        # s3prl's main patches builtins.isinstance and the sharing strategy process-wide; undo for in-process use.
        sys.argv, builtins.isinstance = saved[0], saved[1]
        if cache_dir is not None and cache_dir[1]:
            if saved_env is None:
                os.environ.pop(CKPT_DIR_ENV, None)
            else:
                os.environ[CKPT_DIR_ENV] = saved_env
        torch.multiprocessing.set_sharing_strategy(saved[2])
        s3prl_run_downstream.Runner = saved[3]


# What a run that got going leaves behind; a failure without any of them changed nothing worth keeping.
PROGRESS_FILES = ("states-*.ckpt", "evaluations.jsonl", "results.json", "*best*.ckpt")


def undo_failed_start(folder: Path, before: list[str] | None) -> None:
    """A run that failed before its first save or evaluation leaves ``folder`` as it found it: the ``args_*.yaml``,
    ``config_*.yaml``, tensorboard files and lock it wrote are removed (and the folder, if the run created it)."""
    if not folder.is_dir():
        return
    added = [path for path in folder.iterdir() if before is None or path.name not in before]
    if any(path.match(pattern) for path in added for pattern in PROGRESS_FILES):
        return
    for path in added:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if before is None:
        with contextlib.suppress(OSError):
            folder.rmdir()


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; bad input is one message on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(argv)
    except USER_ERRORS as error:
        print(f"run_downstream.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
