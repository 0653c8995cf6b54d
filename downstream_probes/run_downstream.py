"""``run_downstream.py``: s3prl 0.4.18's SUPERB runner, with its full command line, on today's stack.

Before s3prl starts, this applies the compatibility layer (``s3prl_compat``) and registers every upstream of the
``s3prl.upstreams`` entry-point group (``plugins``). On top of s3prl's options:

- ``-d`` takes our task names (asr, sf, ic, ks, se, sd) as well as s3prl's expert names; without ``-c`` the
  SUPERB config of ``recipes/superb/<task>/config.yaml`` is used;
- ``-l`` takes a layer name of the upstream (``T7``, ``D0``) as well as an index;
- ``--device`` defaults to cuda when available, else cpu; under ``torchrun`` the local rank comes from the
  environment and the backend is gloo on CPU, nccl on GPU;
- every ``train``/``evaluate`` writes ``<expdir>/results.json``; training with a weighted sum also exports
  ``layer_weights.json``.
"""

from __future__ import annotations

import builtins
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from downstream_probes import plugins, s3prl_compat
from downstream_probes.paths import recipes_dir
from downstream_probes.results import task_for

LAYER_OPTIONS = ("-l", "--upstream_layer_selection")
UNSUPPORTED_OPTIONS = {
    "--push_to_hf_hub": "s3prl's push relies on huggingface_hub.Repository (removed in huggingface_hub 1.0); "
    "upload the experiment folder with `hf upload` instead",
}


def _find_option(argv: Sequence[str], names: Sequence[str]) -> tuple[int, str | None] | None:
    """(index of the option, its value) for the first of ``names`` present, else None."""
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name:
                return index, argv[index + 1] if index + 1 < len(argv) else None
            if arg.startswith(name + "=") and name.startswith("--"):
                return index, arg.split("=", 1)[1]
    return None


def _set_option(argv: list[str], names: Sequence[str], value: str | None) -> list[str]:
    """Replace (value) or remove (None) the option named by any of ``names``."""
    found = _find_option(argv, names)
    if found is None:
        return argv if value is None else [*argv, names[0], value]
    index, _ = found
    width = 1 if "=" in argv[index] else 2
    rest = argv[:index] + argv[index + width :]
    return rest if value is None else [*rest[:index], names[0], value, *rest[index:]]


def extract_layer_name(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """Take ``-l NAME`` out of the arguments (s3prl's parser only accepts an integer); indices stay."""
    argv = list(argv)
    found = _find_option(argv, LAYER_OPTIONS)
    if found is None or found[1] is None:
        return argv, None
    value = found[1]
    try:
        int(value)
    except ValueError:
        return _set_option(argv, LAYER_OPTIONS, None), value
    return argv, None


def resolve_task_and_config(argv: Sequence[str]) -> list[str]:
    """Map our task names onto s3prl's experts and, without ``-c``, point at our SUPERB config."""
    argv = list(argv)
    found = _find_option(argv, ("-d", "--downstream"))
    if found is None or found[1] is None:
        return argv
    spec = task_for(found[1])
    if spec is None:
        return argv
    argv = _set_option(argv, ("-d", "--downstream"), spec.downstream)
    if _find_option(argv, ("-c", "--config")) is None:
        config = recipes_dir() / "superb" / spec.task / "config.yaml"
        if not config.is_file():
            raise FileNotFoundError(f"SUPERB config for task {spec.task!r} not found: {config}")
        argv += ["-c", str(config)]
    return argv


def reject_unsupported(argv: Sequence[str]) -> None:
    for option, reason in UNSUPPORTED_OPTIONS.items():
        found = _find_option(argv, (option,))
        if found is not None and str(found[1]).lower() not in ("false", "0", "none"):
            raise ValueError(f"{option}: {reason}")
    hub = _find_option(argv, ("--hub",))
    if hub is not None and hub[1] == "huggingface":
        raise ValueError(
            "--hub huggingface: s3prl logs in with a username/password API that huggingface_hub removed; "
            "download the upstream and pass it with -u/-k instead"
        )


def check_paths(argv: Sequence[str]) -> None:
    """One clear error for a missing config or checkpoint instead of s3prl's traceback."""
    for names in (("-c", "--config"), ("-i", "--init_ckpt")):
        found = _find_option(argv, names)
        if found is not None and found[1] is not None and not Path(found[1]).exists():
            raise FileNotFoundError(f"{names[0]} {found[1]}: file not found")
    found = _find_option(argv, ("-e", "--past_exp"))
    if found is not None and found[1] is not None:
        path = Path(found[1])
        if not path.exists():
            raise FileNotFoundError(f"-e {path}: no such checkpoint or experiment folder")
        if path.is_dir() and not list(path.glob("states-*.ckpt")):
            raise FileNotFoundError(f"-e {path}: the folder holds no states-*.ckpt to resume from")


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
                raise ValueError(f"{prefix}.{key}={text}: s3prl's -o cannot carry '=' or ',,' in a value")
            options.append(f"{prefix}.{key}={text}")
    return ",,".join(option for option in options if option)


def build_argv(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """All argument rewriting, in order; returns s3prl's argv and the layer name given to ``-l`` (if any)."""
    argv, layer_name = extract_layer_name(argv)
    argv = resolve_task_and_config(argv)
    argv = s3prl_compat.prepare_argv(argv)
    return argv, layer_name


def run(argv: Sequence[str]) -> None:
    """Run s3prl's ``run_downstream.main`` with ``argv`` (without the program name)."""
    s3prl_compat.apply_all()
    plugins.register_entry_point_upstreams()
    help_only = any(arg in ("-h", "--help") for arg in argv)
    if not help_only:
        reject_unsupported(argv)
    s3prl_argv, layer_name = build_argv(argv)
    if not help_only:
        check_paths(s3prl_argv)

    import s3prl.run_downstream as s3prl_run_downstream

    from downstream_probes.probe_runner import make_probe_runner

    saved = (sys.argv, builtins.isinstance, torch.multiprocessing.get_sharing_strategy())
    s3prl_run_downstream.Runner = make_probe_runner(layer_name)
    sys.argv = ["run_downstream.py", *s3prl_argv]
    try:
        s3prl_run_downstream.main()
    finally:
        # s3prl's main patches builtins.isinstance and the sharing strategy process-wide; undo for in-process use.
        sys.argv, builtins.isinstance = saved[0], saved[1]
        torch.multiprocessing.set_sharing_strategy(saved[2])


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; bad input is one message on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        run(argv)
    except (FileNotFoundError, ValueError) as error:
        print(f"run_downstream.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
