"""Errors of the PWCCA analysis (ValueErrors: the CLI prints their message without a traceback)."""

from __future__ import annotations


class CCAInputError(ValueError):
    """The views given to PWCCA cannot be analysed (shapes, sample counts, values)."""


class CCAFitError(ValueError):
    """No regularisation value gave a usable PWCCA fit."""
