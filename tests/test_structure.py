"""The package's shape holds: layers import only downwards, and no modules import each other
in a loop.

Layers, top to bottom (``src/opsmcp/__init__.py`` and ``docs/architecture.md`` draw them):
the command line; the composition root (``server``); the HTTP transports; the MCP surface
beyond tools; the call pipeline; the toolsets; the domain logic (``analysis``); the
adapters to external systems (``backends``, ``sandbox``); the ground (settings, errors,
times, telemetry, logging, tracing, results and their size budget, the catalog). Every import
counts: module level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "opsmcp"
LAYERS: list[tuple[str, ...]] = [
    ("opsmcp.cli",),
    ("opsmcp.server",),
    ("opsmcp.transport",),
    ("opsmcp.surface",),
    ("opsmcp.calls",),
    ("opsmcp.toolsets",),
    ("opsmcp.analysis",),
    ("opsmcp.backends", "opsmcp.sandbox"),
    ("opsmcp.config", "opsmcp.errors", "opsmcp.times", "opsmcp.telemetry", "opsmcp.results", "opsmcp.result_size",
     "opsmcp.logsetup", "opsmcp.tracing", "opsmcp.catalog", "opsmcp.private", "opsmcp"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The opsmcp modules ``path`` imports (resolved to modules that exist)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import sub" imports the submodule; "from mod import name" the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target.startswith("opsmcp") and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = name == prefix or name.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best[0]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def test_every_module_is_in_a_layer():
    for name in modules():
        layer_of(name)


def test_no_module_imports_a_higher_layer():
    upward = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                    for a, deps in graph().items() for b in deps
                    if layer_of(b) < layer_of(a) and b != "opsmcp")
    assert upward == []


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_loops():
    g = {a: {b for b in deps if b != "opsmcp"} for a, deps in graph().items()}
    assert strongly_connected(g) == []


@pytest.mark.parametrize("g,loops", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_loop_finder_finds_loops(g, loops):
    assert strongly_connected(g) == loops


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """A toolset importing the server is caught (the check can fail)."""
    fake = tmp_path / "x.py"
    fake.write_text("from opsmcp.server import build_server\n")
    assert "opsmcp.server" in imports_of(fake, "opsmcp.toolsets.x", set(modules()))
    assert layer_of("opsmcp.server") < layer_of("opsmcp.toolsets.queues")
