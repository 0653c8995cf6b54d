"""Layer-wise analysis: PWCCA (Pasad et al. 2023 protocol), mutual information, spoken STS, learnt layer weights;
``run_analysis`` runs all of them from one pass of an upstream (``mrsuperb analyze``).

The MI and STS functions are imported on first use (scikit-learn and scipy.stats are slow to import and the
PWCCA path and the layer-weight exporter do not need them).
"""

from importlib import import_module

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

_LAZY = {
    "MutualInfoInputError": "downstream_probes.analysis.mutual_info",
    "mutual_information_score": "downstream_probes.analysis.mutual_info",
    "STSInputError": "downstream_probes.analysis.sts",
    "spoken_sts_score": "downstream_probes.analysis.sts",
    "read_spoken_sts": "downstream_probes.analysis.sts",
    "spoken_sts_pair_score": "downstream_probes.analysis.sts",
    "AnalysisSettings": "downstream_probes.analysis.analyze",
    "run_analysis": "downstream_probes.analysis.analyze",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AnalysisSettings",
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
    "read_spoken_sts",
    "run_analysis",
    "spoken_sts_pair_score",
    "spoken_sts_score",
]
