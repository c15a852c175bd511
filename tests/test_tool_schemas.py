"""The schemas tools/list publishes are pydantic's, compacted without loss: only generated
titles and ``"default": null`` are dropped (opsmcp.surface.tool_schemas), so they accept and
reject the same values, and what a model reads is smaller."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from helpers import make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema
from mcp import Client
from pydantic import TypeAdapter

from opsmcp.server import build_server
from opsmcp.surface.sdk_seams import registered_tool
from opsmcp.surface.tool_schemas import auto_title, compact

pytestmark = pytest.mark.anyio


def _every_tool(tmp_path: Any) -> Any:
    """A server with every toolset and every write tool (mode human adds get_approval)."""
    return build_server(make_settings("http://127.0.0.1:9", tmp_path, allow_writes=True, write_approval="human",
                                      prometheus_url="http://127.0.0.1:9", alertmanager_url="http://127.0.0.1:9"))


def _derived(server: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What pydantic derives for tool ``name``: its input schema (the strict argument model's)
    and its output schema (the result class's), before compaction."""
    tool = registered_tool(server, name)
    returns = tool.fn.__annotations__["return"]
    return (tool.fn_metadata.arg_model.model_json_schema(by_alias=True),
            TypeAdapter(returns).json_schema())


def _only_dropped(derived: Any, published: Any, where: str) -> None:
    """``published`` is ``derived`` less generated titles and null defaults, nothing else."""
    if isinstance(derived, list):
        assert isinstance(published, list) and len(published) == len(derived), where
        for i, (d, p) in enumerate(zip(derived, published, strict=True)):
            _only_dropped(d, p, f"{where}[{i}]")
        return
    if not isinstance(derived, dict):
        assert published == derived, where
        return
    assert isinstance(published, dict), where
    for key, value in derived.items():
        if key not in published:
            assert key in ("title", "default"), f"{where}: {key} was dropped"
            assert value is None or key == "title", f"{where}: a non-null default was dropped"
            continue
        if key in ("properties", "$defs"):
            assert set(published[key]) == set(value), f"{where}.{key}"
            for name, sub in value.items():
                if "title" in sub and "title" not in published[key][name]:
                    assert sub["title"] in (auto_title(name), name), f"{where}.{key}.{name}: a title was dropped"
                _only_dropped(sub, published[key][name], f"{where}.{key}.{name}")
        else:
            _only_dropped(value, published[key], f"{where}.{key}")
    assert set(published) <= set(derived), f"{where}: keys added {set(published) - set(derived)}"


def _generated_titles(node: Any) -> list[str]:
    """The generated titles left anywhere in schema ``node``."""
    if isinstance(node, list):
        return [t for item in node for t in _generated_titles(item)]
    if not isinstance(node, dict):
        return []
    found = []
    for key in ("properties", "$defs"):
        for name, sub in (node.get(key) or {}).items():
            if isinstance(sub, dict) and sub.get("title") in (auto_title(name), name):
                found.append(name)
    return found + [t for value in node.values() for t in _generated_titles(value)]


def test_compact_drops_generated_titles_and_null_defaults_only():
    schema = {"title": "fArguments", "type": "object", "properties": {
        "max_points": {"title": "Max Points", "type": "integer", "default": 120, "description": "Most points."},
        "start": {"title": "Start", "anyOf": [{"type": "string", "maxLength": 64}, {"type": "null"}],
                  "default": None},
        "mode": {"title": "How it runs", "enum": ["a", "b"]}},
        "$defs": {"Point": {"title": "Point", "type": "object", "properties": {"t": {"title": "T", "type": "string"}}}}}
    assert compact(schema, root_title="fArguments") == {"type": "object", "properties": {
        "max_points": {"type": "integer", "default": 120, "description": "Most points."},
        "start": {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "null"}]},
        "mode": {"title": "How it runs", "enum": ["a", "b"]}},
        "$defs": {"Point": {"type": "object", "properties": {"t": {"type": "string"}}}}}
    assert schema["properties"]["start"]["default"] is None  # the argument is not changed


async def test_every_published_schema_is_the_derived_one_less_titles_and_null_defaults(tmp_path):
    server, runtime = _every_tool(tmp_path)
    async with Client(server) as client:
        listed = (await client.list_tools()).tools
    assert len(listed) == len(runtime.tools) >= 20
    for tool in listed:
        derived_in, derived_out = _derived(server, tool.name)
        _only_dropped(derived_in, tool.input_schema, f"{tool.name} input")
        _only_dropped(derived_out, tool.output_schema, f"{tool.name} output")
        assert '"default": null' not in json.dumps([tool.input_schema, tool.output_schema]), tool.name
        assert not _generated_titles(tool.input_schema) and not _generated_titles(tool.output_schema), tool.name
        assert tool.input_schema["additionalProperties"] is False, tool.name


@pytest.mark.parametrize("direction", ["derived values fit the published schema", "published values fit pydantic's"])
def test_input_schemas_accept_the_same_values(tmp_path, direction):
    """Values hypothesis draws from one schema validate against the other (jsonschema)."""
    server, runtime = _every_tool(tmp_path)
    for name in sorted(runtime.tools):
        derived = _derived(server, name)[0]
        published = registered_tool(server, name).parameters
        source, target = (derived, published) if direction.startswith("derived") else (published, derived)

        _fits(source, target)()


def _fits(source: dict[str, Any], target: dict[str, Any]) -> Any:
    """A hypothesis test: values drawn from schema ``source`` are valid under ``target``."""

    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @given(value=from_schema(source))
    def fits(value: Any) -> None:
        jsonschema.validate(value, target)

    return fits


