"""Frame-level pseudo-labels: k-means clusters of MFCCs (iteration 1) or of a trained model's layer (iteration 2).

Iteration 1 follows HuBERT: 13 kaldi MFCCs (``use_energy=False``, no dither) with deltas and delta-deltas, 39
dimensions. HuBERT's labels were at 100 Hz (10 ms shift); MR-HuBERT's base stream is 50 Hz, so the MFCCs use a
20 ms shift with the 25 ms window, which makes MFCC frame t cover samples [320 t, 320 t + 400): exactly the CNN's
frame t. Iteration 2 clusters a named state (e.g. ``T4``) of a previous checkpoint, lower-resolution states
repeated to 20 ms as s3prl does. Both fit sklearn's ``MiniBatchKMeans`` on a random sample of training frames.

Lower resolutions are not clustered separately: like the released MR-HuBERT base recipe (``use_single_target``),
the one 20 ms stream is sub-sampled for each resolution by :func:`subsample_targets`, taking the FIRST 20 ms frame
of each window (resolution frame t gets 20 ms label ``t * ratio``; fairseq's ``forward_targets``).

Labels are written as fairseq reads them: ``<split>.km`` (one line of space-separated ids per utterance, in the
order of ``<split>.tsv``) and ``dict.km.txt``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from sklearn.cluster import MiniBatchKMeans
from tqdm import tqdm

from upstream_mrhubert.atomic_io import write_json_atomic, write_text_atomic
from upstream_mrhubert.checkpoints.io import load_checkpoint
from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.model import MultiresHubert
from upstream_mrhubert.output_folder import differing_fields, file_sha256
from upstream_mrhubert.pretraining.data import FRAME_SAMPLES, SAMPLE_RATE, Manifest, frames_of

MFCC_DIM = 39
TARGETS_RECORD = "targets.json"
TARGET_FILES = ("train.tsv", "train.km", "valid.tsv", "valid.km", "dict.km.txt")


def mfcc_features(waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[T, 39] MFCC + deltas + delta-deltas at 20 ms, T = :func:`data.frames_of` (samples)."""
    wave = torch.as_tensor(waveform, dtype=torch.float32).reshape(1, -1)
    mfcc = torchaudio.compliance.kaldi.mfcc(
        wave,
        sample_frequency=SAMPLE_RATE,
        frame_length=25.0,
        frame_shift=1000.0 * FRAME_SAMPLES / SAMPLE_RATE,
        use_energy=False,
        dither=0.0,
        snip_edges=True,
    ).T  # [13, T]
    deltas = torchaudio.functional.compute_deltas(mfcc)
    delta_deltas = torchaudio.functional.compute_deltas(deltas)
    return torch.cat([mfcc, deltas, delta_deltas], dim=0).T.contiguous()


def layer_feature_extractor(
    checkpoint: str | os.PathLike[str], layer: str, *, device: str = "cpu"
) -> Callable[[np.ndarray], torch.Tensor]:
    """A function mapping a waveform to [T, D] features of state ``layer`` of ``checkpoint`` at 20 ms (iteration 2).

    The checkpoint is read with our safe loader; a ``pre_residual`` recorded in its cfg is honoured.
    """
    loaded = load_checkpoint(checkpoint)
    pre_residual = bool(loaded.model_cfg.get("pre_residual", False))
    model = MultiresHubert.from_checkpoint(loaded, pre_residual=pre_residual).to(device).eval()
    names = model.layer_names(include_block_outputs=True)
    if layer not in names:
        raise UsageError(f"{checkpoint} has no state {layer!r}; its states are {', '.join(names)}")

    @torch.inference_mode()
    def extract(waveform: np.ndarray) -> torch.Tensor:
        wave = torch.as_tensor(waveform, dtype=torch.float32, device=device).reshape(1, -1)
        states = model(wave, include_block_outputs=True)
        state = next(s for s in states if s.name == layer)
        hidden = state.features[0]
        repeat = state.stride // FRAME_SAMPLES
        if repeat > 1:
            hidden = torch.repeat_interleave(hidden, repeat, dim=0)
        frames = frames_of(wave.size(1))
        return hidden[:frames].float().cpu()

    return extract


def extract_all(manifest: Manifest, extractor: Callable[[np.ndarray], torch.Tensor], *, desc: str) -> list[np.ndarray]:
    """Features of every utterance, each [frames_of(length), D] float32."""
    features = []
    for index in tqdm(range(len(manifest)), desc=desc, unit="utt", leave=False):
        audio = manifest.read(index)
        feats = extractor(audio).numpy().astype(np.float32)
        expected = frames_of(len(audio))
        if feats.shape[0] < expected:  # a state cropped shorter by the network: repeat its last frame
            feats = np.concatenate([feats, np.repeat(feats[-1:], expected - feats.shape[0], axis=0)])
        features.append(feats[:expected])
    return features


