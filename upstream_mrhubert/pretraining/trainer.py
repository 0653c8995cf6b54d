"""The pretraining loop: targets, batches, AdamW steps, validation, logs and checkpoints, resumable with ``-a``.

Launch it as ``mrsuperb pretrain`` (one process) or under ``torchrun --nproc_per_node N`` (DDP: gloo on CPU, nccl
on GPU; each rank draws its own slice of every step's utterances, rank 0 writes every file).

Every random draw is a function of (seed, step, micro-batch, rank): batches and crops (:mod:`.data`), masks, and
dropout (torch's generator is re-seeded per micro-batch). A run resumed from step s therefore computes the same
steps s+1, s+2, ... as an uninterrupted run; the history and tensorboard entries after the saved step (logged by
the killed process before it could save) are dropped on resume, so no step is lost or counted twice.

What a run writes under OUT::

    results.json                 config, seed, versions, corpus, targets, history (atomic, rewritten at each log)
    targets/                     fairseq's train/valid .tsv and .km and dict.km.txt (reused when they match)
    checkpoints/                 checkpoint_last.pt, checkpoint_best.pt, checkpoint_init.pt (the step-0 weights:
                                 the run's random-init twin), all in fairseq's format; resume.pt
    tensorboard/                 loss and masked accuracy per resolution, learning rate, gradient norm
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from upstream_mrhubert.errors import UsageError
from upstream_mrhubert.output_folder import differing_fields, file_identity, folder_lock
from upstream_mrhubert.pretraining import checkpointing, records, targets
from upstream_mrhubert.pretraining.config import PretrainConfig, PretrainDiverged, PretrainRunError
from upstream_mrhubert.pretraining.data import SAMPLE_RATE, BatchSampler, Manifest, merge, scan_split, step_generator
from upstream_mrhubert.pretraining.network import MaskedPredictionModel
from upstream_mrhubert.pretraining.schedule import build_optimizer, set_learning_rate

TARGETS_DIR = "targets"
TENSORBOARD_DIR = "tensorboard"
_MASK_STREAM = 0x3A5C  # keeps mask draws independent of crop draws with the same (seed, micro-batch, rank)
_VALID_STREAM = 0x7A11
TARGETS_TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        # rank 0 may spend hours making the k-means targets of a large corpus while the others wait at a barrier
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=TARGETS_TIMEOUT)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _barrier(ddp: Distributed) -> None:
    if ddp.world_size > 1:
        dist.barrier()


@dataclass
class PreparedData:
    train: Manifest
    train_labels: list[np.ndarray]
    valid: Manifest
    valid_labels: list[np.ndarray]
    info: dict[str, Any]


def targets_settings(config: PretrainConfig) -> dict[str, Any]:
    """What makes the k-means targets (recorded in ``targets/targets.json``; reused targets must match it)."""
    t = config.targets
    return {
        "kind": t.kind,
        "clusters": t.clusters,
        "checkpoint": file_identity(t.checkpoint) if t.kind == "layer" else None,
        "layer": t.layer if t.kind == "layer" else None,
        "fit_frames": t.fit_frames,
        "batch_size": t.batch_size,
        "seed": config.run.seed,
        "min_seconds": config.data.min_seconds,
    }


def prepare_data(
    config: PretrainConfig, corpus: Path, out: Path, ddp: Distributed, progress: bool, resuming: bool = False
) -> PreparedData:
    """Manifests of the training and validation splits and their k-means labels (made once, by rank 0).

    Targets already in ``out/targets`` are reused only when their record (settings and file checksums) matches
    this recipe and their rows match the corpus; else they are made again, or, when ``resuming``, refused: the
    resumed model would train on other labels (k-means on another corpus gives other, permuted cluster ids)."""
    min_samples = int(config.data.min_seconds * SAMPLE_RATE)
    train = merge([scan_split(corpus, s, min_samples=min_samples) for s in config.data.train_splits])
    valid = merge([scan_split(corpus, s, min_samples=min_samples) for s in config.data.valid_splits])
    folder = out / TARGETS_DIR
    settings = targets_settings(config)
    if ddp.is_main:
        stale = targets.stale_targets(folder, settings)
        if stale is None and (
            targets.read_labels(folder, "train", train) is None or targets.read_labels(folder, "valid", valid) is None
        ):
            stale = f"the corpus {corpus} is not the one they were made from (utterances added, removed or changed)"
        if stale is not None and resuming:
            raise PretrainRunError(
                f"cannot resume the run in {out}: its targets in {folder} do not fit ({stale}); resuming would train "
                "on other labels. Restore the corpus and recipe it started with, or start afresh in another --out"
            )
        if stale is not None:
            _make_labels(config, train, valid, folder, progress)
            targets.record_targets(folder, settings)
    _barrier(ddp)
    train_labels = targets.read_labels(folder, "train", train)
    valid_labels = targets.read_labels(folder, "valid", valid)
    if train_labels is None or valid_labels is None:
        raise PretrainRunError(f"the labels in {folder} do not match the corpus; remove {folder} and start again")
    train_majority = int(np.bincount(np.concatenate(train_labels)).argmax())
    all_valid = np.concatenate(valid_labels)
    info = {
        "corpus": str(corpus),
        "train": {"splits": list(config.data.train_splits), "utterances": len(train), "seconds": train.total_seconds},
        "valid": {"splits": list(config.data.valid_splits), "utterances": len(valid), "seconds": valid.total_seconds},
        "targets": {
            "kind": config.targets.kind,
            "clusters": config.targets.clusters,
            "checkpoint": config.targets.checkpoint,
            "layer": config.targets.layer,
            "clusters_used_train": int(len(np.unique(np.concatenate(train_labels)))),
            "train_majority_cluster": train_majority,
            # the accuracy of always predicting the training set's most frequent cluster, on every valid frame
            "majority_baseline_valid": float(np.mean(all_valid == train_majority)),
            "subsampling": "resolution frame t takes 20 ms label t * ratio (the first 20 ms frame of its window)",
        },
    }
    return PreparedData(train, train_labels, valid, valid_labels, info)


def _make_labels(config: PretrainConfig, train: Manifest, valid: Manifest, folder: Path, progress: bool) -> None:
    t = config.targets
    extractor: Callable[[np.ndarray], torch.Tensor]
    if t.kind == "mfcc":
        extractor = targets.mfcc_features
    else:
        assert t.checkpoint is not None and t.layer is not None
        extractor = targets.layer_feature_extractor(t.checkpoint, t.layer)
    del progress  # extract_all shows its own bars
    train_features = targets.extract_all(train, extractor, desc=f"{t.kind} features (train)")
    source = "the MFCCs" if t.kind == "mfcc" else f"state {t.layer} of {t.checkpoint}"
    _check_finite(train_features, train, source)
    kmeans = targets.fit_kmeans(
        train_features, clusters=t.clusters, fit_frames=t.fit_frames, batch_size=t.batch_size, seed=config.run.seed
    )
    valid_features = targets.extract_all(valid, extractor, desc=f"{t.kind} features (valid)")
    _check_finite(valid_features, valid, source)
    targets.write_labels(folder, "train", targets.assign(kmeans, train_features), train, t.clusters)
    targets.write_labels(folder, "valid", targets.assign(kmeans, valid_features), valid, t.clusters)
    np.save(folder / "kmeans_centers.npy", kmeans.cluster_centers_.astype(np.float32))


def _check_finite(features: list[np.ndarray], manifest: Manifest, source: str) -> None:
    """Refuse NaN or infinite features before k-means (sklearn's own error names no file, layer or checkpoint)."""
    for index, values in enumerate(features):
        if not np.isfinite(values).all():
            raise PretrainRunError(
                f"{source} gives NaN or infinite values for {manifest.paths[index]}; the k-means targets need finite "
                "features (for targets.kind=layer, use a checkpoint that did not diverge)"
            )


def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise UsageError("optim.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _seed_torch(seed: int, *parts: int) -> None:
    """Dropout and layerdrop of one micro-batch draw from a generator seeded by (seed, parts)."""
    torch.manual_seed(int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0]))


