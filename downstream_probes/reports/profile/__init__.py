"""Efficiency profile of upstreams (``mrsuperb profile``): parameters, FLOPs, CPU latency and peak memory, per block
and per resolution. The blocks: :mod:`.blocks`; what is measured and how: :mod:`.measure`; profiling upstreams by name and comparing them:
:mod:`.profiles`; ``profile.json``: :mod:`.files`; the tables:
:mod:`.render`. This package re-exports their public names."""

from downstream_probes.reports.profile.blocks import (
    CNN_BLOCK,
    OTHER_BLOCK,
    Block,
    blocks_of,
    conv_feature_layers,
    level_strides,
)
from downstream_probes.reports.profile.files import PROFILE_SCHEMA, ProfileError, read_profile, write_profile
from downstream_probes.reports.profile.measure import (
    FLOP_COUNTER_NOTE,
    LiveTensorMemory,
    count_flops,
    count_parameters,
    flop_counter,
    measure_latencies_interleaved,
    measure_latency,
    measure_peak_memory,
)
from downstream_probes.reports.profile.profiles import (
    DEFAULT_REFERENCE,
    ProfiledModel,
    compare,
    forward_of,
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