#: The budget of what a client hands its model every turn for the sandbox's tools with writes
#: off: name + description + compact input schema, summed (scripts/measure_text_size.py).
DEFINITIONS_BUDGET = 10_000


async def test_the_sandbox_tool_definitions_stay_within_their_budget(tmp_path):
    """Regression: the definitions grew from 13,041 to 15,131 characters in one round of new
    fields and tools without anyone noticing; docs/performance.md has the figures."""
    server, _ = build_server(make_settings("http://127.0.0.1:9", tmp_path, prometheus_url=None,
                                           alertmanager_url=None, alerts_table=None))
    async with Client(server) as client:
        tools = (await client.list_tools()).tools
    sizes = {t.name: len(t.name) + len(t.description or "") + len(json.dumps(
        t.input_schema, separators=(",", ":"), ensure_ascii=False)) for t in tools}
    assert sum(sizes.values()) <= DEFINITIONS_BUDGET, (
        f"tool definitions are {sum(sizes.values()):,} characters (budget {DEFINITIONS_BUDGET:,}): shorten "
        f"descriptions, keeping units, bounds and examples; per tool: {sizes}")


async def test_a_docstrings_sections_stay_out_of_the_tool_description(tmp_path):
    from opsmcp.toolsets.queues import QueueTools

    assert "Raises:" in (QueueTools.list_queues.__doc__ or "")
    server, _ = build_server(make_settings("http://127.0.0.1:9", tmp_path))
    async with Client(server) as client:
        described = {t.name: t.description for t in (await client.list_tools()).tools}
    assert described["list_queues"].startswith("SQS queues") and "Raises" not in described["list_queues"]
    assert "InvalidInput" not in described["list_queues"]


# ------------------------------------------------------------------ output schemas kept between starts


def _start(tmp_path: Any, seen: dict[str, Any], monkeypatch: Any) -> tuple[Any, Any]:
    """Build a server with every tool on data dir ``tmp_path``, recording in ``seen`` what
    the schema cache answered per tool."""
    from opsmcp.surface import tool_schemas

    original = tool_schemas.OutputSchemas.get

    def get(self: Any, tool: str, returns: type) -> Any:
        seen[tool] = original(self, tool, returns)
        return seen[tool]

    monkeypatch.setattr(tool_schemas.OutputSchemas, "get", get)
    return _every_tool(tmp_path)


async def _listed(server: Any) -> list[dict[str, Any]]:
    async with Client(server) as client:
        return [t.model_dump(mode="json", by_alias=True, exclude_none=True)
                for t in (await client.list_tools()).tools]


async def test_a_second_start_publishes_the_same_schemas_without_deriving_them(tmp_path, monkeypatch):
    first_seen: dict[str, Any] = {}
    first, _ = _start(tmp_path, first_seen, monkeypatch)
    assert first_seen and all(v is None for v in first_seen.values())  # nothing cached yet: derived
    files = list((tmp_path / "cache").glob("tool-schemas-*.json"))
    assert len(files) == 1 and oct(files[0].stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"
    second_seen: dict[str, Any] = {}
    second, runtime = _start(tmp_path, second_seen, monkeypatch)
    assert set(second_seen) == set(first_seen) and all(v is not None for v in second_seen.values())
    assert await _listed(second) == await _listed(first)
    for name in runtime.tools:  # results are still validated against the result class, as the SDK does
        tool = registered_tool(second, name)
        assert tool.fn_metadata.output_model is tool.fn.__annotations__["return"], name
    async with Client(second) as client:
        result = await client.call_tool("list_playbooks", {})
    assert not result.is_error and result.structured_content["playbooks"]


async def test_other_code_or_libraries_or_a_corrupt_file_are_a_miss(tmp_path, monkeypatch):
    from opsmcp.surface import tool_schemas

    first, _ = _start(tmp_path, {}, monkeypatch)
    expected = await _listed(first)
    monkeypatch.setattr(tool_schemas, "fingerprint", lambda: "0" * 32)  # an edited module, another pydantic...
    seen: dict[str, Any] = {}
    other, _ = _start(tmp_path, seen, monkeypatch)
    assert all(v is None for v in seen.values()) and await _listed(other) == expected
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"tool-schemas-{'0' * 32}.json"]  # one file kept
    cache = tmp_path / "cache" / f"tool-schemas-{'0' * 32}.json"
    for corrupt in ("{not json", "[1, 2]", json.dumps({"get_order": {"returns": "elsewhere.Order", "schema": {}}})):
        cache.write_text(corrupt)
        seen = {}
        again, _ = _start(tmp_path, seen, monkeypatch)
        assert all(v is None for v in seen.values()) and await _listed(again) == expected
        assert json.loads(cache.read_text())["get_order"]["returns"] == "opsmcp.toolsets.orders.Order"


def test_a_cache_that_cannot_be_written_does_not_stop_the_server(tmp_path):
    (tmp_path / "cache").write_text("a file where the directory would be")
    _server, runtime = _every_tool(tmp_path)
    assert len(runtime.tools) >= 20


def test_the_fingerprint_follows_module_text_not_file_times(tmp_path, monkeypatch):
    """A wheel built reproducibly gives every file the same time: an edit of the same length
    (a bound 5 -> 6 in a description) must still change the cache's name."""
    import os

    import opsmcp
    from opsmcp.surface.tool_schemas import fingerprint

    package = tmp_path / "opsmcp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "results.py"
    module.write_text('X = Field(description="at most 5")\n')
    os.utime(module, (1_000_000, 1_000_000))
    monkeypatch.setattr(opsmcp, "__file__", str(package / "__init__.py"))
    before = fingerprint()
    assert fingerprint() == before
    module.write_text('X = Field(description="at most 6")\n')
    os.utime(module, (1_000_000, 1_000_000))
    assert fingerprint() != before
