"""Reading and writing fairseq and s3prl-converted checkpoints without fairseq, safely.

A fairseq checkpoint is a torch pickle whose top level holds ``args`` (``None``, or an ``argparse.Namespace``
in legacy files), ``cfg`` (a plain dict since 2021), ``model`` (the state dict), ``criterion``,
``optimizer_history``, ``task_state`` (``{"dictionaries": [fairseq.data.dictionary.Dictionary, ...]}``)
and ``extra_state`` (which may hold fairseq meters). Loading one with plain ``pickle`` would let the file run
arbitrary code, and loading it with ``weights_only=True`` fails on the fairseq classes. We load through torch's
restricted (``weights_only``) unpickler with an allow-list: the few classes genuine fairseq checkpoints contain
are mapped to inert stand-ins defined here; every other global is refused, before anything runs.

s3prl's "converted" format is ``{task_cfg, model_cfg, model_weight, dictionaries_symbols}``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import types
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from upstream_mrhubert.atomic_io import atomic_output

CONVERTED_KEYS = ("task_cfg", "model_cfg", "model_weight", "dictionaries_symbols")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, corrupt, unsafe or of an unknown layout."""


# --------------------------------------------------------------------------------------------------------------
# Inert stand-ins for the classes genuine fairseq checkpoints pickle. They only hold data.


class _InertRecord:
    """Base of the stand-ins: accepts any pickled state as plain attributes and never runs code."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, Mapping):
            self.__dict__.update(state)
        else:
            self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(sorted(self.__dict__))})"


class FairseqDictionary(_InertRecord):
    """Stand-in for ``fairseq.data.dictionary.Dictionary``; only ``symbols`` is used by inference."""

    symbols: list[str]

    @classmethod
    def from_symbols(cls, symbols: list[str]) -> FairseqDictionary:
        """Build the pickled state fairseq's Dictionary has: special symbols first, then the labels."""
        dictionary = cls()
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        all_symbols = specials + [s for s in symbols if s not in specials]
        dictionary.__dict__.update(
            bos_word="<s>",
            unk_word="<unk>",
            pad_word="<pad>",
            eos_word="</s>",
            symbols=all_symbols,
            count=[1] * len(all_symbols),
            indices={s: i for i, s in enumerate(all_symbols)},
            bos_index=0,
            pad_index=1,
            eos_index=2,
            unk_index=3,
            nspecial=4,
        )
        return dictionary


class FairseqMeter(_InertRecord):
    """Stand-in for fairseq's logging meters (kept in ``extra_state``; never needed for inference)."""


class FairseqMetersDict(OrderedDict):
    """Stand-in for ``fairseq.logging.meters.MetersDict`` (an OrderedDict subclass)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, Mapping):
            self.__dict__.update(state)


class LegacyArgs(_InertRecord):
    """Stand-in for ``argparse.Namespace`` in legacy checkpoints' ``args``: its fields become a cfg dict."""


# Full pickled path -> stand-in. Anything not listed here (or in torch's own tensor allow-list) is refused.
FAIRSEQ_STAND_INS: dict[str, type] = {
    "fairseq.data.dictionary.Dictionary": FairseqDictionary,
    "fairseq.logging.meters.AverageMeter": FairseqMeter,
    "fairseq.logging.meters.TimeMeter": FairseqMeter,
    "fairseq.logging.meters.StopwatchMeter": FairseqMeter,
    "fairseq.logging.meters.SumMeter": FairseqMeter,
    "fairseq.logging.meters.Meter": FairseqMeter,
    "fairseq.logging.meters.MetersDict": FairseqMetersDict,
    "argparse.Namespace": LegacyArgs,
}