def initial_model(config: PretrainConfig) -> MaskedPredictionModel:
    """The weights a run starts from (seeded by ``run.seed``): its random-init twin, ``checkpoint_init.pt``."""
    _seed_torch(config.run.seed, 0)
    return MaskedPredictionModel(config, config.targets.clusters)


def _reduce(sums: records.MetricSums, ddp: Distributed, device: torch.device) -> records.MetricSums:
    if ddp.world_size == 1:
        return sums
    vector = torch.tensor(sums.as_vector(), dtype=torch.float64, device=device)
    dist.all_reduce(vector)
    return records.MetricSums.from_vector(sums.heads, vector.tolist())


def _log_scalars(writer: Any, prefix: str, metrics: dict[str, float], step: int) -> None:
    if writer is None:
        return
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(f"{prefix}/{key}", value, step)


@torch.no_grad()
def validate(
    model: MaskedPredictionModel, batches: list[Any], config: PretrainConfig, device: torch.device
) -> dict[str, float]:
    """Loss and masked accuracy per head on the fixed validation batches (eval mode, fixed masks)."""
    if not batches:
        raise PretrainRunError("validation has no batch (run.valid_batches, or an empty validation split)")
    was_training = model.training
    model.eval()
    sums = records.MetricSums(heads=model.heads.num_heads)
    for index, batch in enumerate(batches):
        rng = step_generator(config.run.seed, _VALID_STREAM, index)
        with _autocast(config.optim.precision, device):
            sums.add(model(batch.waveforms.to(device), batch.targets.to(device), rng))
    model.train(was_training)
    return sums.summary()


