"""Entry points for every upstream name in :mod:`upstream_mrhubert.checkpoints.registry` (s3prl's ``-u NAME``).

Each name is a function ``f(ckpt=None, model_config=None, refresh=False, **options) -> nn.Module`` (s3prl's hub
signature; the runner calls it with ``-k``, ``-g`` and ``-r``). The functions are generated from the registry, so
a checkpoint added there is an upstream here.

Where the checkpoint comes from, first match wins:
1. ``ckpt=`` (s3prl's ``-k``): a local file (fairseq or s3prl-converted format), or an http(s) URL;
2. ``$MRHUBERT_CKPT_DIR`` (default ``~/.cache/mrhubert``) / the registry's file name;
3. a download of the registry's URL into that folder (progress bar; ``refresh=True`` downloads again).
Offline, the error names the URL and the folder to put the file in.

Options (keyword arguments, or a YAML mapping given as ``model_config``, s3prl's ``-g``; keywords win):
``pre_residual`` (MR-HuBERT only: add the residual before each decoder, arXiv 2410.23955 Appendix C),
``include_block_outputs`` (also expose the block outputs after the residual sums), ``precision`` (``fp32``, the
default, ``bf16`` or ``fp16`` on CUDA: the forward under autocast, :mod:`upstream_mrhubert.precision`) and
``cnn_segment_frames`` (MR-HuBERT only: run the CNN that many 20 ms frames at a time, for long audio in less
memory, :mod:`upstream_mrhubert.streamed_cnn`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from torch import nn

from upstream_mrhubert.checkpoints import registry
from upstream_mrhubert.checkpoints.download import CKPT_DIR_ENV, checkpoint_dir, download_file
from upstream_mrhubert.checkpoints.io import CheckpointError, LoadedCheckpoint, check_checkpoint_path, load_checkpoint
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.hubert_baseline import HubertBaseline
from upstream_mrhubert.model import MultiresHubert
from upstream_mrhubert.precision import DEFAULT_PRECISION, PRECISIONS
from upstream_mrhubert.upstream import S3prlUpstream

UPSTREAM_OPTIONS: dict[str, type] = {
    "pre_residual": bool,
    "include_block_outputs": bool,
    "precision": str,
    "cnn_segment_frames": int,
}
FAMILY_NAMES = {"mrhubert": "MR-HuBERT (fairseq 'multires_hubert')", "hubert": "HuBERT (fairseq 'hubert')"}


def read_upstream_options(model_config: str | os.PathLike[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Our options from s3prl's ``-g`` file (YAML, parsed safely) or a mapping; unknown keys are an error."""
    if model_config is None or model_config == "":
        return {}
    source = "model_config"
    if isinstance(model_config, Mapping):
        options = dict(model_config)
    else:
        path = Path(model_config)
        source = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"upstream model config {path} not found (s3prl: -g PATH)")
        try:
            options = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise UsageError(f"upstream model config {path} is not valid YAML: {error}") from None
        if not isinstance(options, Mapping):
            raise UsageError(
                f"upstream model config {path} must be a YAML mapping of options, got {type(options).__name__}"
            )
    return _checked_options(options, source)


def _checked_options(options: Mapping[str, Any], source: str) -> dict[str, Any]:
    unknown = sorted(set(options) - set(UPSTREAM_OPTIONS))
    if unknown:
        raise UsageError(f"{source}: unknown upstream option(s) {unknown}; known: {sorted(UPSTREAM_OPTIONS)}")
    for key, value in options.items():
        if key == "precision" and value not in PRECISIONS:
            raise UsageError(f"{source}: option precision must be one of {sorted(PRECISIONS)}, got {value!r}")
        if key == "cnn_segment_frames" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"{source}: option cnn_segment_frames must be a positive integer, got {value!r}")
        if not isinstance(value, UPSTREAM_OPTIONS[key]):
            raise UsageError(f"{source}: option {key} must be true or false, got {value!r}")
    return dict(options)


def checkpoint_family(loaded: LoadedCheckpoint) -> str:
    """ "mrhubert" or "hubert": by fairseq's registered model name, else by the parameter names."""
    if loaded.model_name == "multires_hubert":
        return "mrhubert"
    if loaded.model_name == "hubert":
        return "hubert"
    keys = loaded.state_dict.keys()
    if any(key.startswith(("middle_encoder.", "encoders.")) for key in keys):
        return "mrhubert"
    if any(key.startswith("encoder.layers.") for key in keys):
        return "hubert"
    raise CheckpointError(
        f"{loaded.path} is neither an MR-HuBERT nor a HuBERT checkpoint (model {loaded.model_name or 'unnamed'})"
    )


def build_model(
    loaded: LoadedCheckpoint, *, pre_residual: bool = False, cnn_segment_frames: int | None = None
) -> nn.Module:
    """Our model for a loaded checkpoint of either family."""
    if checkpoint_family(loaded) == "hubert":
        if pre_residual:
            raise UsageError("pre_residual applies to MR-HuBERT decoders only; HuBERT has no residual to move")
        if cnn_segment_frames is not None:
            raise UsageError("cnn_segment_frames applies to MR-HuBERT only; remove it for a HuBERT checkpoint")
        return HubertBaseline.from_checkpoint(loaded)
    return MultiresHubert.from_checkpoint(loaded, pre_residual=pre_residual, cnn_segment_frames=cnn_segment_frames)


