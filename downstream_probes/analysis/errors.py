"""Errors of the PWCCA analysis (ValueErrors: the CLI prints their message without a traceback)."""

from __future__ import annotations

from upstream_mrhubert.errors import MrsuperbError


class CCAInputError(MrsuperbError, ValueError):
    """The views given to PWCCA cannot be analysed (shapes, sample counts, values)."""


class CCAFitError(MrsuperbError, ValueError):
    """No regularisation value gave a usable PWCCA fit."""
