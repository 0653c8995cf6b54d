"""The options every ``mrsuperb`` subcommand spells the same way, defined once.

Conventions (docs/development.md, "Command line"):

- ``-u/--upstream`` an upstream name, ``-k/--ckpt`` its checkpoint, ``-g/--model-config`` its options file
  (s3prl's ``-u``/``-k``/``-g``); ``-d/--downstream`` a task; ``-c/--config`` a downstream config;
- ``-o/--override`` only for s3prl config overrides; ``--out`` for every output (folder or file), ``-p/--out``
  where s3prl's ``-p`` (experiment folder) is the output;
- ``-a/--auto-resume``, ``-q/--quiet``; dashes in every long option;
- old spellings (``--upstream_ckpt``, ``--auto_resume``, ``--out-dir``, ``-o`` for an output, ...) still work for
  one release and print a deprecation note naming the new one.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any

# Sphinx/RST markup of our docstrings, shown as plain text in --help.
_RST_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj|ref|doc):`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")

ArgumentContainer = argparse.ArgumentParser | argparse._ArgumentGroup  # a parser or one of its groups


def plain_text(text: str) -> str:
    """``text`` without RST markup: ``:mod:`x``` and ````x```` become ``x``."""
    return _RST_LITERAL.sub(r"\1", _RST_ROLE.sub(r"\1", text))


class PlainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks; help texts and descriptions lose RST markup; old spellings of an
    option are not shown."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))

    def _format_action_invocation(self, action: argparse.Action) -> str:
        old = getattr(action, "old_spellings", ())
        if not old:
            return super()._format_action_invocation(action)
        shown = argparse.Action(
            [f for f in action.option_strings if f not in old], action.dest, nargs=action.nargs, metavar=action.metavar
        )
        return super()._format_action_invocation(shown)


class _Spelled(argparse.Action):
    """An option with old spellings: each still works and prints which spelling to use instead."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        old_spellings: Sequence[str] = (),
        flag: bool = False,
        append: bool = False,
        **kwargs: Any,
    ) -> None:
        self.old_spellings = tuple(old_spellings)
        super().__init__(option_strings, dest, nargs=0 if flag else None, **kwargs)
        self.flag, self.append = flag, append

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if option_string in self.old_spellings:
            new = "/".join(f for f in self.option_strings if f not in self.old_spellings)
            print(f"{parser.prog}: note: {option_string} is deprecated; use {new}", file=sys.stderr)
        if self.append:
            values = [*(getattr(namespace, self.dest, None) or []), values]
        setattr(namespace, self.dest, True if self.flag else values)


def add_option(
    parser: ArgumentContainer,
    *flags: str,
    deprecated: Sequence[str] = (),
    **kwargs: Any,
) -> argparse.Action:
    """``parser.add_argument(*flags, **kwargs)``; the ``deprecated`` spellings also work, with a note, and are not
    shown in the help."""
    if not deprecated:
        return parser.add_argument(*flags, **kwargs)
    action = kwargs.pop("action", None)
    if action not in (None, "store", "store_true", "append"):
        raise TypeError(f"add_option with old spellings supports store, store_true and append, not {action!r}")
    if action == "store_true":
        kwargs.setdefault("default", False)
    return parser.add_argument(
        *flags,
        *deprecated,
        action=_Spelled,
        old_spellings=deprecated,
        flag=action == "store_true",
        append=action == "append",
        **kwargs,
    )


def add_upstream_options(parser: ArgumentContainer, *, required: bool = True, many: bool = False) -> None:
    """``-u/--upstream``, ``-k/--ckpt``, ``-g/--model-config`` (dests ``upstream``, ``upstream_ckpt``,
    ``upstream_model_config``, as s3prl's ``run_downstream.py`` names them)."""
    parser.add_argument(
        "-u",
        "--upstream",
        required=required,
        metavar="NAME[,NAME...]" if many else "NAME",
        help="upstream name(s), comma-separated (see mrsuperb upstreams)"
        if many
        else "upstream name (see mrsuperb upstreams)",
    )
    for short, long, dest, metavar, what in (
        ("-k", "--ckpt", "upstream_ckpt", "PATH", "checkpoint for the upstream"),
        ("-g", "--model-config", "upstream_model_config", "YAML", "upstream options file"),
    ):
        old_spellings = (f"--{dest}", f"--{dest.replace('_', '-')}")
        add_option(
            parser, short, long, dest=dest, metavar=metavar, deprecated=old_spellings, help=f"{what} (s3prl's {short})"
        )


def add_override_option(parser: ArgumentContainer) -> None:
    """``-o/--override``: s3prl's config overrides, ``config.a.b=VALUE,,config.c=VALUE``."""
    parser.add_argument(
        "-o",
        "--override",
        metavar="OVERRIDES",
        help='s3prl config overrides, e.g. "config.optimizer.lr=1e-4,,config.runner.total_steps=100"',
    )


def add_out_option(
    parser: argparse.ArgumentParser,
    help: str,
    *,
    required: bool = False,
    short: str | None = None,
    deprecated: Sequence[str] = (),
    metavar: str = "PATH",
) -> None:
    """``--out`` (dest ``out``), optionally with a short flag (``-p`` where it is s3prl's experiment folder)."""
    flags = (short, "--out") if short else ("--out",)
    add_option(parser, *flags, dest="out", required=required, metavar=metavar, deprecated=deprecated, help=help)


def add_quiet_option(parser: ArgumentContainer) -> None:
    add_option(parser, "-q", "--quiet", action="store_true", help="no progress bars")


def add_resume_option(parser: ArgumentContainer, help: str) -> None:
    add_option(
        parser, "-a", "--auto-resume", dest="auto_resume", action="store_true", deprecated=("--auto_resume",), help=help
    )


def comma_list(value: str | None) -> list[str]:
    """``a,b,,c`` -> ``["a", "b", "c"]``; ``None`` -> ``[]``."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def same_named(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options ``names`` as keyword arguments of the same names (``--jobs`` as ``jobs=``)."""
    return {name: getattr(args, name) for name in names}
