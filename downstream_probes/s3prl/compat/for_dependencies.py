"""Fixes for what s3prl uses but does not declare, or what its dependencies removed: tensorboardX, huggingface_hub's
legacy names (1.0), catalyst's ``DistributedSamplerWrapper`` and NumPy 2's removed aliases."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import numpy as np
import torch
import torch.utils.data


def require_tensorboardx() -> None:
    """s3prl's runner imports ``tensorboardX`` but does not declare it (our setup.cfg does).

    Fails early with an install hint rather than deep inside ``s3prl.downstream.runner``.
    """
    try:
        importlib.import_module("tensorboardX")
    except ImportError as error:
        raise ImportError(
            "s3prl's runner needs tensorboardX, which is not installed: run `pip install tensorboardX`"
        ) from error


class HfFolder:
    """The token helper ``huggingface_hub`` removed in 1.0, kept for ``s3prl.run_downstream`` / runner imports."""

    @staticmethod
    def get_token() -> str | None:
        import huggingface_hub

        return huggingface_hub.get_token()

    @staticmethod
    def save_token(token: str) -> None:
        import huggingface_hub

        huggingface_hub.login(token=token, add_to_git_credential=False)

    @staticmethod
    def delete_token() -> None:
        import huggingface_hub

        huggingface_hub.logout()


class Repository:
    """``huggingface_hub.Repository`` (git-based, removed in 1.0); s3prl only uses it for ``--push_to_hf_hub``.

    Constructing it raises one clear error: pushing needs today's HTTP API, which s3prl's push code predates.
    """

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(
            "s3prl's --push_to_hf_hub relies on huggingface_hub.Repository, removed in huggingface_hub 1.0; "
            "upload the experiment folder with `hf upload REPO EXPDIR` instead"
        )


def provide_huggingface_hub_legacy_names() -> None:
    """``from huggingface_hub import HfApi, HfFolder, Repository`` fails on huggingface_hub >= 1.

    ``s3prl.run_downstream`` and ``s3prl.downstream.runner`` import those names at module level, so nothing runs.
    ``HfFolder`` is restored on top of today's token functions; ``Repository`` explains the missing push path.
    """
    import huggingface_hub

    if not hasattr(huggingface_hub, "HfFolder"):
        huggingface_hub.HfFolder = HfFolder
    if not hasattr(huggingface_hub, "Repository"):
        huggingface_hub.Repository = Repository


class DistributedSamplerWrapper(torch.utils.data.DistributedSampler):
    """Shards any sampler across distributed ranks (what ``catalyst.data.sampler.DistributedSamplerWrapper`` did).

    Each epoch the wrapped sampler is drawn once (e.g. KS's class-balanced ``WeightedRandomSampler``); this rank
    then takes its share of those draws, chosen by ``DistributedSampler`` (shuffled with the epoch as seed).
    """

    def __init__(self, sampler, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True) -> None:
        super().__init__(
            range(len(sampler)),  # type: ignore[arg-type]  # only len() of the "dataset" is used: the draws' positions
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
        )
        self.sampler = sampler

    def __iter__(self):
        drawn = list(self.sampler)
        return iter([drawn[position] for position in super().__iter__()])


def provide_catalyst_sampler() -> None:
    """s3prl's KS expert imports ``DistributedSamplerWrapper`` from ``catalyst``, which it does not declare and
    which no longer installs (catalyst 22.4's metadata is rejected by pip >= 24.1).

    When catalyst is not importable, ``catalyst.data.sampler`` is provided holding ``DistributedSamplerWrapper``
    above; an installed catalyst is left alone.
    """
    try:
        importlib.import_module("catalyst.data.sampler")
        return
    except ImportError:
        pass

    stand_ins: dict[str, Any] = {}
    for name in ("catalyst", "catalyst.data", "catalyst.data.sampler"):
        module = sys.modules.get(name) or types.ModuleType(
            name, "mrsuperb stand-in (see downstream_probes.s3prl.compat)"
        )
        sys.modules[name] = stand_ins[name] = module
    stand_ins["catalyst"].data = stand_ins["catalyst.data"]
    stand_ins["catalyst.data"].sampler = stand_ins["catalyst.data.sampler"]
    stand_ins["catalyst.data.sampler"].DistributedSamplerWrapper = DistributedSamplerWrapper


def restore_numpy_aliases() -> None:
    """NumPy 2 removed the aliases ``np.int``, ``np.float``, ``np.bool``, ``np.complex`` (deprecated in 1.20).

    s3prl's span masking (wav2vec2/WavLM/LightHuBERT ``compute_mask_indices``) calls ``np.fromiter(..., np.int)``
    and ``s3prl.utility.audio`` uses ``np.complex``. The aliases meant the Python builtins, so they are restored as
    exactly those.
    """
    for name, builtin in (("int", int), ("float", float), ("bool", bool), ("complex", complex), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, builtin)
