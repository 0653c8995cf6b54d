"""``mrsuperb``: one command-line entry over every tool of the project.

Each subcommand lives in its own module, which exposes ``register(subparsers)``; that function adds its
parser and sets ``handler`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules providing subcommands, imported lazily so that `mrsuperb -h` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrsuperb", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, ValueError, PermissionError) as error:
        # Bad input: one clear message, no traceback.
        print(f"mrsuperb {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
