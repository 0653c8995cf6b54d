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
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from upstream_mrhubert.atomic_io import atomic_output
from upstream_mrhubert.checkpoints.errors import CheckpointError

CONVERTED_KEYS = ("task_cfg", "model_cfg", "model_weight", "dictionaries_symbols")


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
    # numpy.dtype only through the checked factory: plain numeric dtypes named by a string (item 7 of issue 14).
    allowed += [(_plain_numpy_dtype, "numpy.dtype"), (np.ndarray, "numpy.ndarray")]
    allowed += [
        (type(np.dtype(name)), f"numpy.dtypes.{type(np.dtype(name)).__name__}")
        # uint32: NumPy's generator state (MT19937 key), which the shared sweep's resume state holds
        for name in ("float64", "float32", "int64", "int32", "uint32", "bool")
    ]
    return allowed


def _allow_list() -> list[Any]:
    return [(stand_in, path) for path, stand_in in FAIRSEQ_STAND_INS.items()] + _numpy_allow_list()


# --------------------------------------------------------------------------------------------------------------
# What a loaded file may hold. The restricted unpickler stops code from running; these checks stop data that is
# safe to unpickle but not to use: numpy dtypes that make raw bytes into object pointers, tensors whose few stored
# bytes stand for gigabytes (stride 0, overlapping views), corrupted bytes, NaN/infinite weights.

# numpy kinds a checkpoint may hold: bool, signed and unsigned integers, floats, complex numbers.
PLAIN_NUMPY_KINDS = "biufc"


class _RefusedContent(Exception):
    """Raised inside the unpickler for a value we refuse; turned into a CheckpointError naming the file."""


def _plain_numpy_dtype(spec: Any, align: Any = False, copy: Any = True) -> Any:
    """``numpy.dtype`` as the unpickler may call it: a plain numeric type named by a string, nothing else.

    numpy's own pickles call ``numpy.dtype("f8", False, True)``; a list, dict or tuple spec would build a
    structured dtype, and object or void types would let raw bytes become pointers.
    """
    import numpy as np

    if not isinstance(spec, str):
        raise _RefusedContent(f"a numpy dtype built from {type(spec).__name__} {spec!r} (only plain numeric dtypes)")
    try:
        dtype = np.dtype(spec, bool(align), bool(copy))
    except TypeError as error:
        raise _RefusedContent(f"numpy dtype {spec!r} ({error})") from None
    _check_plain_dtype(dtype)
    return dtype


def _check_plain_dtype(dtype: Any) -> None:
    if dtype.kind not in PLAIN_NUMPY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise _RefusedContent(
            f"numpy dtype {dtype!r}: only plain numeric dtypes (bool, integers, floats) are accepted, no structured, "
            "object or void ones"
        )
    if dtype.hasobject:
        raise _RefusedContent(f"numpy dtype {dtype!r} holds Python objects")


def _check_numpy_values(value: Any) -> None:
    """Every numpy array, scalar and dtype anywhere in the unpickled data has a plain numeric dtype.

    A dtype's pickled state can add fields to a plain float64 after it was built (numpy's ``__setstate__``), so the
    dtypes are checked once unpickling is done, before anything reads the arrays' contents.
    """
    import numpy as np

    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor | str | bytes | int | float | bool) or item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.dtype):
            _check_plain_dtype(item)
        elif isinstance(item, np.ndarray | np.generic):
            _check_plain_dtype(item.dtype)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        if hasattr(item, "__dict__") and not isinstance(item, type):
            stack.extend(vars(item).values())


def _layout_problem(tensor: torch.Tensor) -> str | None:
    """Why a tensor's strides make its stored bytes stand for more elements than they hold, or None."""
    dims = sorted((stride, size) for size, stride in zip(tensor.shape, tensor.stride(), strict=True) if size > 1)
    reach = 0  # elements spanned by the dimensions seen so far, minus one
    for stride, size in dims:
        if stride == 0:
            return f"a stride of 0 (one stored value repeated {size} times; shape {tuple(tensor.shape)})"
        if stride <= reach:
            return f"overlapping elements (shape {tuple(tensor.shape)}, strides {tuple(tensor.stride())})"
        reach += (size - 1) * stride
    return None