def _numpy_allow_list() -> list[tuple[Any, str]]:
    """NumPy scalars and arrays appear in fairseq's ``extra_state`` (meter values); they are plain data."""
    import numpy as np

    allowed: list[tuple[Any, str]] = []
    core = getattr(np, "_core", None) or np.core
    for module_path in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [
            (core.multiarray.scalar, f"{module_path}.scalar"),
            (core.multiarray._reconstruct, f"{module_path}._reconstruct"),
        ]
    allowed += [(np.dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    allowed += [
        (type(np.dtype(name)), f"numpy.dtypes.{type(np.dtype(name)).__name__}")
        for name in ("float64", "float32", "int64", "int32", "bool")
    ]
    return allowed


def _allow_list() -> list[tuple[Any, str]]:
    return [(stand_in, path) for path, stand_in in FAIRSEQ_STAND_INS.items()] + _numpy_allow_list()


# --------------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedCheckpoint:
    """What inference needs from a checkpoint, whatever its on-disk layout."""

    model_cfg: dict[str, Any]
    task_cfg: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    dictionaries_symbols: list[list[str]] = field(default_factory=list)
    source_format: str = "fairseq"  # or "s3prl_converted"
    path: str = ""

    @property
    def model_name(self) -> str:
        """fairseq's registered model name (``multires_hubert``, ``hubert``), or "" when absent."""
        return str(self.model_cfg.get("_name", "") or "")


# Legacy ``args`` arrive as our stand-in, or as a real (inert) ``argparse.Namespace`` once something in the process
# has allow-listed that class for every torch.load (s3prl_compat does, for s3prl's own checkpoints).
_NAMESPACES = (LegacyArgs, argparse.Namespace)


def _read_restricted_pickle(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    try:
        with torch.serialization.safe_globals(_allow_list()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error)) or re.search(r"function (\S+)", str(error))
        if refused:
            raise CheckpointError(
                f"refused to load {path}: it pickles {refused.group(1)}, which genuine fairseq/s3prl checkpoints "
                "never contain and which could run code when unpickled. Nothing from the file was executed. "
                "Only load checkpoints from sources you trust."
            ) from None
        raise CheckpointError(
            f"{path} is corrupt or not a torch checkpoint ({_first_line(error)}); "
            "download it again or point to another file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{path} is truncated, corrupt or not a torch checkpoint ({type(error).__name__}: {_first_line(error)}); "
            "download it again or point to another file"
        ) from None


def _first_line(error: BaseException) -> str:
    """torch's loader errors run to paragraphs of advice that does not apply here; keep the gist."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return first.split(". ")[0][:200]


def _plain_config(value: Any) -> dict[str, Any]:
    """cfg sections arrive as dicts, namespaces or None; return a plain dict."""
    if value is None:
        return {}
    if isinstance(value, _NAMESPACES):
        return dict(value.__dict__)
    if isinstance(value, Mapping):
        return dict(value)
    raise CheckpointError(f"unexpected config section of type {type(value).__name__}")


def _dictionary_symbols(task_state: Any) -> list[list[str]]:
    dictionaries = (task_state or {}).get("dictionaries", []) if isinstance(task_state, Mapping) else []
    return [list(getattr(d, "symbols", [])) for d in dictionaries]


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Load a raw fairseq checkpoint or s3prl's converted one, refusing anything that could run code."""
    path = Path(path)
    state = _read_restricted_pickle(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a fairseq or s3prl checkpoint dict")

    if all(key in state for key in CONVERTED_KEYS):
        return LoadedCheckpoint(
            model_cfg=_plain_config(state["model_cfg"]),
            task_cfg=_plain_config(state["task_cfg"]),
            state_dict=dict(state["model_weight"]),
            dictionaries_symbols=[list(symbols) for symbols in state["dictionaries_symbols"]],
            source_format="s3prl_converted",
            path=str(path),
        )

    if "model" not in state:
        raise CheckpointError(
            f"{path} is neither a fairseq checkpoint (no 'model' key) nor s3prl's converted format "
            f"(keys {', '.join(CONVERTED_KEYS)}); found keys: {', '.join(map(str, state))}"
        )
    cfg = state.get("cfg")
    if cfg:
        model_cfg, task_cfg = _plain_config(cfg.get("model")), _plain_config(cfg.get("task"))
    elif isinstance(state.get("args"), _NAMESPACES):
        # Legacy files keep one flat namespace for model and task options alike.
        model_cfg = task_cfg = _plain_config(state["args"])
        model_cfg = {**model_cfg, "_name": model_cfg.get("arch", model_cfg.get("_name", ""))}
    else:
        raise CheckpointError(f"{path} has neither 'cfg' nor legacy 'args': cannot tell the model configuration")
    return LoadedCheckpoint(
        model_cfg=model_cfg,
        task_cfg=task_cfg,
        state_dict=dict(state["model"]),
        dictionaries_symbols=_dictionary_symbols(state.get("task_state")),
        source_format="fairseq",
        path=str(path),
    )


# --------------------------------------------------------------------------------------------------------------
# Writing


# The pure-Python pickler (private in the standard library, so typed here as Any).
_PurePythonPickler: Any = pickle.__dict__["_Pickler"]


class _FairseqPathPickler(_PurePythonPickler):
    """Pickles our stand-ins under fairseq's real class paths, so written files match genuine ones.

    The pure-Python pickler is used because only it lets ``save_global`` be overridden; torch.save accepts it
    through ``pickle_module``.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        fairseq_path = _FAIRSEQ_PATH_OF.get(obj)
        if fairseq_path is None:
            super().save_global(obj, name)
            return
        module_path, class_name = fairseq_path.rsplit(".", 1)
        self.write(pickle.GLOBAL + f"{module_path}\n{class_name}\n".encode())
        self.memoize(obj)


_FAIRSEQ_PATH_OF: dict[type, str] = {
    FairseqDictionary: "fairseq.data.dictionary.Dictionary",
    FairseqMetersDict: "fairseq.logging.meters.MetersDict",
}
_FAIRSEQ_PICKLE_MODULE = types.SimpleNamespace(__name__="fairseq_path_pickle", Pickler=_FairseqPathPickler)


def _atomic_torch_save(obj: Any, path: Path, pickle_module: Any = pickle) -> None:
    """``torch.save`` through the project's atomic writer: a failure never leaves a half-written checkpoint."""
    with atomic_output(path) as stream:
        torch.save(obj, stream, pickle_module=pickle_module)


def write_fairseq_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_cfg: Mapping[str, Any],
    task_cfg: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    dictionaries_symbols: list[list[str]],
) -> Path:
    """Write a checkpoint in fairseq's real on-disk layout (pickled ``Dictionary`` objects included)."""
    path = Path(path)
    dictionaries = [FairseqDictionary.from_symbols(symbols) for symbols in dictionaries_symbols]
    state = {
        "args": None,
        "cfg": {
            "_name": None,
            "common": {"seed": 1},
            "model": dict(model_cfg),
            "task": dict(task_cfg),
            "criterion": {"_name": "hubert"},
        },
        "model": OrderedDict((key, value.detach().cpu().contiguous()) for key, value in state_dict.items()),
        "criterion": None,
        "optimizer_history": [
            {
                "criterion_name": "HubertCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": 0,
            }
        ],
        "task_state": {"dictionaries": dictionaries},
        "extra_state": {"epoch": 1, "metrics": {}},
    }
    _atomic_torch_save(state, path, pickle_module=_FAIRSEQ_PICKLE_MODULE)
    return path


def write_converted_checkpoint(path: str | os.PathLike[str], loaded: LoadedCheckpoint) -> Path:
    """Write s3prl's converted format, which its own ``multires_hubert_local``/``hubert_local`` read."""
    path = Path(path)
    _atomic_torch_save(
        {
            "task_cfg": dict(loaded.task_cfg),
            "model_cfg": dict(loaded.model_cfg),
            "model_weight": OrderedDict(loaded.state_dict),
            "dictionaries_symbols": [list(symbols) for symbols in loaded.dictionaries_symbols],
        },
        path,
    )
    return path


def legacy_namespace(**fields: Any) -> argparse.Namespace:
    """An ``argparse.Namespace`` as legacy fairseq files hold in ``args`` (for writing test fixtures)."""
    return argparse.Namespace(**fields)
