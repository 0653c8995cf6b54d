"""The audio a pretraining run reads, and the batches it draws, both reproducible from (seed, step).

A corpus is a folder in the LibriSpeech layout (``LibriSpeech/<split>/**/*.flac|wav``), as ``mrsuperb corpus asr``
writes it and as LibriSpeech 960h unpacks. Each split becomes a :class:`Manifest` (fairseq's ``<split>.tsv``:
path and length in samples, sorted by path).

Batches are a pure function of (seed, step, micro-batch, rank): utterances come from a stream of per-epoch
permutations seeded by (seed, epoch), each rank taking its own slice, and crop offsets from a generator seeded by
(seed, step, micro-batch, rank). A resumed run therefore draws exactly the batches an uninterrupted one would.
Crops start on 20 ms frame boundaries (a multiple of 320 samples), so the frame-level targets stay aligned, and
every utterance of a batch is cut to the batch's shortest (at most ``crop_seconds``), like fairseq's task without
``pad_audio``: no padding enters training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch

from upstream_mrhubert.audio import SAMPLE_RATE
from upstream_mrhubert.config import MIN_SAMPLES
from upstream_mrhubert.errors import UsageError

FRAME_SAMPLES = 320  # one 20 ms frame of the CNN
AUDIO_SUFFIXES = (".flac", ".wav")
LIBRI_ROOT = "LibriSpeech"


def frames_of(samples: int) -> int:
    """20 ms frames the standard CNN (and kaldi MFCC with 25 ms windows, 20 ms shift) give for ``samples``."""
    return 0 if samples < MIN_SAMPLES else (samples - MIN_SAMPLES) // FRAME_SAMPLES + 1


@dataclass(frozen=True)
class Manifest:
    """fairseq's ``<split>.tsv``: a root and (relative path, samples) rows."""

    root: Path
    paths: tuple[str, ...]
    lengths: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def total_seconds(self) -> float:
        return sum(self.lengths) / SAMPLE_RATE

    def to_tsv(self) -> str:
        return f"{self.root}\n" + "".join(f"{p}\t{n}\n" for p, n in zip(self.paths, self.lengths, strict=True))

    def read(self, index: int, start: int = 0, samples: int | None = None) -> np.ndarray:
        """float32 samples in [-1, 1] of utterance ``index`` from ``start`` (all to the end when ``samples`` is None)."""
        path = self.root / self.paths[index]
        audio, rate = soundfile.read(
            str(path), start=start, frames=-1 if samples is None else samples, dtype="float32", always_2d=False
        )
        if rate != SAMPLE_RATE:
            raise UsageError(f"{path} is sampled at {rate} Hz; pretraining reads 16 kHz audio (resample it first)")
        if audio.ndim != 1:
            raise UsageError(f"{path} has {audio.shape[1]} channels; pretraining reads mono audio")
        return audio


def scan_split(corpus: str | os.PathLike[str], split: str, *, min_samples: int) -> Manifest:
    """The manifest of ``<corpus>/LibriSpeech/<split>`` (utterances shorter than ``min_samples`` left out)."""
    corpus = Path(corpus)
    root = corpus / LIBRI_ROOT / split
    if not root.is_dir():
        found = sorted(p.name for p in (corpus / LIBRI_ROOT).iterdir()) if (corpus / LIBRI_ROOT).is_dir() else []
        raise FileNotFoundError(
            f"{root} does not exist (splits found: {found or 'none'}); --corpus must hold LibriSpeech/<split>/ as "
            "`mrsuperb corpus asr --out DIR` writes it, or set data.train_splits / data.valid_splits in the recipe"
        )
    rows: list[tuple[str, int]] = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        samples = soundfile.info(str(path)).frames
        if samples >= min_samples:
            rows.append((str(path.relative_to(root)), int(samples)))
    if not rows:
        raise UsageError(f"{root} holds no .flac/.wav utterance of at least {min_samples / SAMPLE_RATE:.2f} s")
    return Manifest(root=root, paths=tuple(r[0] for r in rows), lengths=tuple(r[1] for r in rows))


