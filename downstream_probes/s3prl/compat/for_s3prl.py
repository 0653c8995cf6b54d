"""Fixes to s3prl 0.4.18 itself: the slot-filling corpus missing from its wheel, its CTC loader settings, its
checkpoints under torch's safe ``torch.load``, and its training loop (ranks stopping together, checkpoints saved
atomically)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch
import torch.utils.data

from downstream_probes.audio import read_audio
from downstream_probes.s3prl.compat.marks import is_ours, mark


def provide_ctc_snips_corpus() -> None:
    """The PyPI s3prl lacks ``s3prl/downstream/ctc/corpus/`` (it has no ``__init__.py`` upstream, so the wheel
    drops it); SUPERB slot filling (``-d ctc``, corpus ``snips``) fails at ``from .corpus.snips import SnipsDataset``.

    ``downstream_probes.s3prl.compat.snips`` implements that reader and is installed as
    ``s3prl.downstream.ctc.corpus.snips`` (the namespace package is created only if s3prl does not have one).
    """

    package_name = "s3prl.downstream.ctc.corpus"
    if package_name not in sys.modules:
        try:
            importlib.import_module(package_name)
        except ImportError:
            package = types.ModuleType(package_name, "mrsuperb stand-in: corpora missing from the s3prl wheel")
            package.__path__ = []
            sys.modules[package_name] = package
    if f"{package_name}.snips" not in sys.modules:
        try:
            importlib.import_module(f"{package_name}.snips")
        except ImportError:
            snips = importlib.import_module("downstream_probes.s3prl.compat.snips")
            sys.modules[f"{package_name}.snips"] = snips
            corpus_package: Any = sys.modules[package_name]
            corpus_package.snips = snips


def keep_ctc_loader_settings() -> None:
    """s3prl's CTC ``load_dataset`` pops ``num_workers`` out of the shared config on its first call.

    Every later loader (each dev/test evaluation) then silently falls back to 12 worker processes, whatever the
    config says (on a 2-core machine that multiplies start-up time and memory). The function is wrapped to work on
    a copy of the corpus settings, so the configured value holds for every split.
    """
    expert: Any = importlib.import_module("s3prl.downstream.ctc.expert")
    if is_ours(expert.load_dataset):
        return
    original = expert.load_dataset

    @mark
    def load_dataset(split, tokenizer, corpus):
        return original(split, tokenizer, dict(corpus))

    expert.load_dataset = load_dataset


S3PRL_CHECKPOINT_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


def allow_s3prl_checkpoint_globals() -> None:
    """``torch.load`` defaults to ``weights_only=True`` since torch 2.6 and rejects ``argparse.Namespace``.

    s3prl stores its parsed arguments (``ckpt["Args"]``) in every ``states-*.ckpt``; ``-e`` (resume) and ``-i``
    (evaluate) call ``torch.load`` without ``weights_only``. Rather than turning the safe unpickler off, the classes
    s3prl checkpoints contain are added to torch's allow-list; anything else still fails.
    """
    torch.serialization.add_safe_globals(list(S3PRL_CHECKPOINT_GLOBALS))


def stop_every_rank_at_total_steps() -> None:
    """s3prl's training loop advances its step counter (the ``overall`` progress bar) only on the leader rank:
    the other ranks ``continue`` before ``pbar.update(1)``, so they never reach ``total_steps``.

    Under torchrun they keep training after the leader has finished, and crash in the next gradient all-reduce
    ("Connection closed by peer") once it exits. On non-leader ranks the step counter is advanced where the leader
    advances it: once per optimizer step (s3prl calls ``optimizer.zero_grad()`` exactly once per step, right
    before the leader's update). The leader's behaviour is unchanged.
    """
    runner_module: Any = importlib.import_module("s3prl.downstream.runner")
    if is_ours(runner_module.tqdm):
        return
    original_tqdm: type = runner_module.tqdm
    overall_bars: list = []

    class tqdm(original_tqdm):
        """tqdm that remembers the runner's ``overall`` step bar."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("desc") == "overall":
                overall_bars[:] = [self]

    mark(tqdm)
    runner_module.tqdm = tqdm
    original_get_optimizer = runner_module.Runner._get_optimizer

    def _get_optimizer(self, model_params):
        optimizer = original_get_optimizer(self, model_params)
        if runner_module.is_leader_process():
            return optimizer
        original_zero_grad = optimizer.zero_grad

        def zero_grad(*args, **kwargs):
            result = original_zero_grad(*args, **kwargs)
            if overall_bars:
                overall_bars[0].update(1)
            return result

        optimizer.zero_grad = zero_grad
        return optimizer

    runner_module.Runner._get_optimizer = _get_optimizer


class _ModuleProxy(types.ModuleType):
    """A module object that serves every attribute from ``target`` except those set on the proxy itself."""

    def __init__(self, target: types.ModuleType, **overrides) -> None:
        super().__init__(target.__name__, target.__doc__)
        self.__dict__["_target"] = target
        self.__dict__.update(overrides)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["_target"], name)


