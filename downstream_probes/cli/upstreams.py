"""``mrsuperb upstreams``: every upstream of the ``s3prl.upstreams`` entry-point group, who provides it and
whether its checkpoint is on this machine."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

from downstream_probes.s3prl.plugins import UpstreamPlugin, discover_upstream_plugins

HELP = "list upstreams from the s3prl.upstreams entry points (name, package, checkpoint availability)"


@dataclass(frozen=True)
class UpstreamRow:
    name: str
    package: str
    target: str
    checkpoint: str  # "cached", "download", "local (-k PATH)", "unknown"
    detail: str  # cached path, URL, or a hint


def checkpoint_status(plugin: UpstreamPlugin) -> tuple[str, str]:
    """Where the checkpoint of one of our upstreams stands; other packages' upstreams are "unknown"."""
    if not plugin.module.startswith("upstream_mrhubert"):
        return "unknown", f"provided by {plugin.distribution}; see its documentation"
    from upstream_mrhubert.checkpoints import registry
    from upstream_mrhubert.checkpoints.download import checkpoint_dir

    if plugin.name in registry.LOCAL_UPSTREAMS:
        return "local (-k PATH)", "pass a fairseq or s3prl-converted checkpoint with -k"
    release = registry.CHECKPOINTS_BY_NAME.get(plugin.name)
    if release is None:
        return "unknown", "not in upstream_mrhubert.checkpoints.registry"
    cached = checkpoint_dir() / release.filename
    if cached.is_file():
        return "cached", str(cached)
    return "download", release.url


def upstream_rows() -> list[UpstreamRow]:
    rows = []
    for plugin in discover_upstream_plugins().values():
        status, detail = checkpoint_status(plugin)
        rows.append(UpstreamRow(plugin.name, plugin.distribution, plugin.target, status, detail))
    return rows


def format_table(rows: list[UpstreamRow]) -> str:
    header = ("NAME", "PACKAGE", "CHECKPOINT", "WHERE")
    lines = [header] + [(r.name, r.package, r.checkpoint, r.detail) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(line)) for line in lines
    )


def run(args: argparse.Namespace) -> int:
    rows = upstream_rows()
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
    else:
        print(format_table(rows))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
