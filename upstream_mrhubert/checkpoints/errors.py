"""The checkpoint error, in a module of its own so that the configuration parsers can raise it without importing the
file loader."""

from __future__ import annotations

from upstream_mrhubert.errors import MrsuperbError


class CheckpointError(MrsuperbError, ValueError):
    """A checkpoint file that cannot be used: missing, corrupt, unsafe or of an unknown layout."""
