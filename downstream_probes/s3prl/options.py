"""The one scanner of s3prl-style command lines (``-x VALUE``, ``--long VALUE``, ``--long=VALUE``), used by every
argument rewrite before s3prl's own parser sees the arguments."""

from __future__ import annotations

from collections.abc import Sequence


def find_option(argv: Sequence[str], names: Sequence[str]) -> tuple[int, str | None] | None:
    """(index of the option, its value) for the first of ``names`` present, else None.

    ``--name=value`` is recognised for long options only (s3prl's short options take a separate value).
    """
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name:
                return index, argv[index + 1] if index + 1 < len(argv) else None
            if arg.startswith(name + "=") and name.startswith("--"):
                return index, arg.split("=", 1)[1]
    return None


def option_value(argv: Sequence[str], *names: str) -> str | None:
    """The value of the first of ``names`` present, else None."""
    found = find_option(argv, names)
    return None if found is None else found[1]


def set_option(argv: Sequence[str], names: Sequence[str], value: str | None) -> list[str]:
    """Replace (``value``) or remove (None) the option named by any of ``names``; a new one is appended."""
    argv = list(argv)
    found = find_option(argv, names)
    if found is None:
        return argv if value is None else [*argv, names[0], value]
    index, _ = found
    width = 1 if "=" in argv[index] else 2
    rest = argv[:index] + argv[index + width :]
    return rest if value is None else [*rest[:index], names[0], value, *rest[index:]]