def merge(manifests: Sequence[Manifest]) -> Manifest:
    """Several splits as one manifest (paths made relative to their common corpus root)."""
    if len(manifests) == 1:
        return manifests[0]
    root = Path(os.path.commonpath([str(m.root) for m in manifests]))
    paths = [str((m.root / p).relative_to(root)) for m in manifests for p in m.paths]
    lengths = [n for m in manifests for n in m.lengths]
    return Manifest(root=root, paths=tuple(paths), lengths=tuple(lengths))


@dataclass(frozen=True)
class Batch:
    """Equal-length crops and their 20 ms targets."""

    waveforms: torch.Tensor  # [B, L] float32
    targets: torch.Tensor  # [B, T] int64 cluster ids, T = frames_of(L)
    indices: tuple[int, ...]  # utterances of the manifest


def step_generator(seed: int, *parts: int) -> np.random.Generator:
    """The generator of one (step, micro-batch, rank, ...): independent of everything drawn before."""
    return np.random.default_rng([seed, *parts])


class BatchSampler:
    """Draws :class:`Batch` es for (step, micro-batch, rank) from a manifest and its labels."""

    def __init__(
        self,
        manifest: Manifest,
        labels: Sequence[np.ndarray],
        *,
        batch_size: int,
        crop_samples: int,
        seed: int,
        world_size: int = 1,
    ) -> None:
        if len(labels) != len(manifest):
            raise UsageError(f"{len(labels)} label rows for {len(manifest)} utterances")
        self.manifest = manifest
        self.labels = labels
        self.batch_size = batch_size
        self.crop_frames = max(1, frames_of(crop_samples))
        self.seed = seed
        self.world_size = world_size
        self._permutations: dict[int, np.ndarray] = {}

    def _utterance(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.manifest))
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            self._permutations[epoch] = step_generator(self.seed, 0xE90C, epoch).permutation(len(self.manifest))
        return int(self._permutations[epoch][offset])

    def batch(self, global_micro_batch: int, rank: int = 0) -> Batch:
        """The ``global_micro_batch``-th micro-batch (step * accumulate + micro) of ``rank``."""
        first = (global_micro_batch * self.world_size + rank) * self.batch_size
        indices = [self._utterance(first + i) for i in range(self.batch_size)]
        rng = step_generator(self.seed, global_micro_batch, rank)
        frames = min(self.crop_frames, *(len(self.labels[i]) for i in indices))
        return self._cut(indices, frames, rng)

    def fixed_batches(self, count: int) -> list[Batch]:
        """``count`` batches over the manifest in order, crops from the start: the same every time (validation)."""
        batches = []
        for b in range(count):
            indices = [(b * self.batch_size + i) % len(self.manifest) for i in range(self.batch_size)]
            frames = min(self.crop_frames, *(len(self.labels[i]) for i in indices))
            batches.append(self._cut(indices, frames, None))
            if (b + 1) * self.batch_size >= len(self.manifest):
                break
        return batches

    def _cut(self, indices: list[int], frames: int, rng: np.random.Generator | None) -> Batch:
        samples = MIN_SAMPLES + (frames - 1) * FRAME_SAMPLES
        waves, targets = [], []
        for index in indices:
            available = len(self.labels[index]) - frames
            start_frame = int(rng.integers(0, available + 1)) if rng is not None and available > 0 else 0
            audio = self.manifest.read(index, start_frame * FRAME_SAMPLES, samples)
            if len(audio) < samples:  # a file shorter than its header said; pad with silence
                audio = np.pad(audio, (0, samples - len(audio)))
            waves.append(torch.from_numpy(np.ascontiguousarray(audio)))
            targets.append(torch.from_numpy(self.labels[index][start_frame : start_frame + frames].astype(np.int64)))
        return Batch(torch.stack(waves), torch.stack(targets), tuple(indices))
