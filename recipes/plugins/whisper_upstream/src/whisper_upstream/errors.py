"""The one error class of this package.

A plugin does not need mrsuperb, but where mrsuperb is installed its command line prints a ``MrsuperbError`` as one
line: the class derives from it then (and from ``ValueError`` always, which both print the same way).
"""

from __future__ import annotations

try:
    from upstream_mrhubert.errors import MrsuperbError

    _BASES: tuple[type, ...] = (MrsuperbError, ValueError)
except ImportError:  # used without mrsuperb
    _BASES = (ValueError,)


class WhisperUpstreamError(*_BASES):  # type: ignore[misc]
    """Bad input to a Whisper upstream: a missing or malformed model, an unknown option, audio too long."""