def _byte_span(tensor: torch.Tensor) -> tuple[int, int]:
    reach = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True))
    start = int(tensor.storage_offset()) * tensor.element_size()
    return start, start + (int(reach) + 1) * tensor.element_size()


def check_state_dict(state_dict: Any, path: Path, section: str = "model") -> dict[str, torch.Tensor]:
    """The weights of a checkpoint as a plain dict, after checking each is usable.

    Every value is a tensor under a string key; no tensor has stride 0 or elements overlapping each other or
    another tensor's (so the weights never take more memory than the file stores); every floating-point value
    is finite. The error names the file and the key.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"{path}: {section!r} holds a {type(state_dict).__name__}, not a mapping of parameter names to tensors; "
            "the file is not a usable checkpoint"
        )
    spans: dict[int, list[tuple[int, int, str]]] = {}
    checked: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: {section!r} has the key {key!r}, not a parameter name")
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: weight {key} is a {type(tensor).__name__}, not a tensor")
        if tensor.numel() == 0:
            checked[key] = tensor
            continue
        problem = _layout_problem(tensor)
        if problem is not None:
            raise CheckpointError(
                f"{path}: weight {key} has {problem}; genuine checkpoints store every element once. Refused, so "
                "that a small file cannot make the model allocate gigabytes"
            )
        start, end = _byte_span(tensor)
        spans.setdefault(tensor.untyped_storage().data_ptr(), []).append((start, end, key))
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path}: weight {key} holds {bad} NaN/infinite value(s); the file is corrupt or comes from a "
                "diverged training. Download it again or use an earlier checkpoint"
            )
        checked[key] = tensor
    for views in spans.values():
        views.sort()
        reach, owner = -1, ""
        for start, end, key in views:
            if start < reach:
                raise CheckpointError(
                    f"{path}: weights {owner} and {key} overlap in memory (one stored block shared by both); "
                    "genuine checkpoints store every parameter separately. Refused"
                )
            if end > reach:
                reach, owner = end, key
    return checked


_CRC_CHUNK = 1 << 24


def verify_zip_checksums(path: Path) -> None:
    """Compare every member of a torch zip checkpoint with the CRC-32 its archive records.

    torch's reader does not check them, so flipped bytes in a tensor would load silently. Legacy (non-zip) torch
    files carry no checksums and are not checked here.
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    while member.read(_CRC_CHUNK):
                        pass
    except zipfile.BadZipFile as error:
        raise CheckpointError(
            f"{path} fails its CRC check ({error}): the bytes on disk are corrupt. Download it again or restore it "
            "from a backup"
        ) from None
    except (OSError, EOFError, zlib.error, NotImplementedError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt ({error}); download it again") from None


def check_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path if it is a regular file; otherwise the error says what it is instead."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, not a checkpoint file; pass the .pt file inside it")
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} is not a regular file (a FIFO, socket or device); copy the checkpoint into a file "
            "and pass that"
        )
    return path


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


DOWNLOAD_AGAIN = "download it again or point to another file"


def read_restricted_pickle(path: str | os.PathLike[str], remedy: str = DOWNLOAD_AGAIN) -> Any:
    """Any torch-saved file of ours or fairseq's/s3prl's, through the allow-listed unpickler (nothing runs).

    Args:
        path: the file.
        remedy: what the user should do when the file is truncated or corrupt (ends the error message).
    Raises:
        CheckpointError: the file pickles a class outside the allow-list, holds refused values, or is corrupt.
    """
    path = check_checkpoint_path(path)
    verify_zip_checksums(path)
    try:
        with torch.serialization.safe_globals(_allow_list()):
            state = torch.load(path, map_location="cpu", weights_only=True)
        _check_numpy_values(state)
        return state
    except _RefusedContent as error:
        raise CheckpointError(
            f"refused to load {path}: it holds {error}. Files we or fairseq/s3prl write never do, and such values "
            "can make raw bytes into memory addresses. Only load files from sources you trust."
        ) from None
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error)) or re.search(r"function (\S+)", str(error))
        if refused:
            raise CheckpointError(
                f"refused to load {path}: it pickles {refused.group(1)}, which files we or fairseq/s3prl write "
                "never contain and which could run code when unpickled. Nothing from the file was executed. "
                "Only load files from sources you trust."
            ) from None
        raise CheckpointError(f"{path} is corrupt or not a torch file ({_first_line(error)}); {remedy}") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"{path} is truncated, corrupt or not a torch file ({type(error).__name__}: {_first_line(error)}); {remedy}"
        ) from None


