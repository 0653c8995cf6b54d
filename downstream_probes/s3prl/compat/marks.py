"""Marking what the compatibility layer installed, so that each fix is idempotent and tests can tell ours apart."""

from __future__ import annotations

from typing import TypeVar

_MARK = "__mrsuperb_compat__"
T = TypeVar("T")


def mark(installed: T) -> T:
    """Tag ``installed`` (a function, class or module proxy) as installed by the compatibility layer."""
    setattr(installed, _MARK, True)
    return installed


def is_ours(obj: object) -> bool:
    """True for what :func:`mark` tagged."""
    return bool(getattr(obj, _MARK, False))
