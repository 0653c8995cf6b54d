"""Learnt SUPERB layer weights out of s3prl checkpoints: ``layer_weights.json`` and ``layer_weights.csv``.

s3prl's ``Featurizer`` sums the upstream's layers with ``softmax(w)``; it saves the raw ``w``
(``ckpt["Featurizer"]["weights"]``, one entry per layer, zeros at initialisation) in every ``states-*.ckpt``,
with the step (``ckpt["Step"]``) and the parsed command line (``ckpt["Args"]``: upstream, downstream, ...).
Nothing in s3prl exports them (its issues #539, #550, #580 ask for it). The JSON written here::

    {"upstream": str, "upstream_ckpt": str | None, "task": str, "checkpoint": str, "step": int,
     "layers": [{"name": str, "weight": float (softmax), "raw": float}, ...]}

``upstream`` and ``upstream_ckpt`` are the run's ``-u`` and ``-k``: together they name the model
(:func:`downstream_probes.tasks.upstream_identity`, as the leaderboard rows and ``mrsuperb compare`` do);
``checkpoint`` is the s3prl downstream checkpoint the weights were read from.

Layer names, first that works: the upstream's ``layer_names`` (built again through s3prl's hub, with the
run's ``-k``/``-g``), a ``layer_names`` entry stored in the checkpoint, else the layer indices ("0", "1", ...).

Reading a ``layer_weights.json`` (the leaderboard, ``mrsuperb compare``) needs neither torch nor the s3prl glue: the
functions that read checkpoints import them (``torch``, ``s3prl.compat``, ``s3prl.sweep``) themselves.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from downstream_probes.result_files import LAYER_WEIGHTS_FILE
from downstream_probes.tasks import task_for
from upstream_mrhubert.atomic_io import read_strict_json, write_json_atomic, write_text_atomic
from upstream_mrhubert.errors import MrsuperbError

LOGGER = logging.getLogger(__name__)
CSV_NAME = "layer_weights.csv"


class LayerWeightsError(MrsuperbError, ValueError):
    """A checkpoint or experiment folder from which no layer weights can be exported."""


def export_layer_weights(
    expdir_or_ckpt: str | Path,
    *,
    out_dir: str | Path | None = None,
    resolve_upstream: bool = True,
    layer_names: list[str] | None = None,
) -> Path:
    """Write ``layer_weights.json`` (and ``.csv``) for an s3prl experiment folder or checkpoint; returns the JSON.

    A folder's checkpoint is its best-on-dev one (``*-best.ckpt``, ``best-states-*.ckpt``), else its latest
    ``states-*.ckpt``. Files go to ``out_dir`` (default: the checkpoint's folder). ``layer_names`` overrides
    the names; ``resolve_upstream=False`` skips building the upstream to ask it for them.
    """
    checkpoint = find_checkpoint(Path(expdir_or_ckpt))
    record = read_layer_weights(checkpoint, resolve_upstream=resolve_upstream, layer_names=layer_names)
    target = Path(out_dir) if out_dir is not None else checkpoint.parent
    json_path = write_json_atomic(target / LAYER_WEIGHTS_FILE, record)
    write_text_atomic(target / CSV_NAME, _csv(record))
    return json_path


def find_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a file, else the experiment folder's best (or latest) checkpoint."""
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: give an s3prl experiment folder (-p) or a .ckpt file")
    from downstream_probes.s3prl.sweep import best_checkpoint

    try:
        return best_checkpoint(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no s3prl checkpoint (*-best.ckpt, best-states-*.ckpt, states-*.ckpt) in {path}: "
            "is it the -p folder of a finished run_downstream.py training?"
        ) from None


def load_s3prl_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` with the safe unpickler, allowing the classes s3prl checkpoints hold (``argparse.Namespace``)."""
    import pickle

    import torch

    from downstream_probes.s3prl import compat as s3prl_compat

    s3prl_compat.allow_s3prl_checkpoint_globals()
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise LayerWeightsError(f"{path} is not a readable s3prl checkpoint ({error})") from None
    if not isinstance(checkpoint, dict):
        raise LayerWeightsError(f"{path} is not an s3prl checkpoint (a {type(checkpoint).__name__}, not a dict)")
    return checkpoint


def read_layer_weights(
    checkpoint_path: Path, *, resolve_upstream: bool = True, layer_names: list[str] | None = None
) -> dict[str, Any]:
    """The ``layer_weights.json`` record of one checkpoint (see the module docstring)."""
    checkpoint = load_s3prl_checkpoint(checkpoint_path)
    featurizer = checkpoint.get("Featurizer")
    if not isinstance(featurizer, dict) or "weights" not in featurizer:
        raise LayerWeightsError(
            f"{checkpoint_path} has no Featurizer weights: the run used a single layer (-l) or is not an s3prl "
            "downstream checkpoint, so there is no weighted sum to export"
        )
    raw = np.asarray(featurizer["weights"].detach().cpu().double().numpy()).reshape(-1)
    if not np.isfinite(raw).all():
        raise LayerWeightsError(
            f"{checkpoint_path}: the Featurizer weights hold NaN or infinite values (the run diverged); export an "
            "earlier checkpoint"
        )
    weights = np.exp(raw - raw.max())
    weights /= weights.sum()
    args = checkpoint.get("Args")
    upstream = str(getattr(args, "upstream", "") or "")
    names = layer_names or _resolve_names(checkpoint, args, len(raw), resolve_upstream)
    if len(names) != len(raw):
        raise LayerWeightsError(f"{len(names)} layer names given for the {len(raw)} weights in {checkpoint_path}")
    return {
        "upstream": upstream,
        "upstream_ckpt": _upstream_checkpoint(args),
        "task": _task_name(str(getattr(args, "downstream", "") or "")),
        "checkpoint": str(checkpoint_path.resolve()),
        "step": int(checkpoint.get("Step", 0)),
        "layers": [
            {"name": str(name), "weight": float(weight), "raw": float(value)}
            for name, weight, value in zip(names, weights, raw, strict=False)
        ],
    }


def _upstream_checkpoint(args: Any) -> str | None:
    """The run's ``-k``, absolute when it names an existing file (the model's identity uses its stem)."""
    checkpoint = getattr(args, "upstream_ckpt", None)
    if not checkpoint:
        return None
    path = Path(str(checkpoint))
    return str(path.resolve()) if path.is_file() else str(checkpoint)


def _task_name(downstream: str) -> str:
    """Our task name (asr, sf, ic, ...) for s3prl's ``-d`` value, or the value itself."""
    spec = task_for(downstream)
    return spec.task if spec is not None else downstream


def _resolve_names(checkpoint: dict, args: Any, count: int, resolve_upstream: bool) -> list[str]:
    if resolve_upstream and getattr(args, "upstream", None):
        names = _names_from_upstream(args)
        if names is not None and len(names) == count:
            return names
        if names is not None:
            raise LayerWeightsError(
                f"the checkpoint holds {count} Featurizer weights, but upstream {args.upstream} has {len(names)} "
                f"layers ({', '.join(names)}): it was trained with another upstream or checkpoint; export it with "
                "the -k it was trained with"
            )
    stored = checkpoint.get("layer_names")
    if isinstance(stored, (list, tuple)) and len(stored) == count:
        return [str(name) for name in stored]
    LOGGER.warning("no layer names for upstream %r: the layers are named by index", getattr(args, "upstream", None))
    return [str(index) for index in range(count)]


def _names_from_upstream(args: Any) -> list[str] | None:
    """The upstream's ``layer_names``, built through s3prl's hub with the run's checkpoint and config."""
    from downstream_probes.s3prl.sweep import upstream_layer_names

    try:
        return upstream_layer_names(
            args.upstream, getattr(args, "upstream_ckpt", None), getattr(args, "upstream_model_config", None)
        )
    except Exception as error:
        LOGGER.warning("could not build upstream %r to read its layer names (%s)", args.upstream, error)
        return None


def _csv(record: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "name", "weight", "raw"])
    for index, layer in enumerate(record["layers"]):
        writer.writerow([index, layer["name"], repr(layer["weight"]), repr(layer["raw"])])
    return buffer.getvalue()


def load_layer_weights_file(path: str | Path) -> dict[str, Any]:
    """Read and check a ``layer_weights.json`` (see the module docstring): strict JSON, one entry per layer name,
    every weight a finite number.

    Raises:
        LayerWeightsError: naming the file and what is wrong.
    """
    path = Path(path)
    remedy = "write it again with mrsuperb export-weights"
    data = read_strict_json(path, LayerWeightsError, remedy)
    if not isinstance(data, dict) or not isinstance(data.get("layers"), list) or not data["layers"]:
        raise LayerWeightsError(f"{path} is not a layer_weights.json (no list of layers); {remedy}")
    for key in ("upstream", "task"):
        if not isinstance(data.get(key), str):
            raise LayerWeightsError(f"{path}: '{key}' is {data.get(key)!r}, not a string; {remedy}")
    seen: set[str] = set()
    for number, layer in enumerate(data["layers"]):
        if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
            raise LayerWeightsError(f"{path}: layer entry {number} is {layer!r}, not a mapping with a name; {remedy}")
        weight = layer.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not np.isfinite(weight):
            raise LayerWeightsError(
                f"{path}: the weight of layer {layer['name']} is {weight!r}, not a number; {remedy}"
            )
        if layer["name"] in seen:
            raise LayerWeightsError(f"{path}: layer {layer['name']} is listed twice; {remedy}")
        seen.add(layer["name"])
    return data
