"""``mrsuperb``: one command-line entry over every tool of the project.

Each subcommand lives in its own module in this package (``downstream_probes/cli/<name>.py``, the command being
the module's name with dashes), which holds ``HELP`` (its line in ``mrsuperb -h``), optionally ``DESCRIPTION``
(default: the module's docstring), ``add_arguments(parser)`` and ``run(args)`` (the parsed namespace in, an exit
code out). Adding a module there adds the subcommand; nothing else needs editing.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from downstream_probes.cli._options import PlainHelpFormatter
from upstream_mrhubert.errors import USER_ERRORS

DISTRIBUTION = "mrsuperb"


def version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser: the plain help layout unless the subcommand names its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", PlainHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrsuperb", description=__doc__.splitlines()[0], formatter_class=PlainHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        required=True,
        parser_class=_SubcommandParser,
    )
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):  # __main__ runs the command line, it adds no subcommand
            continue
        command = importlib.import_module(f"{__name__}.{module_info.name}")
        parser_of_command = subparsers.add_parser(
            module_info.name.replace("_", "-"),
            help=command.HELP,
            description=getattr(command, "DESCRIPTION", command.__doc__),
        )
        command.add_arguments(parser_of_command)
        parser_of_command.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as error:
        # Bad input: one clear message, no traceback. Anything else is a bug of ours and keeps its traceback.
        print(f"mrsuperb {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
