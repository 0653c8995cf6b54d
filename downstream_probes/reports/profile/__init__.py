"""Efficiency profile of upstreams: parameters, FLOPs, CPU latency and peak memory, per block and per resolution.

arXiv 2410.23955 concludes that MR-HuBERT's downsampling buys efficiency, not better representations, without
measuring the efficiency. ``mrsuperb profile -u mrhubert_mono_base mrhubert_b2a mrhubert_b5a`` measures it: the
same 12 transformer layers cost less when some of them run at 40 or 80 ms.

What is measured, on one waveform of ``seconds`` seconds (seeded noise at 16 kHz, batch 1, inference mode):
  * parameters: per block, every parameter counted once (``other`` holds what no block owns);
  * FLOPs, per block and in total, 2 per multiply-add, element-wise operations not counted, by
    :class:`torch.utils.flop_counter.FlopCounterMode` alone (matrix products, convolutions and attention) for
    every family: our modules and transformers' HuBERT are plain ``Conv1d``/``Linear``/attention operators, which
    the counter sees as they run. The one formula added is for an operator torch's counter lacks: CPU attention
    (``aten._scaled_dot_product_flash_attention_for_cpu``), counted like torch counts its CUDA kernels;
  * latency: wall-clock CPU time of the forward pass, median of ``repeats`` runs after one warm-up; per block
    from forward hooks (timestamps on entry and exit). Several upstreams are timed in turns (each round runs
    every model once), so that load from other processes hits them alike and their ratios stay meaningful;
  * peak memory: the largest number of bytes held by live tensors created during the forward pass (weights and
    the input excluded), tracked exactly at the operator level through a dispatch mode, so it does not depend on
    the allocator or on other processes. Per block: the peak reached inside it above what was live on entry.
Normalised per second of audio as well (attention is quadratic in length, so per-second values depend on the
clip length, which is recorded).

Blocks of MR-HuBERT: ``cnn`` (the waveform CNN), ``encoders[i]``, ``downsample[i]``, ``middle``,
``upsample[i]``, ``decoders[i]``, ``other`` (LayerNorm and projection after the CNN, glue between blocks);
HuBERT: ``cnn``, ``encoder``, ``other``; any other upstream: ``model``. Sampling blocks are listed at the
resolution they produce; per-resolution totals add the blocks running at 20, 40 and 80 ms.

Weights: a registered name whose checkpoint is in the cache folder is profiled with it; otherwise with random
weights of the registered architecture (:mod:`upstream_mrhubert.architectures`), labelled
``"random-init (architecture of <name>)"``. Random weights do not change parameters or FLOPs; latency and memory
are the same up to noise.
"""

from downstream_probes.reports.profile.files import PROFILE_SCHEMA, ProfileError, read_profile, write_profile
from downstream_probes.reports.profile.measure import (
    CNN_BLOCK,
    DEFAULT_REFERENCE,
    FLOP_COUNTER_NOTE,
    OTHER_BLOCK,
    SAMPLE_RATE,
    Block,
    LiveTensorMemory,
    ProfiledModel,
    blocks_of,
    compare,
    conv_feature_layers,
    count_flops,
    count_parameters,
    flop_counter,
    forward_of,
    level_strides,
    measure_latencies_interleaved,
    measure_latency,
    measure_peak_memory,
    profile_clip,
    profile_model,
    profiled_from_architecture,
    profiled_from_checkpoint,
    profiled_upstream,
    run_profile,
)
from downstream_probes.reports.profile.render import profile_html, profile_markdown

__all__ = [
    "CNN_BLOCK",
    "DEFAULT_REFERENCE",
    "FLOP_COUNTER_NOTE",
    "OTHER_BLOCK",
    "PROFILE_SCHEMA",
    "SAMPLE_RATE",
    "Block",
    "LiveTensorMemory",
    "ProfileError",
    "ProfiledModel",
    "blocks_of",
    "compare",
    "conv_feature_layers",
    "count_flops",
    "count_parameters",
    "flop_counter",
    "forward_of",
    "level_strides",
    "measure_latencies_interleaved",
    "measure_latency",
    "measure_peak_memory",
    "profile_clip",
    "profile_html",
    "profile_markdown",
    "profile_model",
    "profiled_from_architecture",
    "profiled_from_checkpoint",
    "profiled_upstream",
    "read_profile",
    "run_profile",
    "write_profile",
]