def _finite_weights(model: torch.nn.Module) -> bool:
    """Every weight finite, with one device synchronisation (the sum of the per-tensor norms: a NaN or an infinity
    anywhere makes it non-finite)."""
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    return bool(torch.isfinite(torch.stack(norms).sum()))


def _diverged(write: Callable[..., None], out: Path, step: int, reason: str) -> None:
    """Stop a run whose loss, gradients or weights are no longer finite: ``results.json`` says ``diverged``, the
    checkpoints of the last save (finite weights) are kept, and the caller gets one error."""
    write("diverged", diverged_step=step)
    last = out / checkpointing.CHECKPOINT_DIR / checkpointing.LAST
    kept = f"the last finite checkpoint is {last}" if last.is_file() else "no checkpoint was saved before"
    raise PretrainDiverged(
        f"pretraining in {out} diverged at step {step} ({reason}); {kept}. Lower optim.lr, or check loss.logit_temp "
        "and the targets"
    )


def _micro_batches(step: int, accumulate: int) -> Iterator[tuple[int, bool]]:
    for micro in range(accumulate):
        yield step * accumulate + micro, micro == accumulate - 1


def train(
    config: PretrainConfig,
    corpus: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    recipe: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain ``config`` on ``corpus`` into ``out``; returns the final ``results.json`` payload.

    Args:
        config: the recipe (``optim.max_steps`` is the run's length and the schedule's).
        corpus: a folder with ``LibriSpeech/<split>/`` (see :mod:`.data`).
        out: the run's folder; it must not hold another run unless ``resume``.
        resume: continue the run in ``out`` from its last saved step (the config must be the one it started with).
        recipe: the recipe's path, recorded.
        device: ``cpu``/``cuda``; default CUDA when available. Under torchrun each rank takes ``cuda:LOCAL_RANK``.
        progress: show a tqdm bar.
    """
    corpus, out = Path(corpus), Path(out)
    wanted = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    ddp = init_distributed(wanted)
    if wanted.type == "cuda":
        wanted = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(wanted)
    # one run at a time in OUT: the lock run_downstream.py and probe-sweep take (rank 0 holds it for all)
    with folder_lock(out, "--out") if ddp.is_main else contextlib.nullcontext():
        return _train(config, corpus, out, ddp, wanted, resume=resume, recipe=recipe, progress=progress)


def _train(
    config: PretrainConfig,
    corpus: Path,
    out: Path,
    ddp: Distributed,
    wanted: torch.device,
    *,
    resume: bool,
    recipe: str | None,
    progress: bool,
) -> dict[str, Any]:
    saved = checkpointing.load_resume(out) if resume else None
    if not resume and (out / records.RESULTS_FILE).exists():
        raise PretrainRunError(f"{out} already holds a pretraining run; pass -a to resume it or choose another --out")
    if saved is not None and saved.config != config.as_dict():
        changed = differing_fields(saved.config, config.as_dict())
        raise PretrainRunError(
            f"the run in {out} was started with another config (differs in {'; '.join(changed)}); resume it with "
            "the same recipe and --max-steps, or choose another --out"
        )
    if ddp.is_main:
        out.mkdir(parents=True, exist_ok=True)

    data = prepare_data(config, corpus, out, ddp, progress, resuming=saved is not None)
    clusters = config.targets.clusters
    model = initial_model(config).to(wanted)
    if ddp.is_main and saved is None:
        checkpointing.write_fairseq(out / checkpointing.CHECKPOINT_DIR / checkpointing.INIT, model, config, clusters)
    optimizer = build_optimizer(model, config.optim)
    scaler = torch.amp.GradScaler("cuda") if config.optim.precision == "fp16" else None
    start_step, best_valid = 0, math.inf
    history: list[dict[str, Any]] = []
    valid_history: list[dict[str, Any]] = []
    if saved is not None:
        try:
            model.load_state_dict(saved.model)
            optimizer.load_state_dict(saved.optimizer)
            if scaler is not None and saved.scaler is not None:
                scaler.load_state_dict(saved.scaler)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            path = out / checkpointing.CHECKPOINT_DIR / checkpointing.RESUME
            raise PretrainRunError(
                f"{path} does not fit this recipe's model ({str(error).splitlines()[0]}); remove it to start the run "
                "again, or choose another --out"
            ) from None
        start_step = saved.step
        best_valid = saved.best_valid if saved.best_valid is not None else math.inf
        history = [h for h in saved.history if h["step"] <= start_step]
        valid_history = [h for h in saved.valid_history if h["step"] <= start_step]
    model.train()
    trained: torch.nn.Module = model
    if ddp.world_size > 1:
        trained = DistributedDataParallel(
            model,
            device_ids=[wanted.index] if wanted.type == "cuda" else None,
            find_unused_parameters=config.model.encoder_layerdrop > 0,
        )

    crop_samples = int(config.data.crop_seconds * SAMPLE_RATE)
    sampler = BatchSampler(
        data.train,
        data.train_labels,
        batch_size=config.data.batch_size,
        crop_samples=crop_samples,
        seed=config.run.seed,
        world_size=ddp.world_size,
    )
    valid_batches = BatchSampler(
        data.valid, data.valid_labels, batch_size=config.data.batch_size, crop_samples=crop_samples, seed=0
    ).fixed_batches(config.run.valid_batches)

    writer = None
    if ddp.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=start_step + 1 if start_step else None)

    payload: dict[str, Any] = {
        "recipe": recipe,
        "config": config.as_dict(),
        "fairseq_cfg": dict(zip(("model", "task"), config.fairseq_cfg(), strict=True)),
        "seed": config.run.seed,
        "versions": records.versions(),
        "device": str(wanted),
        "device_name": torch.cuda.get_device_name(wanted) if wanted.type == "cuda" else "cpu",
        "world_size": ddp.world_size,
        "torch_threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        **data.info,
        "units": "losses in bits per masked 20 ms frame (fairseq's logged loss); acc_m_<j>: masked accuracy of head j",
    }
    optim = config.optim
    step = start_step
    audio_seconds, train_seconds = 0.0, 0.0
    sums = records.MetricSums(heads=model.heads.num_heads)

    def save(best: bool) -> None:
        state = checkpointing.ResumeState(
            step=step,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            best_valid=best_valid if math.isfinite(best_valid) else None,
            history=history,
            valid_history=valid_history,
            config=config.as_dict(),
        )
        checkpointing.save(out, state, model, clusters, best=best)

    def write(status: str, **extra: Any) -> None:
        payload.update(
            **extra,
            status=status,
            steps_done=step,
            max_steps=optim.max_steps,
            history=history,
            valid_history=valid_history,
            best_valid_loss=best_valid if math.isfinite(best_valid) else None,
            throughput={
                "audio_seconds": audio_seconds,
                "train_wall_seconds": train_seconds,
                "audio_seconds_per_second": audio_seconds / train_seconds if train_seconds else None,
                "note": "this process's steps only (a resumed run counts from its resume)",
            },
        )
        if ddp.is_main:
            records.write_results(out, payload)

    write("running")
    bar = tqdm(
        total=optim.max_steps, initial=start_step, desc="pretrain", unit="step", disable=not (progress and ddp.is_main)
    )
    while step < optim.max_steps:
        began = time.perf_counter()
        lr = set_learning_rate(optimizer, step, optim)
        optimizer.zero_grad(set_to_none=True)
        for micro_index, last in _micro_batches(step, optim.accumulate):
            batch = sampler.batch(micro_index, ddp.rank)
            _seed_torch(config.run.seed, 1, micro_index, ddp.rank)
            rng = step_generator(config.run.seed, _MASK_STREAM, micro_index, ddp.rank)
            sync = contextlib.nullcontext() if last or ddp.world_size == 1 else trained.no_sync()  # type: ignore[operator]
            with sync:
                with _autocast(optim.precision, wanted):
                    terms = trained(batch.waveforms.to(wanted), batch.targets.to(wanted), rng)
                loss = terms.objective / optim.accumulate
                (scaler.scale(loss) if scaler is not None else loss).backward()
            sums.add(terms)
            audio_seconds += batch.waveforms.numel() / SAMPLE_RATE * ddp.world_size
        if scaler is not None:
            scaler.unscale_(optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), optim.clip_norm))
        # fp16's scaler skips steps with infinite gradients by design; elsewhere they mean the run diverged
        if scaler is None and not math.isfinite(grad_norm):
            _diverged(write, out, step + 1, f"the gradient norm is {grad_norm}")
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if not _finite_weights(model):
            _diverged(write, out, step + 1, "a weight became NaN or infinite")
        step += 1
        train_seconds += time.perf_counter() - began
        bar.update(1)

        if step % config.run.log_every == 0 or step == optim.max_steps:
            metrics = _reduce(sums, ddp, wanted).summary()
            sums = records.MetricSums(heads=model.heads.num_heads)
            entry = {"step": step, "lr": lr, "grad_norm": grad_norm, **metrics}
            history.append(entry)
            _log_scalars(writer, "train", {k: v for k, v in entry.items() if k != "step"}, step)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['acc_m_0']:.3f}")
        is_best = False
        if step % config.run.valid_every == 0 or step == optim.max_steps:
            valid = validate(model, valid_batches, config, wanted)
            valid_history.append({"step": step, **valid})
            _log_scalars(writer, "valid", valid, step)
            if valid["loss"] < best_valid:
                best_valid, is_best = valid["loss"], True
        if step % config.run.save_every == 0 or step == optim.max_steps or is_best:
            if ddp.is_main:
                save(best=is_best)
            _barrier(ddp)
        if step % config.run.log_every == 0 or step == optim.max_steps:
            write("running")
    bar.close()
    write("finished")
    if writer is not None:
        writer.close()
    _barrier(ddp)
    return payload
