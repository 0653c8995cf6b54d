"""Read a CTranslate2 Whisper model folder (``model.bin`` + ``config.json``) into transformers' ``WhisperEncoder``.

The format (CTranslate2's ``ModelSpec._serialize``, binary version 6; all integers little-endian)::

    uint32  binary version (6)
    string  spec name ("WhisperSpec")
    uint32  spec revision (3 for Whisper)
    uint32  number of variables, then for each:
        string  name ("encoder/layer_0/self_attention/linear_0/weight", ...)
        uint8   rank, then rank x uint32 dimensions
        uint8   dtype id: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16
        uint32  byte count, then the bytes (row-major)
    uint32  number of aliases, then for each: string alias, string target name

    string = uint16 length (including a trailing NUL), the UTF-8 bytes, the NUL.

The encoder's variables and their transformers counterparts (``WhisperEncoder`` parameter names):

    encoder/conv1/{weight,bias}                       conv1.{weight,bias}            [D, n_mels, 3], [D]
    encoder/conv2/{weight,bias}                       conv2.{weight,bias}            [D, D, 3], [D]
    encoder/position_encodings/encodings              embed_positions.weight         [1500, D] (sinusoids)
    encoder/num_heads                                 config.encoder_attention_heads int16 scalar
    encoder/layer_i/self_attention/layer_norm/{gamma,beta}  layers.i.self_attn_layer_norm.{weight,bias}
    encoder/layer_i/self_attention/linear_0/{weight,bias}   q_proj, k_proj, v_proj stacked: [3D, D], [3D]
                                                            (k_proj has no bias in Whisper: its third is zeros)
    encoder/layer_i/self_attention/linear_1/{weight,bias}   layers.i.self_attn.out_proj
    encoder/layer_i/ffn/layer_norm/{gamma,beta}             layers.i.final_layer_norm
    encoder/layer_i/ffn/linear_0/{weight,bias}              layers.i.fc1                  [F, D]
    encoder/layer_i/ffn/linear_1/{weight,bias}              layers.i.fc2                  [D, F]
    encoder/layer_norm/{gamma,beta}                         layer_norm

Whisper releases are stored in float16 (``faster-whisper`` conversions); float32 and bfloat16 files load too. Each
weight is converted to float32 exactly (every float16 value is a float32 value). Quantised files (int8 weights with
``weight_scale``) are refused: dequantising would change the model.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from whisper_upstream.errors import WhisperUpstreamError

BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
MODEL_FILE = "model.bin"
_DTYPES: dict[int, np.dtype | None] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: None,  # bfloat16: no numpy dtype, read as uint16 and widened
}
_LAYER = re.compile(r"encoder/layer_(\d+)/")
_PER_LAYER = {
    "self_attention/layer_norm/gamma": "self_attn_layer_norm.weight",
    "self_attention/layer_norm/beta": "self_attn_layer_norm.bias",
    "self_attention/linear_1/weight": "self_attn.out_proj.weight",
    "self_attention/linear_1/bias": "self_attn.out_proj.bias",
    "ffn/layer_norm/gamma": "final_layer_norm.weight",
    "ffn/layer_norm/beta": "final_layer_norm.bias",
    "ffn/linear_0/weight": "fc1.weight",
    "ffn/linear_0/bias": "fc1.bias",
    "ffn/linear_1/weight": "fc2.weight",
    "ffn/linear_1/bias": "fc2.bias",
}
_GLOBAL = {
    "encoder/conv1/weight": "conv1.weight",
    "encoder/conv1/bias": "conv1.bias",
    "encoder/conv2/weight": "conv2.weight",
    "encoder/conv2/bias": "conv2.bias",
    "encoder/position_encodings/encodings": "embed_positions.weight",
    "encoder/layer_norm/gamma": "layer_norm.weight",
    "encoder/layer_norm/beta": "layer_norm.bias",
}


@dataclass(frozen=True)
class CTranslate2Model:
    """The variables of a ``model.bin``: name -> array (float16/32 as stored; bfloat16 widened to float32)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


def is_ctranslate2_folder(path: Path) -> bool:
    """Whether ``path`` is a folder whose ``model.bin`` starts with CTranslate2's header."""
    model = path / MODEL_FILE
    if not model.is_file():
        return False
    with open(model, "rb") as stream:
        head = stream.read(4)
    return len(head) == 4 and struct.unpack("<I", head)[0] == BINARY_VERSION


def _read(stream: BinaryIO, size: int, path: Path) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise WhisperUpstreamError(
            f"{path} ends early: it is truncated or not a CTranslate2 model.bin (download it again; a model in "
            "parts must be concatenated in order)"
        )
    return data


def _string(stream: BinaryIO, path: Path) -> str:
    (length,) = struct.unpack("<H", _read(stream, 2, path))
    return _read(stream, length, path)[:-1].decode("utf-8")


