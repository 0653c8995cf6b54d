"""The one base of every error the project raises for bad input (a file, an option, a value the user gave).

The command lines (``mrsuperb``, ``run_downstream.py``) turn an ``MrsuperbError`` into one line naming the file or
value; anything else is an internal error and keeps its traceback. It lives in the first package of the data flow
(checkpoint -> model -> s3prl -> corpora/analysis -> reports) so that every later one can derive from it.

Error classes that predate it also derive from the built-in they used to be (``ValueError``, ``RuntimeError``), so
existing ``except`` clauses keep working.
"""

from __future__ import annotations


class MrsuperbError(Exception):
    """Bad input, reported to the user as one line (no traceback)."""


class UsageError(MrsuperbError, ValueError):
    """An option or option value that cannot work; the message names the option."""


# What a command line reports as one line: our own errors, and the OS refusing a path the user named (its message
# carries the path). Everything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    MrsuperbError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)
