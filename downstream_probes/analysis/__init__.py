"""Layer-wise analysis: PWCCA (Pasad et al. 2023 protocol), mutual information, spoken STS, learnt layer weights."""

from downstream_probes.analysis.mutual_info import MutualInfoInputError, mutual_information_score
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
from downstream_probes.analysis.sts import STSInputError, spoken_sts_score

__all__ = [
    "CCAFitError",
    "CCAInputError",
    "CCAResult",
    "CCATrial",
    "MutualInfoInputError",
    "PWCCAProjection",
    "STSInputError",
    "cca_protocol",
    "cca_score",
    "mutual_information_score",
    "pwcca",
    "spoken_sts_score",
]
