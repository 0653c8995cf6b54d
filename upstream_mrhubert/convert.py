"""Fairseq checkpoint -> s3prl's converted format, so s3prl's own upstreams can load it.

s3prl's ``multires_hubert_local`` and ``hubert_local`` read ``{task_cfg, model_cfg, model_weight,
dictionaries_symbols}``, and s3prl's converter needs fairseq installed (it does not install on Python 3.11). This
one reads the fairseq file through our safe loader instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from upstream_mrhubert.checkpoints.io import load_checkpoint, write_converted_checkpoint
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.hub import build_model, checkpoint_family

# Our family -> the s3prl upstream that reads the converted file.
S3PRL_LOCAL_UPSTREAM = {"mrhubert": "multires_hubert_local", "hubert": "hubert_local"}


def convert_to_s3prl(
    source: str | os.PathLike[str], target: str | os.PathLike[str], *, overwrite: bool = False
) -> tuple[Path, str]:
    """Write ``source`` (a fairseq MR-HuBERT or HuBERT file) to ``target`` in s3prl's converted format.

    Returns the written path and the s3prl upstream name that loads it. The input is checked as thoroughly as
    loading it for inference would (the model is built from it: cfg bounds, every weight's shape, finite values),
    so an invalid file is refused and nothing is written. The target is written atomically, with the permissions a
    plain ``open()`` gives.
    """
    source, target = Path(source), Path(target)
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists; choose another output path or pass --force to overwrite it")
    if target.exists() and target.resolve() == source.resolve():
        raise UsageError(f"output {target} is the input file; choose another output path")
    loaded = load_checkpoint(source)
    if loaded.source_format == "s3prl_converted":
        raise UsageError(f"{source} is already in s3prl's converted format; nothing to convert")
    family = checkpoint_family(loaded)
    build_model(loaded)  # refuses what s3prl's loader would choke on later, before anything is written
    return write_converted_checkpoint(target, loaded), S3PRL_LOCAL_UPSTREAM[family]
