"""Upstreams from other packages: the ``s3prl.upstreams`` entry-point group, registered into ``s3prl.hub``.

s3prl resolves ``-u NAME`` (and ``S3PRLUpstream(NAME)``, and the ``-h`` listing) with ``getattr(s3prl.hub, NAME)``;
its hub star-imports a fixed list of modules, so there is no plugin mechanism. Any installed distribution can declare

    [options.entry_points]
    s3prl.upstreams =
        my_model = my_package.hub:my_model

and ``register_entry_point_upstreams()`` sets ``s3prl.hub.my_model`` to a callable that imports ``my_package.hub``
on first use (a broken plugin only fails when it is asked for). The same name from two distributions, or a name s3prl
already defines, is refused with one error naming both sources.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from upstream_mrhubert.errors import MrsuperbError, UsageError

ENTRY_POINT_GROUP = "s3prl.upstreams"
_PLUGIN_ATTRIBUTE = "__mrsuperb_upstream_plugin__"


class UpstreamNameCollisionError(MrsuperbError, ValueError):
    """Two sources provide the same upstream name."""


@dataclass(frozen=True)
class UpstreamPlugin:
    """One upstream declared through the entry-point group."""

    name: str
    distribution: str
    target: str  # "module:attribute"

    def load(self) -> Callable:
        """Import the providing module and return the upstream factory."""
        return metadata.EntryPoint(name=self.name, value=self.target, group=ENTRY_POINT_GROUP).load()

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    def describe(self) -> str:
        return f"distribution {self.distribution!r} ({self.target})"


def _distribution_name(entry_point: metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return dist.metadata["Name"] if dist is not None else "<unknown distribution>"


def discover_upstream_plugins(entry_points: Iterable[metadata.EntryPoint] | None = None) -> dict[str, UpstreamPlugin]:
    """Every upstream of the ``s3prl.upstreams`` group, by name.

    The same name declared twice with different targets (two distributions, or one distribution twice) raises
    ``UpstreamNameCollisionError`` naming both.
    """
    if entry_points is None:
        entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    plugins: dict[str, UpstreamPlugin] = {}
    for entry_point in entry_points:
        plugin = UpstreamPlugin(entry_point.name, _distribution_name(entry_point), entry_point.value)
        previous = plugins.get(plugin.name)
        if previous is not None and previous != plugin:
            raise UpstreamNameCollisionError(
                f"upstream name {plugin.name!r} is declared twice in entry-point group {ENTRY_POINT_GROUP!r}: "
                f"by {previous.describe()} and by {plugin.describe()}; uninstall one of them or rename its entry point"
            )
        plugins[plugin.name] = plugin
    return dict(sorted(plugins.items()))


def _lazy_factory(plugin: UpstreamPlugin) -> Callable:
    def factory(*args, **kwargs):
        return plugin.load()(*args, **kwargs)

    factory.__name__ = factory.__qualname__ = plugin.name
    factory.__doc__ = f"Upstream {plugin.name!r} from {plugin.describe()}."
    setattr(factory, _PLUGIN_ATTRIBUTE, plugin)
    return factory


def plugin_of(obj: object) -> UpstreamPlugin | None:
    """The plugin behind an attribute of ``s3prl.hub``, or None for s3prl's own upstreams."""
    return getattr(obj, _PLUGIN_ATTRIBUTE, None)


def register_entry_point_upstreams(
    hub_module: types.ModuleType | None = None, plugins: dict[str, UpstreamPlugin] | None = None
) -> dict[str, UpstreamPlugin]:
    """Make every entry-point upstream resolvable as ``getattr(s3prl.hub, name)``; returns what was registered.

    Idempotent. Applies the compatibility fixes first when it imports ``s3prl.hub`` itself (the import fails
    without them).
    """
    if hub_module is None:
        # here, not at the top: compat imports torch, and this module is on `mrsuperb -h`'s path (`upstreams`)
        from downstream_probes.s3prl import compat

        compat.apply()
        hub_module = importlib.import_module("s3prl.hub")
    if plugins is None:
        plugins = discover_upstream_plugins()
    for name, plugin in plugins.items():
        existing = getattr(hub_module, name, None)
        if existing is not None:
            existing_plugin = plugin_of(existing)
            if existing_plugin == plugin:
                continue
            source = existing_plugin.describe() if existing_plugin else f"s3prl itself ({hub_module.__name__}.{name})"
            raise UpstreamNameCollisionError(
                f"upstream name {name!r} from {plugin.describe()} collides with {source}; "
                f"rename the entry point in group {ENTRY_POINT_GROUP!r}"
            )
    for name, plugin in plugins.items():
        if getattr(hub_module, name, None) is None:
            setattr(hub_module, name, _lazy_factory(plugin))
    return plugins


def build_hub_upstream(name: str, ckpt: str | None = None, model_config: str | None = None):
    """Build upstream ``name`` the way ``run_downstream.py -u NAME`` does: through s3prl's hub, with the
    compatibility fixes applied and every entry-point upstream registered."""
    register_entry_point_upstreams()
    from s3prl import hub

    factory = getattr(hub, name, None)
    if factory is None:
        raise UsageError(f"unknown upstream {name!r}: see `mrsuperb upstreams` (or s3prl's own names)")
    return factory(ckpt=ckpt, model_config=model_config, refresh=False)


def real_upstreams(hub_module: Any) -> dict[str, Any]:
    """The upstream functions of s3prl's hub: s3prl's own (defined in its ``*.hubconf`` modules) and the entry-point
    upstreams registered on it; not the modules, classes and helpers ``s3prl.hub`` happens to import."""
    found = {}
    for name in dir(hub_module):
        value = getattr(hub_module, name)
        if name.startswith("_") or not callable(value) or isinstance(value, type):
            continue
        if plugin_of(value) is not None or getattr(value, "__module__", "").endswith(".hubconf"):
            found[name] = value
    return found
