"""Every layer of every utterance of a task, extracted once to disk (fp16, memory-mapped) for a shared sweep.

For small tasks the upstream forward dominates a sweep even when it is shared. ``--cache-features DIR`` runs the
frozen upstream once over every utterance of the task's splits and stores each utterance's frames of every layer,
``[frames, layers, dim]`` in float16, one after the other in ``features.f16``; ``index.json`` maps each waveform's
SHA-1 (of its float32 samples) to its offset and frame count, and holds the SHA-256 of ``features.f16`` taken
while it was written: a cache whose bytes differ (cut short, or overwritten with other values of the same size) is
rebuilt, never read. Training then reads the batch's rows instead of
running the upstream. A waveform the cache has not seen (a dataset that crops at random each epoch) is run through
the upstream as usual, so the cache never changes what a head sees except by float16 rounding.

The cache lives in ``DIR/<key>/``; the key hashes the upstream identity, the SHA-256 of the checkpoint (and of the
upstream options file), the corpus fingerprint (the expert's data settings and the content of every file they
point at) and the state rate, so a different model, checkpoint or corpus never reads another's features. A cache is built
in a temporary folder (``.<key>.partial-<pid>``; those of killed builds are removed) and renamed into place when
complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from downstream_probes import tasks
from downstream_probes.s3prl.rng import RngState
from upstream_mrhubert.atomic_io import loads_strict_json, write_json_atomic
from upstream_mrhubert.errors import MrsuperbError, UsageError
from upstream_mrhubert.output_folder import file_sha256, remove_stale_partials


class FeatureCacheError(MrsuperbError, ValueError):
    """A feature cache that cannot be used (damaged, other settings, or not a folder); the message names it."""


CACHE_FORMAT = "mrsuperb.feature_cache/2"  # /2: index.json holds the SHA-256 of features.f16
INDEX_FILE = "index.json"
DATA_FILE = "features.f16"


def _paths_in(config: Any) -> Iterable[Path]:
    if isinstance(config, dict):
        for value in config.values():
            yield from _paths_in(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            yield from _paths_in(value)
    elif isinstance(config, str) and os.sep in config and Path(config).exists():
        yield Path(config)


def corpus_fingerprint(downstream_expert: dict[str, Any]) -> str:
    """SHA-256 of the expert's data settings and of the content of every file under the paths they name (each
    file's path relative to its root and the SHA-256 of its bytes: an in-place edit changes the key)."""
    digest = hashlib.sha256(json.dumps(downstream_expert, sort_keys=True, default=str).encode())
    for root in sorted(set(_paths_in(downstream_expert))):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            relative = path.name if path == root else path.relative_to(root).as_posix()
            digest.update(f"{root}\0{relative}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def cache_key(description: dict[str, Any]) -> str:
    """The folder name of a cache: a hash of everything that determines its contents (``describe_cache``)."""
    payload = {"format": CACHE_FORMAT, **description}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def describe_cache(args: Any, config: dict[str, Any], rate: int) -> dict[str, Any]:
    """What a sweep's features depend on: upstream identity, checkpoint and upstream-options file contents,
    corpus fingerprint, state rate and the stored feature."""

    def content(path: str | None) -> str | None:
        return file_sha256(path) if path and Path(path).is_file() else None

    return {
        "upstream": tasks.upstream_identity(args.upstream, args.upstream_ckpt),
        "checkpoint_sha256": content(args.upstream_ckpt),
        "model_config_sha256": content(args.upstream_model_config),
        "corpus": corpus_fingerprint(config["downstream_expert"]),
        "rate": int(rate),
        "feature": args.upstream_feature_selection,
    }


def waveform_key(wav: torch.Tensor) -> str:
    return hashlib.sha1(wav.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).hexdigest()


class FeatureCache:
    """A finished cache folder: ``lookup`` a batch's rows; ``None`` when an utterance is not in it.

    Args:
        folder: ``DIR/<key>``, as ``build`` left it.
    """

    def __init__(self, folder: str | os.PathLike[str], description: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        index_path, data_path = self.folder / INDEX_FILE, self.folder / DATA_FILE
        try:
            index = loads_strict_json(index_path.read_text(encoding="utf-8"))
            if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
                raise ValueError(f"not a feature cache index of format {CACHE_FORMAT}")
            self.layers, self.dim = int(index["layers"]), int(index["dim"])
            self.utterances: dict[str, tuple[int, int]] = {
                str(k): (int(o), int(n)) for k, (o, n) in index["utterances"].items()
            }
            frames, checksum = int(index["frames"]), str(index["sha256"])
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise FeatureCacheError(f"{index_path} is unreadable or damaged ({error})") from None
        if description is not None and index.get("key") != json.loads(json.dumps(description, default=str)):
            raise FeatureCacheError(f"{index_path} was made with other settings than its folder name says")
        expected = frames * self.layers * self.dim * 2
        size = data_path.stat().st_size if data_path.is_file() else None
        if size != expected:
            raise FeatureCacheError(f"{data_path} holds {size} bytes, its index says {expected}: cut short or replaced")
        # the bytes are checked against the checksum taken while they were written: same-size overwrites included
        if file_sha256(data_path) != checksum:
            raise FeatureCacheError(f"{data_path} is not the file the cache wrote (its SHA-256 differs)")
        self.data = np.memmap(data_path, dtype=np.float16, mode="r", shape=(frames, self.layers, self.dim))

    def lookup(self, wavs: Sequence[torch.Tensor], device: str | torch.device) -> list[torch.Tensor] | None:
        """Every layer of the batch, ``layers`` tensors of ``[batch, frames, dim]`` (zero-padded, float32)."""
        looked_up = [self.utterances.get(waveform_key(wav)) for wav in wavs]
        found = [entry for entry in looked_up if entry is not None]
        if len(found) < len(looked_up):
            return None
        longest = max(frames for _, frames in found)
        batch = torch.zeros(self.layers, len(wavs), longest, self.dim)
        for row, (offset, frames) in enumerate(found):
            block = torch.from_numpy(np.asarray(self.data[offset : offset + frames], dtype=np.float32))
            batch[:, row, :frames] = block.permute(1, 0, 2)
        batch = batch.to(device)
        return list(batch.unbind(0))

    @classmethod
    def build(
        cls,
        folder: str | os.PathLike[str],
        upstream: Callable[[list[torch.Tensor]], dict[str, Any]],
        batches: Iterable[Sequence[torch.Tensor]],
        *,
        rate: int,
        feature: str,
        description: dict[str, Any],
    ) -> FeatureCache:
        """Run ``upstream`` over ``batches`` (lists of waveforms on the upstream's device) and store every layer.

        Args:
            folder: the cache folder to create (``DIR/<key>``); built beside it and renamed into place.
            upstream: the frozen upstream's call (s3prl's ``upstream(wavs)``).
            batches: every batch of every split.
            rate: samples per frame (``get_downsample_rates``), to trim each utterance's padding.
            feature: the key of the upstream's output to store (``hidden_states``).
            description: what the key was made of, written to ``index.json`` for the reader.
        """
        folder = Path(folder)
        partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        utterances: dict[str, tuple[int, int]] = {}
        frames_written, layers, dim = 0, None, None
        checksum = hashlib.sha256()
        try:
            with open(partial / DATA_FILE, "wb") as stream, torch.no_grad():
                for wavs in tqdm(batches, desc="feature cache", unit="batch"):
                    keys = [waveform_key(wav) for wav in wavs]
                    if all(key in utterances for key in keys):
                        continue
                    states = upstream(list(wavs))[feature]
                    stacked = torch.stack(list(states), dim=2)  # [batch, frames, layers, dim]
                    layers, dim = stacked.shape[2], stacked.shape[3]
                    for row, (key, wav) in enumerate(zip(keys, wavs, strict=True)):
                        if key in utterances:
                            continue
                        frames = min(stacked.shape[1], round(len(wav) / rate))
                        block = stacked[row, :frames].to("cpu", torch.float16).contiguous().numpy()
                        stream.write(block.tobytes())
                        checksum.update(block.tobytes())
                        utterances[key] = (frames_written, frames)
                        frames_written += frames
            if layers is None:
                raise UsageError("the feature cache saw no utterance: the task's data loaders are empty")
            write_json_atomic(
                partial / INDEX_FILE,
                {
                    "format": CACHE_FORMAT,
                    "layers": layers,
                    "dim": dim,
                    "frames": frames_written,
                    "rate": rate,
                    "feature": feature,
                    "key": description,
                    "sha256": checksum.hexdigest(),
                    "utterances": utterances,
                },
            )
            if folder.exists():  # another process finished the same cache first
                shutil.rmtree(partial)
            else:
                os.replace(partial, folder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return cls(folder, description)


class CachedUpstream:
    """Stands in for the upstream call in a shared sweep: cached rows when the whole batch is cached, the live
    upstream otherwise. ``hits``/``misses`` count batches."""

    def __init__(self, cache: FeatureCache, upstream: Callable, feature: str, device: str) -> None:
        self.cache, self.upstream, self.feature, self.device = cache, upstream, feature, device
        self.hits = self.misses = 0

    def __call__(self, wavs: list[torch.Tensor]) -> dict[str, Any]:
        layers = self.cache.lookup(wavs, self.device)
        if layers is None:
            self.misses += 1
            return self.upstream(wavs)
        self.hits += 1
        return {self.feature: layers}


def cache_for_sweep(shared: Any, root: Path) -> CachedUpstream:
    """The cache of this sweep's upstream and corpus under ``root`` (built now if missing), wrapped for training.

    Extraction iterates every split once with the first head's expert (train, the evaluation splits, the test
    split) on scratch generators, before any head is built, so it changes no head's random stream.
    """
    args, config = shared.args, shared.config
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise FeatureCacheError(f"--cache-features {root} is a file; give a folder (it is created if missing)")
    feature = args.upstream_feature_selection
    if feature != "hidden_states":
        raise UsageError(f"--cache-features stores hidden_states; it cannot serve -s {feature}")
    model = shared.upstream.model
    rate = int(model.get_downsample_rates(feature))
    description = describe_cache(args, config, rate)
    folder = root / cache_key(description)
    saved = RngState.capture()
    if root.is_dir():
        for stale in remove_stale_partials(root, ".*.partial-*"):
            print(f"[shared sweep] - removed {stale}, left by a cache build that was killed")
    cache = None
    if (folder / INDEX_FILE).is_file():
        try:
            cache = FeatureCache(folder, description)
        except FeatureCacheError as error:
            print(f"[shared sweep] - rebuilding the feature cache: {error}")
            shutil.rmtree(folder)
    if cache is None:
        spec = shared.specs[0]
        probe = shared.new_head(spec, *shared.parsed[spec.name][:2])
        runner_cfg = config["runner"]
        splits = [runner_cfg.get("train_dataloader", "train"), *runner_cfg.get("eval_dataloaders", [])]
        test_split = shared.test_split
        if test_split and test_split not in splits:
            splits.append(test_split)

        def batches():
            for split in splits:
                for wavs, *_ in probe.runner.downstream.model.get_dataloader(split):
                    yield [torch.FloatTensor(wav).to(args.device) for wav in wavs]

        model.eval()
        cache = FeatureCache.build(folder, model, batches(), rate=rate, feature=feature, description=description)
        del probe
    saved.restore()
    print(f"[shared sweep] - features from the cache {folder}")
    return CachedUpstream(cache, model, feature, args.device)