def read_model_bin(path: str | Path) -> CTranslate2Model:
    """Parse a CTranslate2 ``model.bin`` (the layout in this module's docstring)."""
    path = Path(path)
    with open(path, "rb") as stream:
        (version,) = struct.unpack("<I", _read(stream, 4, path))
        if version != BINARY_VERSION:
            raise WhisperUpstreamError(
                f"{path} has CTranslate2 binary version {version}; this reader knows version {BINARY_VERSION} "
                "(convert the model again with ctranslate2>=3)"
            )
        spec = _string(stream, path)
        (revision,) = struct.unpack("<I", _read(stream, 4, path))
        (count,) = struct.unpack("<I", _read(stream, 4, path))
        variables: dict[str, np.ndarray] = {}
        for _ in range(count):
            name = _string(stream, path)
            (rank,) = struct.unpack("<B", _read(stream, 1, path))
            shape = struct.unpack(f"<{rank}I", _read(stream, 4 * rank, path))
            (dtype_id,) = struct.unpack("<B", _read(stream, 1, path))
            (size,) = struct.unpack("<I", _read(stream, 4, path))
            raw = _read(stream, size, path)
            if dtype_id not in _DTYPES:
                raise WhisperUpstreamError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
            dtype = _DTYPES[dtype_id]
            if dtype is None:  # bfloat16: the high half of a float32
                widened = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                variables[name] = widened.view(np.float32).reshape(shape)
            else:
                variables[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        (alias_count,) = struct.unpack("<I", _read(stream, 4, path))
        aliases = {_string(stream, path): _string(stream, path) for _ in range(alias_count)}
    return CTranslate2Model(spec, revision, variables, aliases)


@dataclass(frozen=True)
class EncoderShape:
    """What a ``WhisperConfig`` needs to build the encoder."""

    num_mel_bins: int
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    max_source_positions: int


def encoder_shape(model: CTranslate2Model, path: Path) -> EncoderShape:
    variables = model.variables
    try:
        conv1 = variables["encoder/conv1/weight"]
        heads = int(variables["encoder/num_heads"])
        positions = variables["encoder/position_encodings/encodings"]
        ffn = variables["encoder/layer_0/ffn/linear_0/weight"]
    except KeyError as missing:
        raise WhisperUpstreamError(
            f"{path} has no Whisper encoder variable {missing}: is it a Whisper model?"
        ) from None
    layers = {int(match.group(1)) for name in variables if (match := _LAYER.match(name))}
    return EncoderShape(
        num_mel_bins=int(conv1.shape[1]),
        d_model=int(conv1.shape[0]),
        encoder_layers=len(layers),
        encoder_attention_heads=heads,
        encoder_ffn_dim=int(ffn.shape[0]),
        max_source_positions=int(positions.shape[0]),
    )


def encoder_state_dict(model: CTranslate2Model, path: Path) -> dict[str, torch.Tensor]:
    """The float32 state dict of transformers' ``WhisperEncoder`` (names in this module's docstring)."""
    if model.spec != SPEC_NAME:
        raise WhisperUpstreamError(f"{path} holds a {model.spec!r}, not a {SPEC_NAME!r}: not a Whisper model")
    if any(name.endswith("weight_scale") for name in model.variables):
        raise WhisperUpstreamError(
            f"{path} is quantised (int8 weights with weight_scale); use a float16 or float32 conversion "
            "(ct2-transformers-converter --quantization float16)"
        )
    state: dict[str, torch.Tensor] = {}
    for name, value in model.variables.items():
        tensor = torch.from_numpy(np.asarray(value, dtype=np.float32).copy())
        if name in _GLOBAL:
            state[_GLOBAL[name]] = tensor
            continue
        match = _LAYER.match(name)
        if match is None:
            continue  # the decoder, num_heads
        prefix, rest = f"layers.{match.group(1)}.", name[match.end() :]
        if rest in _PER_LAYER:
            state[prefix + _PER_LAYER[rest]] = tensor
        elif rest == "self_attention/linear_0/weight":
            q, k, v = tensor.chunk(3, dim=0)
            state.update({prefix + "self_attn.q_proj.weight": q, prefix + "self_attn.k_proj.weight": k})
            state[prefix + "self_attn.v_proj.weight"] = v
        elif rest == "self_attention/linear_0/bias":
            q, k, v = tensor.chunk(3, dim=0)
            if torch.count_nonzero(k):
                raise WhisperUpstreamError(f"{path}: {name} has a non-zero key bias, which Whisper does not have")
            state.update({prefix + "self_attn.q_proj.bias": q, prefix + "self_attn.v_proj.bias": v})
        else:
            raise WhisperUpstreamError(f"{path}: unexpected encoder variable {name!r}; is it a Whisper model?")
    return state