def _first_line(error: BaseException) -> str:
    """torch's loader errors run to paragraphs of advice that does not apply here; keep the gist."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return first.split(". ")[0][:200]


def _plain_config(value: Any, path: Path, section: str) -> dict[str, Any]:
    """cfg sections arrive as dicts, namespaces or None; return a plain dict."""
    if value is None:
        return {}
    if isinstance(value, _NAMESPACES):
        return dict(value.__dict__)
    if isinstance(value, Mapping):
        return dict(value)
    raise CheckpointError(
        f"{path}: {section!r} is a {type(value).__name__}, not a mapping of options; the file is not a usable checkpoint"
    )


def _symbol_lists(lists: Any, path: Path, what: str) -> list[list[str]]:
    """Each dictionary's symbols as a list of strings."""
    if not isinstance(lists, list | tuple):
        raise CheckpointError(f"{path}: {what} is a {type(lists).__name__}, not a list of dictionaries")
    result = []
    for index, symbols in enumerate(lists):
        if not isinstance(symbols, list | tuple) or not all(isinstance(s, str) for s in symbols):
            raise CheckpointError(
                f"{path}: {what}[{index}] symbols is a {type(symbols).__name__}, not a list of label strings"
            )
        result.append(list(symbols))
    return result


def _dictionary_symbols(task_state: Any, path: Path) -> list[list[str]]:
    dictionaries = (task_state or {}).get("dictionaries", []) if isinstance(task_state, Mapping) else []
    return _symbol_lists([getattr(d, "symbols", []) for d in dictionaries], path, "task_state.dictionaries")


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Load a raw fairseq checkpoint or s3prl's converted one, refusing anything that could run code.

    Checked on the way (each a :class:`CheckpointError` naming the file and the key): the zip's CRCs, the unpickled
    globals (allow-list) and numpy dtypes, the top-level types, and every weight (a tensor, no stride 0 or
    overlapping storage, finite). The shapes are checked against the cfg when the model is built
    (:func:`upstream_mrhubert.model.check_weight_shapes`).
    """
    path = Path(path)
    state = read_restricted_pickle(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a fairseq or s3prl checkpoint dict")

    if all(key in state for key in CONVERTED_KEYS):
        return LoadedCheckpoint(
            model_cfg=_plain_config(state["model_cfg"], path, "model_cfg"),
            task_cfg=_plain_config(state["task_cfg"], path, "task_cfg"),
            state_dict=check_state_dict(state["model_weight"], path, "model_weight"),
            dictionaries_symbols=_symbol_lists(state["dictionaries_symbols"], path, "dictionaries_symbols"),
            source_format="s3prl_converted",
            path=str(path),
        )

    if "model" not in state:
        raise CheckpointError(
            f"{path} is neither a fairseq checkpoint (no 'model' key) nor s3prl's converted format "
            f"(keys {', '.join(CONVERTED_KEYS)}); found keys: {', '.join(map(str, state))}"
        )
    cfg = state.get("cfg")
    if cfg is not None and not isinstance(cfg, Mapping):
        raise CheckpointError(f"{path}: 'cfg' is a {type(cfg).__name__}, not fairseq's mapping of cfg sections")
    if cfg:
        model_cfg = _plain_config(cfg.get("model"), path, "cfg.model")
        task_cfg = _plain_config(cfg.get("task"), path, "cfg.task")
    elif isinstance(state.get("args"), _NAMESPACES):
        # Legacy files keep one flat namespace for model and task options alike.
        model_cfg = task_cfg = _plain_config(state["args"], path, "args")
        model_cfg = {**model_cfg, "_name": model_cfg.get("arch", model_cfg.get("_name", ""))}
    else:
        raise CheckpointError(f"{path} has neither 'cfg' nor legacy 'args': cannot tell the model configuration")
    return LoadedCheckpoint(
        model_cfg=model_cfg,
        task_cfg=task_cfg,
        state_dict=check_state_dict(state["model"], path),
        dictionaries_symbols=_dictionary_symbols(state.get("task_state"), path),
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
