"""Run an upstream over utterances once and keep what every analysis needs, per layer, cached on disk.

One pass over the utterances serves every property: each utterance's states are computed once, and from them
(float32, one ``.npy`` per kind and layer):

* ``<kind>_layer_NNN.npy``: mean-pooled spans of each kind (``phone``, ``word``, ``utterance``...), written straight
  into memory-mapped files;
* ``layer_NNN.npy``: every frame of the chosen frame-level utterances, with the 10 ms log-mel frames of the same
  utterances (``mel.npy``) and, per layer, the mel row matching each frame (``mel_index_layer_NNN.npy``);
* ``cnn_layer_NNN.npy`` (with ``cnn_mel_index_layer_NNN.npy``): the waveform CNN's layers C1..C7 of the same
  utterances, averaged over windows that make each output frame see what a mel frame sees (paper Fig. 4).

State rate (``STATE_RATES``): ``"20ms"`` (default) takes s3prl's ``hidden_states``, every state brought to 20 ms the
way s3prl's featurizer sees it (lower-resolution states repeated), so that CCA ranks the very vectors the learnt
layer weights combine; ``"native"`` takes each state at its own rate when the upstream offers ``native_states``
(MR-HuBERT's 40 ms states stay 40 ms).

The cache entry's key hashes everything that changes its content: upstream name, checkpoint content (SHA-256),
upstream options (file content, precision, CNN segmenting), state rate, the corpus files (content and relative
path of every alignment and of the audio that is read), split, sampling settings, seed, what is kept and this
module's format version. Entries are written to a temporary folder and renamed into place, so an interrupted
run leaves none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from downstream_probes.analysis.mel import HOP, WINDOW, frames_at_stride, log_mel
from downstream_probes.analysis.protocol import DEFAULT_STATE_RATE, STATE_RATES
from downstream_probes.analysis.segments import Segment, Utterance, pool_segments
from downstream_probes.audio import read_audio
from downstream_probes.progress import progress_bar
from upstream_mrhubert.atomic_io import loads_strict_json, write_json_atomic
from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.errors import MrsuperbError, UsageError
from upstream_mrhubert.output_folder import file_sha256, remove_stale_partials

FORMAT_VERSION = 4
CACHE_ENV = "MRSUPERB_CACHE"


@dataclass(frozen=True)
class LayerOutput:
    """One state of one utterance: ``features`` (frames, dims), samples per frame and, for CNN layers, the input
    samples one frame sees (0 when not a CNN layer)."""

    name: str
    features: np.ndarray
    stride: int
    receptive_field: int = 0


# (waveform float32 1-D) -> states in layer order
Extractor = Callable[[np.ndarray], list[LayerOutput]]


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "mrsuperb")) / "layer_features"


def cache_key(description: dict) -> str:
    payload = json.dumps({**description, "format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def corpus_fingerprint(
    utterances: Sequence[Utterance], root: str | Path | None = None, audio_of: Sequence[int] | None = None
) -> str:
    """A digest of the CONTENT (BLAKE2b) and path (relative to ``root`` when under it) of every alignment file and
    of the audio of ``audio_of`` (default: every utterance), the files whose content changes the features.

    A file edited in place (same name, same size, even with its modification time restored) changes the digest.
    """
    digest = hashlib.sha256()
    base = Path(root).resolve() if root is not None else None
    chosen = range(len(utterances)) if audio_of is None else sorted(set(audio_of))
    paths = [u.alignment for u in utterances if u.alignment is not None] + [utterances[i].audio for i in chosen]
    for path in paths:
        resolved = Path(path).resolve()
        name = resolved.relative_to(base) if base is not None and resolved.is_relative_to(base) else resolved
        digest.update(f"{name}:{_content_digest(resolved)};".encode())
    return digest.hexdigest()


def _content_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def read_samples(path: Path) -> np.ndarray:
    """One utterance's samples (float32, 1-D) through the one checked corpus reader: 16 kHz, mono, long enough,
    finite; the error (a ValueError) names the file."""
    return read_audio(path)[0][0]


@dataclass
class CachedLayers:
    """A cache entry: per-layer arrays (memory-mapped on read) and its metadata."""

    folder: Path
    meta: dict

    @property
    def layer_names(self) -> list[str]:
        return list(self.meta["layer_names"])

    @property
    def cnn_names(self) -> list[str]:
        return list(self.meta.get("cnn_names", []))

    def layer(self, name: str, kind: str = "") -> np.ndarray:
        index = self.layer_names.index(name)
        return np.load(self.folder / f"{kind}layer_{index:03d}.npy", mmap_mode="r")

    def cnn_layer(self, name: str, kind: str = "") -> np.ndarray:
        index = self.cnn_names.index(name)
        return np.load(self.folder / f"{kind}cnn_layer_{index:03d}.npy", mmap_mode="r")

    def array(self, name: str) -> np.ndarray:
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")


class CacheEntryError(MrsuperbError, ValueError):
    """A cache entry whose files are not what was written (named in the message)."""


CHECKSUMS = "sha256"  # meta.json's field: the SHA-256 of every file of the entry, taken when it was built


def _checksums(folder: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != "meta.json"}


def _read_entry(final: Path) -> CachedLayers:
    """The entry in ``final``, its meta.json read strictly and every file checked against its recorded checksum."""
    meta_path = final / "meta.json"
    try:
        meta = loads_strict_json(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get(CHECKSUMS), dict):
            raise ValueError("no checksums recorded (an entry of an older version)")
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CacheEntryError(f"{meta_path} is unreadable or incomplete ({error})") from None
    if _checksums(final) != meta[CHECKSUMS]:
        changed = sorted(set(_checksums(final).items()) ^ set(meta[CHECKSUMS].items()))
        raise CacheEntryError(
            f"{final}: {', '.join(sorted({name for name, _ in changed}))} differ from what was written"
        )
    return CachedLayers(final, meta)


def load_or_build(cache_dir: Path, key: str, build: Callable[[Path], dict]) -> CachedLayers:
    """The cache entry ``key``; built by ``build(folder) -> meta`` into a temporary folder when missing.

    Every file's SHA-256 is recorded in ``meta.json`` and checked on each use: an entry whose bytes changed (cut
    short, overwritten with other values of the same size) is built again, never read. Temporary folders of
    builds that were killed (``.KEY.partial-PID``) are removed."""
    final = cache_dir / key
    if (final / "meta.json").is_file():
        try:
            return _read_entry(final)
        except CacheEntryError as error:
            print(f"rebuilding the cache entry: {error}")
            shutil.rmtree(final)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(cache_dir, ".*.partial-*")
    work = cache_dir / f".{key}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        meta = build(work)
        meta[CHECKSUMS] = _checksums(work)
        write_json_atomic(work / "meta.json", meta)
        try:
            os.replace(work, final)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return _read_entry(final)


# --------------------------------------------------------------------------------------------- CNN windows


def cnn_window(stride: int, receptive_field: int) -> tuple[int, int, int]:
    """How a CNN layer's frames are averaged to match the mel frames (the reference's per-layer transform).

    A layer with ``stride`` samples per frame and a ``receptive_field`` shorter than the mel window (400 samples)
    averages ``kernel = (400 - receptive_field) / stride + 1`` consecutive frames, so that each average sees one
    window's worth of samples, every ``160 / stride`` frames (10 ms). A layer at 20 ms or slower (C7) is kept
    as is and compared with every ``stride / 160``-th mel frame. Returns ``(kernel, step, mel_stride)``; for the
    wav2vec 2.0 CNN: C1 (79, 32, 160), C2 (39, 16, 160), ..., C6 (2, 1, 160), C7 (1, 1, 320).
    """
    if stride <= HOP:
        if HOP % stride:
            raise UsageError(f"a CNN stride of {stride} samples does not divide the 10 ms mel hop ({HOP} samples)")
        return max((WINDOW - receptive_field) // stride + 1, 1), HOP // stride, HOP
    return 1, 1, stride


def average_windows(features: np.ndarray, kernel: int, step: int) -> np.ndarray:
    """Mean over windows of ``kernel`` frames every ``step`` frames: ``((T - kernel) // step + 1, dims)`` float32,
    the reference's uniform ``conv1d``.

    Windows start on multiples of ``step``, so the frames are summed in blocks of ``step`` (one contiguous
    reduction), a window being ``kernel // step`` whole blocks plus the first ``kernel % step`` frames of the next;
    sums are float64.
    """
    if kernel == 1 and step == 1:
        return np.ascontiguousarray(features, dtype=np.float32)
    count = (len(features) - kernel) // step + 1
    if count < 1:
        return np.empty((0, features.shape[1]), dtype=np.float32)
    whole, rest = divmod(kernel, step)
    blocks_needed = count + whole + (1 if rest else 0)
    frames = blocks_needed * step
    if frames > len(features):  # the last window's partial block: zeros it never reads
        padded = np.zeros((frames, features.shape[1]), dtype=features.dtype)
        padded[: len(features)] = features
        features = padded
    blocks = np.asarray(features[:frames]).reshape(blocks_needed, step, -1)
    running = np.zeros((blocks_needed + 1, blocks.shape[2]))
    np.cumsum(blocks.sum(axis=1, dtype=np.float64), axis=0, out=running[1:])
    index = np.arange(count)
    sums = running[index + whole] - running[index]
    if rest:
        sums += blocks[index + whole, :rest].sum(axis=1, dtype=np.float64)
    return (sums / kernel).astype(np.float32)


# --------------------------------------------------------------------------------------------- building


def build_layers(
    extract: Extractor,
    utterances: Sequence[Utterance],
    folder: Path,
    *,
    spans: dict[str, Sequence[Segment]] | None = None,
    frame_utterances: Sequence[int] = (),
    cnn: Extractor | None = None,
    middle_third: Sequence[str] = ("phone",),
    progress: bool = True,
    description: str = "extracting",
) -> dict:
    """One pass over every utterance that any span or the frame level needs: pool every span kind
    (``{"phone": [...], "word": [...]}``) for every layer, and keep all frames (and CNN layers, with ``cnn``) of
    ``frame_utterances``. Returns the metadata (layer names, strides, labels, counts)."""
    spans = dict(spans or {})
    rows_of: dict[str, dict[int, list[int]]] = {kind: {} for kind in spans}
    for kind, segments in spans.items():
        for row, segment in enumerate(segments):
            rows_of[kind].setdefault(segment.utterance, []).append(row)
    frame_set = {int(i) for i in frame_utterances}
    needed = sorted({u for rows in rows_of.values() for u in rows} | frame_set)
    if not needed:
        raise UsageError("nothing to extract: the sample is empty")
    pooled: dict[str, list[np.memmap]] = {}  # one memory-mapped array per layer and span kind
    frames = _FrameWriter(folder, "") if frame_set else None
    cnn_frames = _FrameWriter(folder, "cnn_") if frame_set and cnn is not None else None
    names: list[str] = []
    strides: list[int] = []
    for index in progress_bar(needed, progress, description):
        audio = read_samples(utterances[index].audio)
        states = extract(audio)
        if not names:
            names, strides = [s.name for s in states], [s.stride for s in states]
            pooled = {
                kind: [
                    np.lib.format.open_memmap(
                        folder / f"{kind}_layer_{layer:03d}.npy",
                        mode="w+",
                        dtype=np.float32,
                        shape=(len(spans[kind]), s.features.shape[1]),
                    )
                    for layer, s in enumerate(states)
                ]
                for kind in spans
            }
        for kind, rows_by_utterance in rows_of.items():
            rows = rows_by_utterance.get(index, [])
            if not rows:
                continue
            times = [(spans[kind][r].start, spans[kind][r].end) for r in rows]
            # rows of one utterance are contiguous when the spans are sorted by utterance (the samplers' order)
            target = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] == len(rows) - 1 else rows
            for layer, state in enumerate(states):
                pooled[kind][layer][target] = pool_segments(
                    state.features, state.stride / SAMPLE_RATE, times, middle_third=kind in middle_third
                )
        if index in frame_set:
            mel = log_mel(audio).astype(np.float32)
            mel_offset = frames.add_mel(mel)  # type: ignore[union-attr]
            frames.add(states, mel_offset, len(mel))  # type: ignore[union-attr]
            if cnn_frames is not None and cnn is not None:
                averaged = []
                for state in cnn(audio):
                    kernel, step, mel_stride = cnn_window(state.stride, state.receptive_field)
                    averaged.append(LayerOutput(state.name, average_windows(state.features, kernel, step), mel_stride))
                cnn_frames.add(averaged, mel_offset, len(mel))
    for layers in pooled.values():
        for array in layers:
            array.flush()
    meta: dict = {
        "layer_names": names,
        "strides": strides,
        "labels": {kind: [s.label for s in segments] for kind, segments in spans.items()},
        "segments": {kind: len(segments) for kind, segments in spans.items()},
        "utterances": [utterances[i].utt_id for i in needed],
    }
    if frames is not None:
        meta.update(frames.finish())
        meta["frame_utterances"] = [utterances[i].utt_id for i in sorted(frame_set)]
    if cnn_frames is not None:
        cnn_meta = cnn_frames.finish()
        meta.update({"cnn_names": cnn_meta["names"], "cnn_frames": cnn_meta["frames"]})
    return meta


class _FrameWriter:
    """Appends each layer's frames to a raw file (memory stays at one utterance), then turns them into ``.npy``."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix = folder, prefix
        self.writers: list = []
        self.names: list[str] = []
        self.counts: list[int] = []
        self.mel_rows: list[list[np.ndarray]] = []
        self.mel_parts: list[np.ndarray] = []
        self.mel_frames = 0

    def add_mel(self, mel: np.ndarray) -> int:
        offset = self.mel_frames
        self.mel_parts.append(mel)
        self.mel_frames += len(mel)
        return offset

    def add(self, states: Sequence[LayerOutput], mel_offset: int, mel_frames: int) -> None:
        if not self.writers:
            self.names = [s.name for s in states]
            self.writers = [open(self._path(layer, ".f32"), "wb") for layer in range(len(states))]  # noqa: SIM115
            self.counts = [0] * len(states)
            self.mel_rows = [[] for _ in states]
        for layer, state in enumerate(states):
            n = len(state.features)
            rows = frames_at_stride(np.arange(mel_frames)[:, None], state.stride, n)[:, 0]
            self.writers[layer].write(np.ascontiguousarray(state.features, dtype=np.float32).tobytes())
            self.counts[layer] += n
            self.mel_rows[layer].append(mel_offset + rows)

    def _path(self, layer: int, suffix: str, kind: str = "") -> Path:
        return self.folder / f"{kind}{self.prefix}layer_{layer:03d}{suffix}"

    def finish(self) -> dict:
        for writer in self.writers:
            writer.close()
        dims = []
        for layer, count in enumerate(self.counts):
            raw_path = self._path(layer, ".f32")
            raw = np.memmap(raw_path, dtype=np.float32, mode="r")
            dims.append(raw.size // count)
            _copy_to_npy(raw.reshape(count, -1), self._path(layer, ".npy"))
            del raw
            raw_path.unlink()
            np.save(self._path(layer, ".npy", "mel_index_"), np.concatenate(self.mel_rows[layer]).astype(np.int64))
        if self.prefix == "":
            np.save(self.folder / "mel.npy", np.concatenate(self.mel_parts))
            return {"frames": self.counts, "dims": dims}
        return {"names": self.names, "frames": self.counts}


def _copy_to_npy(source: np.ndarray, path: Path, rows: int = 65536) -> None:
    """Write ``source`` (e.g. a memory map) as a ``.npy`` file in blocks of rows, never all in memory."""
    target = np.lib.format.open_memmap(path, mode="w+", dtype=source.dtype, shape=source.shape)
    for start in range(0, source.shape[0], rows):
        target[start : start + rows] = source[start : start + rows]
    target.flush()
    del target


def extract_layers(
    cache_dir: Path, entry: dict, extract: Extractor, utterances: Sequence[Utterance], **build: Any
) -> CachedLayers:
    """The cache entry that ``entry`` describes (:func:`cache_key`), built when missing by :func:`build_layers`
    with the keyword arguments ``build``."""
    return load_or_build(cache_dir, cache_key(entry), lambda folder: build_layers(extract, utterances, folder, **build))


# --------------------------------------------------------------------------------------------- upstreams


def upstream_extractor(upstream, state_rate: str = DEFAULT_STATE_RATE) -> Extractor:
    """An :data:`Extractor` over an s3prl-style upstream module.

    ``state_rate="20ms"``: s3prl's ``hidden_states`` at ``get_downsample_rates`` (what the featurizer weights);
    ``"native"``: ``native_states`` when the upstream has them (else the same as 20 ms). Names come from
    ``layer_names``, else indices.
    """
    import torch

    if state_rate not in STATE_RATES:
        raise UsageError(f"unknown state rate {state_rate!r}; choose one of {', '.join(STATE_RATES)}")
    upstream.eval()
    names = list(getattr(upstream, "layer_names", None) or [])
    native = state_rate == "native" and hasattr(upstream, "native_states")

    def extract(audio: np.ndarray) -> list[LayerOutput]:
        wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        with torch.inference_mode():
            if native:
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


def cnn_extractor(upstream) -> Extractor | None:
    """The waveform CNN's layers C1..C7 of our upstreams (MR-HuBERT and the HuBERT baseline), each with its
    cumulative stride and receptive field in samples; None when the upstream's CNN is not reachable."""
    import torch

    model = getattr(upstream, "model", None)
    if model is None:
        return None
    if hasattr(model, "feature_extractor") and hasattr(model.feature_extractor, "conv_layers"):
        layers = list(model.feature_extractor.conv_layers)
        normalize = bool(getattr(getattr(model, "config", None), "normalize", False))
    elif hasattr(model, "hubert"):
        layers = list(model.hubert.feature_extractor.conv_layers)
        normalize = bool(getattr(model, "normalize_waveform", False))
    else:
        return None

    def geometry(layer) -> tuple[int, int]:
        conv = layer.conv
        return int(conv.kernel_size[0]), int(conv.stride[0])

    def extract(audio: np.ndarray) -> list[LayerOutput]:
        x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        with torch.inference_mode():
            if normalize:
                x = torch.nn.functional.layer_norm(x, x.shape[-1:])
            x = x.unsqueeze(1)
            outputs, field, jump = [], 1, 1
            for index, layer in enumerate(layers):
                x = layer(x)
                kernel, stride = geometry(layer)
                field += (kernel - 1) * jump
                jump *= stride
                outputs.append(LayerOutput(f"C{index + 1}", x[0].T.float().numpy(), jump, field))
        return outputs

    return extract