def resolve_checkpoint(name: str, ckpt: str | os.PathLike[str] | None = None, refresh: bool = False) -> Path:
    """The local file for upstream ``name``: ``ckpt``, else the cache folder, else a download into it."""
    if ckpt is not None and str(ckpt) != "":
        ckpt = str(ckpt)
        if urlparse(ckpt).scheme in ("http", "https"):
            target = checkpoint_dir() / Path(urlparse(ckpt).path).name
            return target if target.is_file() and not refresh else download_file(ckpt, target)
        path = Path(ckpt).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} given as ckpt (s3prl: -k) does not exist")
        return check_checkpoint_path(path)
    if name in registry.LOCAL_UPSTREAMS:
        raise UsageError(f"upstream {name} needs a checkpoint file: pass ckpt=PATH (s3prl: -k PATH)")
    release = registry.CHECKPOINTS_BY_NAME[name]
    target = checkpoint_dir() / release.filename
    if target.is_file() and not refresh:
        return target
    return download_file(release.url, target, sha256=release.sha256)


def _expected_family(name: str) -> str:
    if name in registry.LOCAL_UPSTREAMS:
        return registry.LOCAL_UPSTREAMS[name]
    return registry.CHECKPOINTS_BY_NAME[name].family


def build_upstream(
    name: str,
    ckpt: str | os.PathLike[str] | None = None,
    model_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    refresh: bool = False,
    **options: Any,
) -> S3prlUpstream:
    """The s3prl upstream ``name`` (what every entry point of this module calls)."""
    if name not in registry.ALL_UPSTREAM_NAMES:
        raise UsageError(f"unknown upstream {name!r}; known: {', '.join(registry.ALL_UPSTREAM_NAMES)}")
    settings = {**read_upstream_options(model_config), **_checked_options(options, f"upstream {name}")}
    path = resolve_checkpoint(name, ckpt, refresh)
    loaded = load_checkpoint(path)
    family, expected = checkpoint_family(loaded), _expected_family(name)
    if family != expected:
        suggestion = "mrhubert_local" if family == "mrhubert" else "hubert_base_ls960"
        raise CheckpointError(
            f"{path} is a {FAMILY_NAMES[family]} checkpoint but upstream {name} expects {FAMILY_NAMES[expected]}; "
            f"use -u {suggestion} -k {path}"
        )
    model = build_model(
        loaded,
        pre_residual=settings.get("pre_residual", False),
        cnn_segment_frames=settings.get("cnn_segment_frames"),
    )
    return S3prlUpstream(
        model,
        name=name,
        checkpoint_path=path,
        include_block_outputs=settings.get("include_block_outputs", False),
        pre_residual=settings.get("pre_residual", False),
        precision=settings.get("precision", DEFAULT_PRECISION),
    )


_COMMON_DOC = """

Args:
    ckpt: a local checkpoint (fairseq or s3prl-converted) or an http(s) URL, used instead of the released one
        (s3prl: -k).{required}
    model_config: a YAML file (s3prl: -g) or mapping with the options below.
    refresh: download the checkpoint again even when it is cached (s3prl: -r).
    pre_residual: MR-HuBERT only; add each decoder's residual before the decoder (arXiv 2410.23955 App. C).
    include_block_outputs: also expose the block outputs after the residual sums.
    precision: fp32 (default), bf16, or fp16 (CUDA only): the forward under torch.autocast, states in float32.
    cnn_segment_frames: MR-HuBERT only; run the CNN that many 20 ms frames at a time (same frames, less memory).

Returns an s3prl upstream (``upstream(wavs)["hidden_states"]``, all at 20 ms, named by ``upstream.layer_names``).
Cache folder: ${env} (default ~/.cache/mrhubert)."""


def _docstring(name: str) -> str:
    if name in registry.LOCAL_UPSTREAMS:
        head = "Any MR-HuBERT checkpoint file, given as ckpt (s3prl: -u mrhubert_local -k PATH)."
        return head + _COMMON_DOC.format(required=" Required.", env=CKPT_DIR_ENV)
    release = registry.CHECKPOINTS_BY_NAME[name]
    paper = f" In arXiv 2410.23955: {release.paper_name}." if release.paper_name else ""
    head = f"{release.description[0].upper()}{release.description[1:]}.{paper}\n\nCheckpoint: {release.url}"
    return head + _COMMON_DOC.format(required="", env=CKPT_DIR_ENV)


def _entry_point(name: str) -> Callable[..., S3prlUpstream]:
    def entry_point(
        ckpt: str | os.PathLike[str] | None = None,
        model_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        refresh: bool = False,
        **options: Any,
    ) -> S3prlUpstream:
        return build_upstream(name, ckpt=ckpt, model_config=model_config, refresh=refresh, **options)

    entry_point.__name__ = entry_point.__qualname__ = name
    entry_point.__module__ = __name__
    entry_point.__doc__ = _docstring(name)
    return entry_point


ENTRY_POINTS: dict[str, Callable[..., S3prlUpstream]] = {
    name: _entry_point(name) for name in registry.ALL_UPSTREAM_NAMES
}
globals().update(ENTRY_POINTS)  # one module attribute per upstream name, for `upstream_mrhubert.hub:<name>`

__all__ = [  # noqa: PLE0604 (the entry-point names are strings, listed by the registry)
    "build_upstream",
    "checkpoint_family",
    "read_upstream_options",
    "resolve_checkpoint",
    *ENTRY_POINTS,
]
