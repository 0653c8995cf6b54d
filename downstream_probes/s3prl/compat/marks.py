"""Marking what the compatibility layer installed, so that each fix is idempotent and tests can tell ours apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_MARK = "__mrsuperb_compat__"
F = TypeVar("F", bound=Callable[..., Any])


def mark(function: F) -> F:
    """Tag ``function`` (or class) as installed by the compatibility layer."""
    setattr(function, _MARK, True)
    return function


def is_ours(obj: object) -> bool:
    """True for what :func:`mark` tagged."""
    return bool(getattr(obj, _MARK, False))