def save_checkpoints_safely() -> None:
    """s3prl writes ``states-*.ckpt`` in place and, to honour ``max_keep``, deletes the previous one *before*
    writing the next.

    A run killed during a save leaves a truncated newest checkpoint (``-a``/``-e`` then fail to load it) or,
    with ``max_keep: 1``, no checkpoint at all (``-a`` silently starts from scratch). In s3prl's runner module,
    ``torch.save`` to a path now writes a temporary file and renames it into place, and ``os.remove`` of a
    ``states-*.ckpt`` is deferred until the next checkpoint is complete. Everything else of ``torch``/``os`` is
    untouched (the runner sees thin proxies of the two modules).
    """
    runner_module: Any = importlib.import_module("s3prl.downstream.runner")
    if is_ours(runner_module.torch):
        return
    real_torch, real_os = runner_module.torch, runner_module.os
    pending_removals: list[str] = []

    def remove(path, *args, **kwargs):
        if Path(os.fspath(path)).name.startswith("states-") and str(path).endswith(".ckpt"):
            pending_removals.append(os.fspath(path))
            return None
        return real_os.remove(path, *args, **kwargs)

    def save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)):
            return real_torch.save(obj, f, *args, **kwargs)
        target = Path(os.fspath(f))
        temp = target.with_name(f".{target.name}.part")
        try:
            real_torch.save(obj, temp, *args, **kwargs)
            real_os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if target.name.startswith("states-"):
            while pending_removals:
                old = pending_removals.pop()
                if old != str(target) and real_os.path.exists(old):
                    real_os.remove(old)
        return None

    torch_proxy = _ModuleProxy(real_torch, save=save)
    mark(torch_proxy)
    runner_module.torch = torch_proxy
    runner_module.os = _ModuleProxy(real_os, remove=remove)


def check_enhancement_audio() -> None:
    """s3prl's speech-enhancement dataset (SE, ``enhancement_stft``) reads every file with
    ``librosa.load(path, sr=16000)``, which resamples whatever rate it finds and mixes stereo down.

    An 8 kHz or stereo file in a VoiceBank-DEMAND layout is then trained on as if it were right, and the run ends
    with exit status 0. In that module, ``librosa.load`` goes through the project's one checked reader
    (``downstream_probes.audio.read_audio``: rate, channels, length, finiteness, the file named); the rest
    of librosa (its STFT) is untouched.
    """
    dataset: Any = importlib.import_module("s3prl.downstream.enhancement_stft.dataset")
    if is_ours(dataset.librosa):
        return

    def load(path, sr=None, mono=True, **kwargs):
        samples, rate = read_audio(path, sample_rate=sr, mono=True)
        return samples[0], rate

    proxy = _ModuleProxy(dataset.librosa, load=load)
    mark(proxy)
    dataset.librosa = proxy