def fit_kmeans(
    features: Sequence[np.ndarray], *, clusters: int, fit_frames: int, batch_size: int, seed: int
) -> MiniBatchKMeans:
    """MiniBatchKMeans on at most ``fit_frames`` frames drawn at random from ``features``."""
    stacked = np.concatenate(features, axis=0)
    if stacked.shape[0] < clusters:
        raise UsageError(
            f"{stacked.shape[0]} training frames cannot make {clusters} clusters; use a larger corpus or fewer "
            "targets.clusters"
        )
    rng = np.random.default_rng([seed, 0x4B3])
    if stacked.shape[0] > fit_frames:
        stacked = stacked[rng.choice(stacked.shape[0], fit_frames, replace=False)]
    kmeans = MiniBatchKMeans(
        n_clusters=clusters,
        batch_size=min(batch_size, stacked.shape[0]),
        max_iter=100,
        n_init=3,
        reassignment_ratio=0.0,
        max_no_improvement=100,
        random_state=int(rng.integers(2**31 - 1)),
    )
    kmeans.fit(stacked)
    return kmeans


def assign(kmeans: MiniBatchKMeans, features: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Cluster ids per utterance (int32)."""
    return [kmeans.predict(f).astype(np.int32) for f in features]


def subsample_targets(targets: torch.Tensor, ratio: int, frames: int) -> tuple[torch.Tensor, int]:
    """20 ms targets for a resolution whose frames are ``ratio`` 20 ms frames long (fairseq's ``forward_targets``).

    Args:
        targets: [B, T] ids at 20 ms.
        ratio: 20 ms frames per frame of the resolution (1, 2, 4).
        frames: the resolution's output frames.
    Returns:
        ([B, n] targets, n): resolution frame t gets ``targets[:, t * ratio]``; ``n`` is ``frames`` cut to what the
        targets cover (``int(T / ratio)`` when ``ratio * frames > T``), and the caller crops its outputs to ``n``.
    """
    available = targets.size(1)
    if ratio * frames > available:
        frames = int(available / ratio)
    positions = torch.arange(frames, device=targets.device) * ratio
    return targets[:, positions], frames


def majority_share(labels: Sequence[np.ndarray]) -> float:
    """The share of frames in the most frequent cluster: the accuracy of always predicting it."""
    counts = np.bincount(np.concatenate(labels))
    return float(counts.max() / counts.sum())


def write_labels(folder: Path, split: str, labels: Sequence[np.ndarray], manifest: Manifest, clusters: int) -> None:
    """fairseq's ``<split>.tsv``, ``<split>.km`` and ``dict.km.txt`` under ``folder`` (each written atomically)."""
    write_text_atomic(folder / f"{split}.tsv", manifest.to_tsv())
    write_text_atomic(folder / f"{split}.km", "".join(" ".join(map(str, row.tolist())) + "\n" for row in labels))
    write_text_atomic(folder / "dict.km.txt", "".join(f"{k} 1\n" for k in range(clusters)))


def read_labels(folder: Path, split: str, manifest: Manifest) -> list[np.ndarray] | None:
    """Labels written by :func:`write_labels` for this manifest's utterances, or None when absent or stale."""
    tsv, km = folder / f"{split}.tsv", folder / f"{split}.km"
    if not (tsv.is_file() and km.is_file()):
        return None
    # the rows (relative path, length) must match; the root line may differ (a corpus moved or spelt otherwise)
    if tsv.read_text(encoding="utf-8").splitlines()[1:] != manifest.to_tsv().splitlines()[1:]:
        return None
    rows = [np.array(line.split(), dtype=np.int32) for line in km.read_text(encoding="utf-8").splitlines()]
    if len(rows) != len(manifest) or any(len(r) != frames_of(n) for r, n in zip(rows, manifest.lengths, strict=True)):
        return None
    return rows


def record_targets(folder: Path, settings: dict[str, Any]) -> None:
    """``targets.json``: the settings that made the targets and the SHA-256 of each file (written last)."""
    files = {name: file_sha256(folder / name) for name in TARGET_FILES if (folder / name).is_file()}
    write_json_atomic(folder / TARGETS_RECORD, {"settings": settings, "sha256": files})


def stale_targets(folder: Path, settings: dict[str, Any]) -> str | None:
    """Why the targets in ``folder`` cannot be reused for ``settings`` (None: they can): no record, other settings
    (naming the fields), or a file whose content is not what was recorded."""
    path = folder / TARGETS_RECORD
    if not path.is_file():
        return f"{path} is missing" if folder.is_dir() else "no targets yet"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        saved, sums = record["settings"], record["sha256"]
        if not isinstance(saved, dict) or not isinstance(sums, dict):
            raise TypeError("settings and sha256 must be mappings")
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{path} is unreadable ({error})"
    fields = differing_fields(saved, json.loads(json.dumps(settings)))
    if fields:
        return f"they were made with other settings: {'; '.join(fields)}"
    for name in TARGET_FILES:
        if not (folder / name).is_file() or sums.get(name) != file_sha256(folder / name):
            return f"{folder / name} is not the file recorded in {path} (changed or missing)"
    return None
