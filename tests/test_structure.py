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


# ----------------------------------------------------------------- the wiring rule ---

#: Where ``runtime.toolsets`` (the toolset instances) may be read: the composition root, which
#: builds them and registers their tools through the choke point, and the Runtime itself.
TOOLSETS_READERS = {"opsmcp.server", "opsmcp.calls.runtime"}


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` of a Name/Attribute chain ("?" for anything else in it)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def toolsets_reads(source: str) -> list[str]:
    """Every read of a runtime's ``toolsets`` in ``source`` (``x.toolsets`` or
    ``getattr(x, "toolsets")``), as ``line: expression``. ``settings.toolsets`` (the names
    in the settings) and ``args.toolsets`` (the command line's) are not toolsets."""
    def names_toolsets(base: str) -> bool:
        return base.rpartition(".")[2] == "settings" or base == "args"

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr == "toolsets" and not names_toolsets(_dotted(node.value)):
            found.append(f"{node.lineno}: {_dotted(node.value)}.toolsets")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value == "toolsets"
              and not names_toolsets(_dotted(node.args[0]))):
            found.append(f"{node.lineno}: getattr({_dotted(node.args[0])}, 'toolsets')")
    return found


def test_only_the_composition_root_reads_the_toolsets():
    """The wiring rule: events, resources, webhooks, completions, the console and the command
    line read what the runtime exposes (``runtime.queues``, ``.alerts``, ``.catalog``,
    ``.metrics``, ``.enabled``), never a toolset's attributes or its tool methods past the
    choke point."""
    reads = {name: toolsets_reads(path.read_text(encoding="utf-8")) for name, path in modules().items()
             if name not in TOOLSETS_READERS}
    assert {name: found for name, found in reads.items() if found} == {}


@pytest.mark.parametrize("source,flagged", [
    ('await runtime.toolsets["queues"].list_queues(limit=1000)', True),
    ('tools = self.runtime.toolsets.get("metrics")', True),
    ('found = getattr(runtime, "toolsets")', True),
    ('if "logs" in runtime.toolsets: pass', True),
    ('if "logs" in settings.toolsets: pass', False),
    ('names = self.settings.toolsets + args.toolsets', False),
    ('if "queues" in runtime.enabled: pass', False),
    ('if getattr(args, "toolsets", None): pass', False),
])
def test_the_toolsets_check_sees_a_read(source, flagged):
    assert bool(toolsets_reads(source)) is flagged


# ----------------------------------------------------------------- tests share helpers ---

TESTS = Path(__file__).resolve().parent
AGENT_TESTS = TESTS.parent / "agents" / "tests"


def test_module_imports(source: str) -> list[str]:
    """Test modules and conftest that ``source`` imports (``test_x``, ``conftest``,
    ``tests.test_x``...), as ``line: module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.ImportFrom):  # from . import test_x / from .conftest import y
            names = [node.module] if node.module else [a.name for a in node.names]
        for name in names:
            last = name.rpartition(".")[2]
            if name.split(".")[0] in ("tests", "conftest") or last == "conftest" or last.startswith("test_"):
                found.append(f"{node.lineno}: {name}")
    return found


test_module_imports.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def test_no_test_module_imports_another_test_module_or_conftest():
    """Shared helpers live in ``helpers.py`` (functions, constants) and fixtures in
    ``conftest.py``, which pytest loads itself: no test module imports another one (or
    conftest), so one test module's refactor never breaks another's collection."""
    files = [p for root in (TESTS, AGENT_TESTS) for p in sorted(root.rglob("*.py"))
             if "node_modules" not in p.parts]
    assert len(files) > 50
    found = {str(p.relative_to(TESTS.parent)): hits for p in files
             if (hits := test_module_imports(p.read_text(encoding="utf-8")))}
    assert found == {}


@pytest.mark.parametrize("source,flagged", [
    ("from test_console import console_server", True),
    ("from test_http_auth import mcp_session", True),
    ("import test_live_page", True),
    ("from conftest import browser", True),
    ("from tests.test_events import x", True),
    ("from helpers import console_server, team_tokens", False),
    ("import moto_process", False),
])
def test_the_test_import_check_sees_an_import(source, flagged):
    assert bool(test_module_imports(source)) is flagged
