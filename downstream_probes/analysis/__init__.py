"""Layer-wise analysis: PWCCA (Pasad et al. 2023 protocol), mutual information, spoken STS, learnt layer weights."""

from downstream_probes.analysis.pwcca import (
    CCAFitError,
    CCAInputError,
    CCAResult,
    CCATrial,
    PWCCAProjection,
    cca_protocol,
    cca_score,
    pwcca,
)

__all__ = [
    "CCAFitError",
    "CCAInputError",
    "CCAResult",
    "CCATrial",
    "PWCCAProjection",
    "cca_protocol",
    "cca_score",
    "pwcca",
]
