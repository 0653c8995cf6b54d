"""Every fix that makes s3prl 0.4.18 run on torch 2.14 / torchaudio 2.11 / numpy 2 / huggingface_hub >= 1.

s3prl's runner and downstream experts are used unchanged; this module adapts the world around them. Each fix is a
small named function whose docstring says what breaks and why. ``apply_all()`` applies them all, idempotently:
first the process-wide ones (``PROCESS_FIXES``; importing ``s3prl.hub`` needs them), then those on s3prl's runner
module (``RUNNER_FIXES``; they import it). ``prepare_argv()`` holds the command-line fixes (torchrun's local rank,
device and distributed backend chosen for the machine), which ``run_downstream`` applies to s3prl's arguments.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
import torch.utils.data

_MARK = "__mrsuperb_compat__"


def _mark(function):
    setattr(function, _MARK, True)
    return function


def _is_ours(obj: object) -> bool:
    return bool(getattr(obj, _MARK, False))


# ----------------------------------------------------------------------------------------------------------------
# torchaudio


def restore_set_audio_backend() -> None:
    """``torchaudio.set_audio_backend`` was removed in torchaudio 2.9.

    ``s3prl.hub`` imports upstreams (byol_s, ...) that call ``torchaudio.set_audio_backend("sox_io")`` at import
    time and ``s3prl.run_downstream.main`` calls it too, so importing the hub fails with AttributeError. There is a
    single I/O path now (soundfile, see ``load_audio_with_soundfile``), so the call becomes a no-op;
    ``get_audio_backend`` reports ``"soundfile"``.
    """
    import torchaudio

    if not _is_ours(getattr(torchaudio, "set_audio_backend", None)):

        @_mark
        def set_audio_backend(backend: str | None) -> None:
            """Accepted for compatibility; audio I/O always goes through soundfile."""

        torchaudio.set_audio_backend = set_audio_backend
    if not _is_ours(getattr(torchaudio, "get_audio_backend", None)):
        torchaudio.get_audio_backend = _mark(lambda: "soundfile")
    if not _is_ours(getattr(torchaudio, "list_audio_backends", None)):
        torchaudio.list_audio_backends = _mark(lambda: ["soundfile"])


@dataclass(frozen=True)
class AudioMetaData:
    """What ``torchaudio.info`` used to return."""

    sample_rate: int
    num_frames: int
    num_channels: int
    bits_per_sample: int
    encoding: str


_SUBTYPE_BITS = {"PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}
_SUBTYPE_ENCODING = {
    "PCM_S8": "PCM_S",
    "PCM_U8": "PCM_U",
    "PCM_16": "PCM_S",
    "PCM_24": "PCM_S",
    "PCM_32": "PCM_S",
    "FLOAT": "PCM_F",
    "DOUBLE": "PCM_F",
}


def _audio_path(uri) -> str:
    if hasattr(uri, "read"):
        return uri
    path = os.fspath(uri)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    return path


@_mark
def soundfile_load(
    uri,
    frame_offset: int = 0,
    num_frames: int = -1,
    normalize: bool = True,
    channels_first: bool = True,
    format: str | None = None,
    buffer_size: int = 4096,
    backend: str | None = None,
) -> tuple[torch.Tensor, int]:
    """``torchaudio.load`` through soundfile: float32 in [-1, 1] ([channels, time]) and the sample rate.

    With ``normalize=False`` integer PCM comes back as int16/int32 like torchaudio's sox backend did.
    """
    source = _audio_path(uri)
    dtype = "float32"
    if not normalize:
        subtype = soundfile.info(source).subtype if isinstance(source, str) else "FLOAT"
        dtype = {"PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32"}.get(subtype, "float32")
    frames = -1 if num_frames is None or num_frames < 0 else int(num_frames)
    data, sample_rate = soundfile.read(
        source, start=int(frame_offset), frames=frames, dtype=dtype, always_2d=True, format=format
    )
    tensor = torch.from_numpy(np.ascontiguousarray(data.T if channels_first else data))
    return tensor, int(sample_rate)


@_mark
def soundfile_info(
    uri, format: str | None = None, buffer_size: int = 4096, backend: str | None = None
) -> AudioMetaData:
    """``torchaudio.info`` through soundfile."""
    info = soundfile.info(_audio_path(uri))
    return AudioMetaData(
        sample_rate=int(info.samplerate),
        num_frames=int(info.frames),
        num_channels=int(info.channels),
        bits_per_sample=_SUBTYPE_BITS.get(info.subtype, 0),
        encoding=_SUBTYPE_ENCODING.get(info.subtype, "UNKNOWN"),
    )


@_mark
def soundfile_save(
    uri,
    src: torch.Tensor,
    sample_rate: int,
    channels_first: bool = True,
    format: str | None = None,
    encoding: str | None = None,
    bits_per_sample: int | None = None,
    buffer_size: int = 4096,
    backend: str | None = None,
    compression=None,
) -> None:
    """``torchaudio.save`` through soundfile (16-bit PCM when asked for 16 bits or given int16, else 32-bit float)."""
    data = src.detach().cpu()
    data = data.T if channels_first and data.ndim == 2 else data
    if bits_per_sample == 16 or data.dtype == torch.int16:
        subtype = "PCM_16"
    elif bits_per_sample in (24, 32) and encoding == "PCM_S":
        subtype = f"PCM_{bits_per_sample}"
    else:
        subtype = "FLOAT"
    soundfile.write(os.fspath(uri), data.numpy(), int(sample_rate), subtype=subtype, format=format)


def load_audio_with_soundfile() -> None:
    """``torchaudio.load``/``save`` need torchcodec + FFmpeg since torchaudio 2.9; ``torchaudio.info`` is gone.

    s3prl's ASR, SF, IC datasets call ``torchaudio.load`` (and ``s3prl.util.audio_info`` calls ``torchaudio.info``);
    without FFmpeg shared libraries they fail at the first utterance. soundfile (libsndfile, bundled in its wheel)
    reads the WAV/FLAC files every SUPERB corpus uses, so the three functions are routed through it.
    """
    import torchaudio

    torchaudio.load = soundfile_load
    torchaudio.info = soundfile_info
    torchaudio.save = soundfile_save


def provide_sox_effects() -> None:
    """``torchaudio.sox_effects`` was removed in torchaudio 2.9.

    s3prl's Speech Commands dataset (KS) and the MOS-prediction upstream import ``apply_effects_file`` /
    ``apply_effects_tensor`` from it at import time. ``downstream_probes.sox_effects`` implements the SoX effects
    those recipes use and is installed under the old module name.
    """
    import torchaudio

    standin = importlib.import_module("downstream_probes.sox_effects")
    sys.modules["torchaudio.sox_effects"] = standin
    torchaudio.sox_effects = standin


# ----------------------------------------------------------------------------------------------------------------
# dependencies s3prl uses but does not declare, and APIs its dependencies removed


def require_tensorboardx() -> None:
    """s3prl's runner imports ``tensorboardX`` but does not declare it (our setup.cfg does).

    Fails early with an install hint rather than deep inside ``s3prl.downstream.runner``.
    """
    try:
        importlib.import_module("tensorboardX")
    except ImportError as error:
        raise ImportError(
            "s3prl's runner needs tensorboardX, which is not installed: run `pip install tensorboardX`"
        ) from error


class HfFolder:
    """The token helper ``huggingface_hub`` removed in 1.0, kept for ``s3prl.run_downstream`` / runner imports."""

    @staticmethod
    def get_token() -> str | None:
        import huggingface_hub

        return huggingface_hub.get_token()

    @staticmethod
    def save_token(token: str) -> None:
        import huggingface_hub

        huggingface_hub.login(token=token, add_to_git_credential=False)

    @staticmethod
    def delete_token() -> None:
        import huggingface_hub

        huggingface_hub.logout()


class Repository:
    """``huggingface_hub.Repository`` (git-based, removed in 1.0); s3prl only uses it for ``--push_to_hf_hub``.

    Constructing it raises one clear error: pushing needs today's HTTP API, which s3prl's push code predates.
    """

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(
            "s3prl's --push_to_hf_hub relies on huggingface_hub.Repository, removed in huggingface_hub 1.0; "
            "upload the experiment folder with `hf upload REPO EXPDIR` instead"
        )


def provide_huggingface_hub_legacy_names() -> None:
    """``from huggingface_hub import HfApi, HfFolder, Repository`` fails on huggingface_hub >= 1.

    ``s3prl.run_downstream`` and ``s3prl.downstream.runner`` import those names at module level, so nothing runs.
    ``HfFolder`` is restored on top of today's token functions; ``Repository`` explains the missing push path.
    """
    import huggingface_hub

    if not hasattr(huggingface_hub, "HfFolder"):
        huggingface_hub.HfFolder = HfFolder
    if not hasattr(huggingface_hub, "Repository"):
        huggingface_hub.Repository = Repository


class DistributedSamplerWrapper(torch.utils.data.DistributedSampler):
    """Shards any sampler across distributed ranks (what ``catalyst.data.sampler.DistributedSamplerWrapper`` did).

    Each epoch the wrapped sampler is drawn once (e.g. KS's class-balanced ``WeightedRandomSampler``); this rank
    then takes its share of those draws, chosen by ``DistributedSampler`` (shuffled with the epoch as seed).
    """

    def __init__(self, sampler, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True) -> None:
        super().__init__(range(len(sampler)), num_replicas=num_replicas, rank=rank, shuffle=shuffle)
        self.sampler = sampler

    def __iter__(self):
        drawn = list(self.sampler)
        return iter([drawn[position] for position in super().__iter__()])


def provide_catalyst_sampler() -> None:
    """s3prl's KS expert imports ``DistributedSamplerWrapper`` from ``catalyst``, which it does not declare and
    which no longer installs (catalyst 22.4's metadata is rejected by pip >= 24.1).

    When catalyst is not importable, ``catalyst.data.sampler`` is provided holding ``DistributedSamplerWrapper``
    above; an installed catalyst is left alone.
    """
    try:
        importlib.import_module("catalyst.data.sampler")
        return
    except ImportError:
        pass

    for name in ("catalyst", "catalyst.data", "catalyst.data.sampler"):
        module = sys.modules.get(name) or types.ModuleType(
            name, "mrsuperb stand-in (see downstream_probes.s3prl_compat)"
        )
        sys.modules[name] = module
    sys.modules["catalyst"].data = sys.modules["catalyst.data"]
    sys.modules["catalyst.data"].sampler = sys.modules["catalyst.data.sampler"]
    sys.modules["catalyst.data.sampler"].DistributedSamplerWrapper = DistributedSamplerWrapper


def restore_numpy_aliases() -> None:
    """NumPy 2 removed the aliases ``np.int``, ``np.float``, ``np.bool``, ``np.complex`` (deprecated in 1.20).

    s3prl's span masking (wav2vec2/WavLM/LightHuBERT ``compute_mask_indices``) calls ``np.fromiter(..., np.int)``
    and ``s3prl.utility.audio`` uses ``np.complex``. The aliases meant the Python builtins, so they are restored as
    exactly those.
    """
    for name, builtin in (("int", int), ("float", float), ("bool", bool), ("complex", complex), ("object", object)):
        if name not in np.__dict__:
            setattr(np, name, builtin)


def provide_ctc_snips_corpus() -> None:
    """The PyPI s3prl lacks ``s3prl/downstream/ctc/corpus/`` (it has no ``__init__.py`` upstream, so the wheel
    drops it); SUPERB slot filling (``-d ctc``, corpus ``snips``) fails at ``from .corpus.snips import SnipsDataset``.

    ``downstream_probes.s3prl_snips`` implements that reader and is installed as
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
            snips = importlib.import_module("downstream_probes.s3prl_snips")
            sys.modules[f"{package_name}.snips"] = snips
            sys.modules[package_name].snips = snips


def keep_ctc_loader_settings() -> None:
    """s3prl's CTC ``load_dataset`` pops ``num_workers`` out of the shared config on its first call.

    Every later loader (each dev/test evaluation) then silently falls back to 12 worker processes, whatever the
    config says (on a 2-core machine that multiplies start-up time and memory). The function is wrapped to work on
    a copy of the corpus settings, so the configured value holds for every split.
    """
    expert = importlib.import_module("s3prl.downstream.ctc.expert")
    if _is_ours(expert.load_dataset):
        return
    original = expert.load_dataset

    @_mark
    def load_dataset(split, tokenizer, corpus):
        return original(split, tokenizer, dict(corpus))

    expert.load_dataset = load_dataset


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


S3PRL_CHECKPOINT_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


def allow_s3prl_checkpoint_globals() -> None:
    """``torch.load`` defaults to ``weights_only=True`` since torch 2.6 and rejects ``argparse.Namespace``.

    s3prl stores its parsed arguments (``ckpt["Args"]``) in every ``states-*.ckpt``; ``-e`` (resume) and ``-i``
    (evaluate) call ``torch.load`` without ``weights_only``. Rather than turning the safe unpickler off, the classes
    s3prl checkpoints contain are added to torch's allow-list; anything else still fails.
    """
    torch.serialization.add_safe_globals(list(S3PRL_CHECKPOINT_GLOBALS))


# ----------------------------------------------------------------------------------------------------------------
# distributed training on machines without a GPU


def skip_cuda_set_device_without_gpu() -> None:
    """``s3prl.run_downstream.main`` calls ``torch.cuda.set_device(local_rank)`` whenever it is launched distributed.

    On a machine without CUDA that raises, so CPU-only multi-process training (gloo) could not start. Without CUDA
    the call has nothing to select and becomes a no-op; with CUDA it is untouched.
    """
    original = torch.cuda.set_device
    if _is_ours(original):
        return

    @_mark
    def set_device(device) -> None:
        if torch.cuda.is_available():
            original(device)

    set_device.__wrapped__ = original
    torch.cuda.set_device = set_device


def _make_device_aware_ddp(base: type) -> type:
    class DeviceAwareDistributedDataParallel(base):
        """DDP that drops ``device_ids`` for a module living on the CPU (gloo), as torch requires."""

        def __init__(self, module: torch.nn.Module, *args, **kwargs) -> None:
            if all(p.device.type == "cpu" for p in module.parameters()):
                kwargs.pop("device_ids", None)
                kwargs.pop("output_device", None)
                if args:
                    args = (None, None, *args[2:])
            super().__init__(module, *args, **kwargs)

        def forward(self, *args, **kwargs):
            # Only the leader evaluates (under no_grad): a DDP forward there would start a buffer broadcast the
            # other ranks never join. Without gradients there is nothing to synchronise, so call the module.
            if not torch.is_grad_enabled():
                return self.module(*args, **kwargs)
            return super().forward(*args, **kwargs)

    DeviceAwareDistributedDataParallel.__qualname__ = base.__qualname__
    setattr(DeviceAwareDistributedDataParallel, _MARK, True)
    return DeviceAwareDistributedDataParallel


def allow_cpu_distributed_data_parallel() -> None:
    """s3prl's runner wraps trainable models in ``DDP(model, device_ids=[local_rank])`` and evaluates them on the
    leader rank only, through that wrapper.

    Two failures follow: torch refuses ``device_ids`` for CPU modules, so gloo training on CPUs cannot start; and
    the leader's first evaluation forward (after a training forward) broadcasts the experts' buffers (e.g.
    ``best_score``) in a collective the other ranks never join, which desynchronises and kills the job. The DDP
    class s3prl imports is replaced by a subclass that drops ``device_ids`` for CPU modules and runs no-grad
    forwards on the wrapped module directly (``isinstance(m, DistributedDataParallel)`` still holds, which
    s3prl's ``get_model_state`` relies on).
    """
    import torch.nn.parallel

    current = torch.nn.parallel.DistributedDataParallel
    patched = current if _is_ours(current) else _make_device_aware_ddp(current)
    torch.nn.parallel.DistributedDataParallel = patched
    for module_name in ("s3prl.downstream.runner",):
        module = sys.modules.get(module_name)
        if module is not None and not _is_ours(getattr(module, "DDP", None)):
            module.DDP = patched


def stop_every_rank_at_total_steps() -> None:
    """s3prl's training loop advances its step counter (the ``overall`` progress bar) only on the leader rank:
    the other ranks ``continue`` before ``pbar.update(1)``, so they never reach ``total_steps``.

    Under torchrun they keep training after the leader has finished, and crash in the next gradient all-reduce
    ("Connection closed by peer") once it exits. On non-leader ranks the step counter is advanced where the leader
    advances it: once per optimizer step (s3prl calls ``optimizer.zero_grad()`` exactly once per step, right
    before the leader's update). The leader's behaviour is unchanged.
    """
    runner_module = importlib.import_module("s3prl.downstream.runner")
    if _is_ours(runner_module.tqdm):
        return
    original_tqdm = runner_module.tqdm
    overall_bars: list = []

    class tqdm(original_tqdm):
        """tqdm that remembers the runner's ``overall`` step bar."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("desc") == "overall":
                overall_bars[:] = [self]

    setattr(tqdm, _MARK, True)
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
    runner_module = importlib.import_module("s3prl.downstream.runner")
    if _is_ours(runner_module.torch):
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
    setattr(torch_proxy, _MARK, True)
    runner_module.torch = torch_proxy
    runner_module.os = _ModuleProxy(real_os, remove=remove)


# ----------------------------------------------------------------------------------------------------------------
# command line


def _option_value(argv: Sequence[str], *names: str) -> str | None:
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def translate_local_rank(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """s3prl parses only ``--local_rank``; ``torch.distributed.launch`` now passes ``--local-rank`` and torchrun
    passes nothing (it sets ``LOCAL_RANK`` in the environment).

    ``--local-rank`` is renamed, and under torchrun ``--local_rank $LOCAL_RANK`` is added, so s3prl's own
    distributed set-up (``init_process_group``, DDP, leader-only logging and saving) runs.
    """
    environ = os.environ if environ is None else environ
    out: list[str] = []
    for arg in argv:
        if arg == "--local-rank":
            out.append("--local_rank")
        elif arg.startswith("--local-rank="):
            out.append("--local_rank=" + arg.split("=", 1)[1])
        else:
            out.append(arg)
    if _option_value(out, "--local_rank") is None and environ.get("LOCAL_RANK") is not None:
        out += ["--local_rank", str(environ["LOCAL_RANK"])]
    return out


def default_device() -> str:
    """``cuda`` when a GPU is usable, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def choose_device_and_backend(argv: Sequence[str]) -> list[str]:
    """s3prl defaults to ``--device cuda`` and ``--backend nccl``, which fail on machines without a GPU.

    An explicit ``--device``/``--backend`` is kept; otherwise the device is ``cuda`` if available else ``cpu``, and
    the backend is ``nccl`` for CUDA devices and ``gloo`` for the CPU. (``-e`` does not restore the device from the
    checkpoint either, so a resumed run also gets the machine's device.)
    """
    out = list(argv)
    device = _option_value(out, "--device")
    if device is None:
        device = default_device()
        out += ["--device", device]
    if _option_value(out, "--backend") is None:
        out += ["--backend", "nccl" if device.startswith("cuda") else "gloo"]
    return out


def prepare_argv(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """All command-line fixes, in order: torchrun's local rank, then device and backend."""
    return choose_device_and_backend(translate_local_rank(argv, environ))


# ----------------------------------------------------------------------------------------------------------------

PROCESS_FIXES = (
    restore_set_audio_backend,
    load_audio_with_soundfile,
    provide_sox_effects,
    require_tensorboardx,
    provide_huggingface_hub_legacy_names,
    provide_catalyst_sampler,
    restore_numpy_aliases,
    provide_ctc_snips_corpus,
    keep_ctc_loader_settings,
    allow_s3prl_checkpoint_globals,
    skip_cuda_set_device_without_gpu,
    allow_cpu_distributed_data_parallel,
)


RUNNER_FIXES = (stop_every_rank_at_total_steps, save_checkpoints_safely)


def apply_all() -> None:
    """Apply every fix; safe to call any number of times (importing ``s3prl.hub`` needs it first).

    The fixes to s3prl's runner import it (and with it s3prl's hub, a few seconds); they are applied too, but
    only once the process fixes are in place.
    """
    for fix in PROCESS_FIXES:
        fix()
    for fix in RUNNER_FIXES:
        fix()
