"""Imports follow the data flow (checkpoint -> model -> s3prl -> corpora/analysis -> reports): no module of ours
imports, directly or through others, a module that imports it back; module-level and function-level imports both
count (issue 23)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("upstream_mrhubert", "downstream_probes")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports anywhere in its body (``from pkg import module`` names the module)."""
    modules = _modules()

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(t for alias in node.names if (t := ours(alias.name)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    head = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*head, *([base] if base else [])])
                for alias in node.names:
                    target = ours(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules else ours(base)
                    if target:
                        targets.add(target)
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_model_package_never_imports_the_probes() -> None:
    graph = import_graph()
    assert {(m, t) for m, ts in graph.items() if m.startswith("upstream_mrhubert") for t in ts
            if t.startswith("downstream_probes")} == set()  # fmt: skip


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# The hops of the data flow, first to last; a module may import its own hop and earlier ones only. Modules not named
# take the rank of their nearest named package.
FLOW: dict[str, int] = {
    "upstream_mrhubert.errors": 0,
    "upstream_mrhubert.audio": 0,
    "upstream_mrhubert.atomic_io": 0,
    "upstream_mrhubert.checkpoints": 1,
    "upstream_mrhubert": 2,
    "upstream_mrhubert.pretraining": 3,
    "downstream_probes": 3,  # the neutral modules: task table, paths, the audio reader, data checks
    "downstream_probes.s3prl": 4,
    "downstream_probes.corpora": 5,
    "downstream_probes.analysis": 5,
    "downstream_probes.reports": 6,
    "downstream_probes.pipelines": 7,
    "downstream_probes.cli": 8,
}


def hop(module: str) -> int:
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        if ".".join(parts[:length]) in FLOW:
            return FLOW[".".join(parts[:length])]
    raise AssertionError(f"{module} is in no hop of FLOW")


def test_imports_follow_the_data_flow() -> None:
    against = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if hop(target) > hop(module)
    )
    assert against == []
