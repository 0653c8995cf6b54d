"""What a shared sweep trains, decided before anything is built: the heads (one per layer, the weighted sum, or given
ones), the passes they are trained in, and the ``run_downstream.py`` command line each head's separate run would
have (which the head is built from, and which ``mrsuperb superb``'s cells record). The training loop is in
:mod:`downstream_probes.s3prl.shared_sweep`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from upstream_mrhubert.errors import UsageError

WEIGHTED_SUM = "weighted_sum"


@dataclass(frozen=True)
class HeadSpec:
    """One probe of the sweep: its folder name and the layer it reads (None: the weighted sum).

    ``folder`` (default ``<sweep_dir>/<name>``) and ``override`` (s3prl overrides added to the sweep's, e.g. the
    head's learning rate) let heads of one seed that differ in their downstream settings share the upstream forward
    (``mrsuperb superb --shared``: one head per learning rate, each in its grid cell's folder).
    """

    name: str
    layer: str | None
    folder: Path | None = None
    override: str | None = None

    def expdir(self, sweep_dir: Path | str) -> Path:
        """The head's experiment folder."""
        return self.folder if self.folder is not None else Path(sweep_dir) / self.name


@dataclass
class SharedSweepOptions:
    """What ``mrsuperb probe-sweep --shared`` was asked for (see ``downstream_probes.cli.probe_sweep``)."""

    upstream: str
    task: str
    sweep_dir: Path
    upstream_ckpt: str | None = None
    model_config: str | None = None
    config: str | None = None
    override: str | None = None
    layers: Sequence[str] | None = None
    with_weighted_sum: bool = False
    evaluate: bool = True
    device: str | None = None
    max_heads_per_pass: int | None = None
    resume: bool = False
    cache_features: Path | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)
    heads: Sequence[HeadSpec] | None = None  # explicit heads instead of layers/with_weighted_sum


def plan_passes(specs: Sequence[HeadSpec], max_heads_per_pass: int | None) -> list[list[HeadSpec]]:
    """Heads in passes of at most ``max_heads_per_pass`` (None: one pass), in sweep order."""
    if max_heads_per_pass is not None and max_heads_per_pass < 1:
        raise UsageError(f"--max-heads-per-pass {max_heads_per_pass}: give at least 1")
    size = max_heads_per_pass or max(1, len(specs))
    return [list(specs[start : start + size]) for start in range(0, len(specs), size)]


def describe_plan(passes: Sequence[Sequence[HeadSpec]]) -> str:
    heads = sum(len(group) for group in passes)
    lines = [f"shared sweep plan: {heads} heads in {len(passes)} pass(es), one upstream forward per batch per pass"]
    for index, group in enumerate(passes):
        lines.append(f"  pass {index}: {', '.join(spec.name for spec in group)}")
    return "\n".join(lines)


def head_argv(options: SharedSweepOptions, spec: HeadSpec) -> list[str]:
    """``run_downstream.py -m train`` arguments of the head's separate run."""
    argv = ["-m", "train", "-u", options.upstream, "-d", options.task]
    if options.upstream_ckpt:
        argv += ["-k", str(options.upstream_ckpt)]
    if options.model_config:
        argv += ["-g", str(options.model_config)]
    if options.config:
        argv += ["-c", str(options.config)]
    if spec.layer is not None:
        argv += ["-l", spec.layer]
    argv += ["-p", str(spec.expdir(options.sweep_dir))]
    override = ",,".join(part for part in (options.override, spec.override) if part)
    if override:
        argv += ["-o", override]
    if options.device:
        argv += ["--device", options.device]
    return [*argv, *options.extra_args]


def resolve_heads(all_layers: Sequence[str], layers: Sequence[str] | None, with_weighted_sum: bool) -> list[HeadSpec]:
    """The heads to train: the named layers (None or ``["all"]``: every layer), then the weighted sum if asked."""
    chosen = list(all_layers) if not layers or list(layers) == ["all"] else list(layers)
    unknown = [name for name in chosen if name not in all_layers]
    if unknown:
        raise UsageError(f"--layers: the upstream has no layer(s) {unknown}; its layers: {list(all_layers)}")
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"--layers {','.join(chosen)}: a layer is named twice")
    specs = [HeadSpec(name, name) for name in chosen]
    if with_weighted_sum:
        specs.append(HeadSpec(WEIGHTED_SUM, None))
    return specs
