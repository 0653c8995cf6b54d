"""Run an upstream over utterances once and keep what the analyses need, per layer, cached on disk.

What is kept (float32, one ``.npy`` per layer): for ``segments``, the mean-pooled phone and word segments (both
from one pass); for ``frames``, every frame of every chosen utterance with the matching log-mel frames.
States are taken at their own frame rate when the upstream offers ``native_states`` (our MR-HuBERT upstreams:
40 ms states stay 40 ms), else s3prl's ``hidden_states`` at ``get_downsample_rates``.

The cache entry's key hashes everything that changes its content: upstream name, checkpoint content (SHA-256),
upstream options, the corpus files (names and sizes), split, sampling settings, seed and this module's format
version. Entries are written to a temporary folder and renamed into place, so an interrupted run leaves none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from downstream_probes.analysis.mel import frames_at_stride, log_mel
from downstream_probes.analysis.segments import Segment, Utterance, pool_segments

FORMAT_VERSION = 2
CACHE_ENV = "MRSUPERB_CACHE"


@dataclass(frozen=True)
class LayerOutput:
    """One state of one utterance: ``features`` (frames, dims) and samples per frame."""

    name: str
    features: np.ndarray
    stride: int


# (waveform float32 1-D) -> states in layer order
Extractor = Callable[[np.ndarray], list[LayerOutput]]


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "mrsuperb")) / "layer_features"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(description: dict) -> str:
    payload = json.dumps({**description, "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def corpus_fingerprint(utterances: Sequence[Utterance]) -> str:
    """Names and sizes of every audio and alignment file (cheap, and changes when the corpus is rebuilt)."""
    digest = hashlib.sha256()
    for utterance in utterances:
        for path in (utterance.audio, utterance.alignment):
            if path is not None:
                digest.update(f"{path.name}:{path.stat().st_size};".encode())
    return digest.hexdigest()


def read_audio(path: Path) -> np.ndarray:
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    if rate != 16_000:
        raise ValueError(f"{path} is sampled at {rate} Hz; the upstreams take 16 kHz audio")
    if audio.ndim != 1:
        audio = audio.mean(axis=1)
    return audio


@dataclass
class CachedLayers:
    """A cache entry: per-layer arrays (memory-mapped on read) and its metadata."""

    folder: Path
    meta: dict

    @property
    def layer_names(self) -> list[str]:
        return list(self.meta["layer_names"])

    def layer(self, name: str, kind: str = "") -> np.ndarray:
        index = self.layer_names.index(name)
        return np.load(self.folder / f"{kind}layer_{index:03d}.npy", mmap_mode="r")

    def array(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")


def load_or_build(cache_dir: Path, key: str, build: Callable[[Path], dict]) -> CachedLayers:
    """The cache entry ``key``; built by ``build(folder) -> meta`` into a temporary folder when missing."""
    final = cache_dir / key
    meta_path = final / "meta.json"
    if meta_path.is_file():
        return CachedLayers(final, json.loads(meta_path.read_text(encoding="utf-8")))
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
    try:
        meta = build(work)
        (work / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.replace(work, final)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return CachedLayers(final, json.loads((final / "meta.json").read_text(encoding="utf-8")))


def build_segment_layers(
    extract: Extractor,
    utterances: Sequence[Utterance],
    spans: dict[str, Sequence[Segment]],
    folder: Path,
    *,
    middle_third: Sequence[str] = ("phone",),
    progress: bool = True,
) -> dict:
    """Pool every span kind (e.g. ``{"phone": [...], "word": [...]}``) for every layer in one pass.

    Writes ``<kind>_layer_NNN.npy`` (segments, dims) per kind and layer; returns the metadata.
    """
    by_utterance: dict[str, dict[int, list[int]]] = {kind: {} for kind in spans}
    for kind, segments in spans.items():
        for row, segment in enumerate(segments):
            by_utterance[kind].setdefault(segment.utterance, []).append(row)
    needed = sorted({u for rows in by_utterance.values() for u in rows})
    pooled: dict[str, list[np.ndarray]] | None = None
    names: list[str] = []
    strides: list[int] = []
    for index in _progress(needed, progress, "pooling segments"):
        states = extract(read_audio(utterances[index].audio))
        if pooled is None:
            names, strides = [s.name for s in states], [s.stride for s in states]
            pooled = {
                kind: [np.zeros((len(spans[kind]), s.features.shape[1]), dtype=np.float32) for s in states]
                for kind in spans
            }
        for kind, rows_of in by_utterance.items():
            rows = rows_of.get(index, [])
            if not rows:
                continue
            times = [(spans[kind][r].start, spans[kind][r].end) for r in rows]
            for layer, state in enumerate(states):
                pooled[kind][layer][rows] = pool_segments(
                    state.features, state.stride / 16_000, times, middle_third=kind in middle_third
                )
    if pooled is None:
        raise ValueError("no segments to pool: the sample is empty")
    for kind, layers in pooled.items():
        for layer, array in enumerate(layers):
            np.save(folder / f"{kind}_layer_{layer:03d}.npy", array)
    return {
        "layer_names": names,
        "strides": strides,
        "labels": {kind: [s.label for s in segments] for kind, segments in spans.items()},
        "utterances": [utterances[i].utt_id for i in needed],
    }


def build_frame_layers(
    extract: Extractor, utterances: Sequence[Utterance], chosen: np.ndarray, folder: Path, *, progress: bool = True
) -> dict:
    """Every frame of the chosen utterances per layer (``layer_NNN.npy``), the 10 ms log-mel frames of the same
    utterances (``mel.npy``) and, per layer, the mel row matching each of its frames (``mel_index_layer_NNN.npy``: every
    ``stride / 160``-th mel frame of the utterance, as :func:`mel.frames_at_stride`). Frames are appended
    utterance by utterance to files on disk, so memory stays at one utterance."""
    writers: list = []
    mel_parts: list[np.ndarray] = []
    mel_rows: list[list[np.ndarray]] = []
    names: list[str] = []
    strides: list[int] = []
    counts: list[int] = []
    mel_offset = 0
    for index in _progress(chosen.tolist(), progress, "frames"):
        audio = read_audio(utterances[index].audio)
        states = extract(audio)
        mel = log_mel(audio).astype(np.float32)
        if not writers:
            names, strides = [s.name for s in states], [s.stride for s in states]
            writers = [open(folder / f"layer_{layer:03d}.f32", "wb") for layer in range(len(states))]
            counts = [0] * len(states)
            mel_rows = [[] for _ in states]
        for layer, state in enumerate(states):
            writers[layer].write(np.ascontiguousarray(state.features, dtype=np.float32).tobytes())
            counts[layer] += len(state.features)
            rows = frames_at_stride(np.arange(len(mel))[:, None], state.stride, len(state.features))[:, 0]
            mel_rows[layer].append(mel_offset + rows)
        mel_parts.append(mel)
        mel_offset += len(mel)
    for writer in writers:
        writer.close()
    dims = []
    for layer, count in enumerate(counts):
        raw_path = folder / f"layer_{layer:03d}.f32"
        raw = np.memmap(raw_path, dtype=np.float32, mode="r")
        dims.append(raw.size // count)
        _copy_to_npy(raw.reshape(count, -1), folder / f"layer_{layer:03d}.npy")
        del raw
        raw_path.unlink()
        np.save(folder / f"mel_index_layer_{layer:03d}.npy", np.concatenate(mel_rows[layer]).astype(np.int64))
    np.save(folder / "mel.npy", np.concatenate(mel_parts))
    return {"layer_names": names, "strides": strides, "frames": counts, "dims": dims,
            "utterances": [utterances[i].utt_id for i in chosen.tolist()]}  # fmt: skip


def _copy_to_npy(source: np.ndarray, path: Path, rows: int = 65536) -> None:
    """Write ``source`` (e.g. a memory map) as a ``.npy`` file in blocks of rows, never all in memory."""
    target = np.lib.format.open_memmap(path, mode="w+", dtype=source.dtype, shape=source.shape)
    for start in range(0, source.shape[0], rows):
        target[start : start + rows] = source[start : start + rows]
    target.flush()
    del target


def upstream_extractor(upstream) -> Extractor:
    """An :data:`Extractor` over an s3prl-style upstream module (``native_states`` preferred, else
    ``hidden_states`` at ``get_downsample_rates``; names from ``layer_names``, else indices)."""
    import torch

    upstream.eval()
    names = list(getattr(upstream, "layer_names", None) or [])

    def extract(audio: np.ndarray) -> list[LayerOutput]:
        wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        with torch.inference_mode():
            if hasattr(upstream, "native_states"):
                return [
                    LayerOutput(state.name, state.features[0].float().numpy(), int(state.stride))
                    for state in upstream.native_states([wav])
                ]
            hidden = upstream([wav])["hidden_states"]
            rates = getattr(upstream, "get_downsample_rates", None)
            stride = int(rates("hidden_states")) if rates is not None else 320
            return [
                LayerOutput(names[i] if len(names) == len(hidden) else str(i), state[0].float().numpy(), stride)
                for i, state in enumerate(hidden)
            ]

    return extract


def _progress(items, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="utt", leave=False)
