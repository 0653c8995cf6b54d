"""Every fix that makes s3prl 0.4.18 run on torch 2.14 / torchaudio 2.11 / numpy 2 / huggingface_hub >= 1.

s3prl's runner and downstream experts are used unchanged; this package adapts the world around them, one module
per library a fix targets (``for_torchaudio``, ``for_torch``, ``for_s3prl``, ``for_dependencies``;
``command_line`` for s3prl's arguments). Each fix is a small named function whose docstring says what breaks and
why. Importing this package patches nothing: :func:`apply` applies every fix, idempotently, and only the runner's
entry points call it (``downstream_probes.s3prl.run_downstream.prepare_s3prl``). ``tests/test_compat_still_needed.py``
runs each unpatched call in a fresh interpreter, so the day a fix is no longer needed, its test says so.
"""

from __future__ import annotations

from downstream_probes.s3prl.compat.command_line import (
    choose_device_and_backend,
    default_device,
    prepare_argv,
    translate_local_rank,
)
from downstream_probes.s3prl.compat.for_dependencies import (
    provide_catalyst_sampler,
    provide_huggingface_hub_legacy_names,
    require_tensorboardx,
    restore_numpy_aliases,
)
from downstream_probes.s3prl.compat.for_s3prl import (
    allow_s3prl_checkpoint_globals,
    check_enhancement_audio,
    keep_ctc_loader_settings,
    provide_ctc_snips_corpus,
    save_checkpoints_safely,
    stop_every_rank_at_total_steps,
)
from downstream_probes.s3prl.compat.for_torch import (
    allow_cpu_distributed_data_parallel,
    skip_cuda_set_device_without_gpu,
)
from downstream_probes.s3prl.compat.for_torchaudio import (
    load_audio_with_soundfile,
    provide_sox_effects,
    restore_set_audio_backend,
)

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


RUNNER_FIXES = (stop_every_rank_at_total_steps, save_checkpoints_safely, check_enhancement_audio)


def apply() -> None:
    """Apply every fix; safe to call any number of times (importing ``s3prl.hub`` needs it first).

    The fixes to s3prl's runner import it (and with it s3prl's hub, a few seconds); they are applied too, but
    only once the process fixes are in place.
    """
    for fix in PROCESS_FIXES:
        fix()
    for fix in RUNNER_FIXES:
        fix()


__all__ = [
    "PROCESS_FIXES",
    "RUNNER_FIXES",
    "allow_cpu_distributed_data_parallel",
    "allow_s3prl_checkpoint_globals",
    "apply",
    "check_enhancement_audio",
    "choose_device_and_backend",
    "default_device",
    "keep_ctc_loader_settings",
    "load_audio_with_soundfile",
    "prepare_argv",
    "provide_catalyst_sampler",
    "provide_ctc_snips_corpus",
    "provide_huggingface_hub_legacy_names",
    "provide_sox_effects",
    "require_tensorboardx",
    "restore_numpy_aliases",
    "restore_set_audio_backend",
    "save_checkpoints_safely",
    "skip_cuda_set_device_without_gpu",
    "stop_every_rank_at_total_steps",
    "translate_local_rank",
]
