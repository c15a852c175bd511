"""Fuzzing: no argument reaches the internal-error path, no request gets a 5xx.

Three drills, all on loopback against a real moto server seeded with the sandbox scenario
(queues, DLQs, orders) and a log store holding the scenario's lines:

* **schema fuzzing**: for every registered tool, hypothesis-jsonschema draws arguments from
  the tool's own input schema (as ``tools/list`` publishes it) and calls the tool through
  ``mcp.Client`` in memory, on a server with writes enabled;
* **hostile values**: every string argument of every tool gets 1 MB strings, lone
  surrogates, control characters, extreme numbers and dates, FTS5 and PromQL syntax, path
  traversal, shell and Jinja syntax; every number argument gets 2^63 and friends; RSS growth
  over repeated 1 MB rounds is bounded; no shell syntax ever runs (a marker file);
* **malformed JSON-RPC** over streamable HTTP to a real ``opsmcp serve --transport http``:
  no 5xx, and the server still answers a well-formed session afterwards.

A call passes when it returns a result, or a tool error that is not the choke point's
"Internal error in <tool>" branch (nor the approval step's "Internal error while
previewing"). A validation error from the SDK is a pass: the schema said no.

Sizes: ``OPSMCP_FUZZ_EXAMPLES`` hypothesis examples per tool (default 20: a few hundred
calls in CI), ``OPSMCP_FUZZ_HOSTILE=all`` for the full hostile set (default: a core
subset), ``OPSMCP_FUZZ_RSS_ROUNDS`` rounds of 1 MB arguments per tool (default 6). The
benchmark run (docs/reliability.md) uses 300 examples, the full set and 16 rounds.

Every internal-error result fails the test (the earlier findings are fixed; see
docs/reliability.md), and so does RSS growth past the limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema

EXAMPLES = int(os.environ.get("OPSMCP_FUZZ_EXAMPLES", "20"))
FULL_HOSTILE = os.environ.get("OPSMCP_FUZZ_HOSTILE", "") == "all"
CALL_TIMEOUT = 60.0  # seconds; a call that takes longer is a hang (a finding)
INTERNAL = ("Internal error in", "Internal error while previewing")
OPSMCP = str(Path(sys.executable).parent / "opsmcp")

#: The tools this test knows valid base arguments for (BASE_ARGS). Any other registered tool
#: (another toolset's new one) is fuzzed too, under the parameter OTHER, with base arguments
#: derived from its schema (see _base_args); add it here for a test of its own.
OTHER = "other-registered-tools"
TOOLS = [
    "analyze_dlq", "find_orders", "get_order", "get_trace", "list_metrics", "list_playbooks", "list_queues",
    "log_stats", "peek_messages", "query_metrics", "redrive_dlq", "run_playbook", "search_logs",
]

# ------------------------------------------------------------------------------------ hostile values

MB = 1_000_000
MARKER_NAME = "opsmcp-fuzz-marker"


def hostile_strings(marker: Path) -> list[str]:
    """The hostile strings; the shell ones would create ``marker`` if anything ran them."""
    core = [
        "x" * MB,  # 1 MB
        "\ud800",  # lone surrogate (high)
        "a\udfffb",  # lone surrogate (low) inside text
        "\x00",
        "-99999999999999999999d",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "9223372036854775808",
        '"unterminated',  # FTS5
        "NEAR(a b, -1) AND OR NOT *",  # FTS5
        'rate(x[5m]) / on() group_left sum by (le) ({__name__=~".+"})',  # PromQL
        "../../../../etc/passwd",
        f"$(touch {marker})",
        f"`touch {marker}`",
        "{{ lookup('pipe', 'id') }}",
        "",
    ]
    more = [
        "\x00" * 64,
        "\r\n\t\x1b[31m\x7f",
        "\u202e\u200b" + "e\u0301" * 10_000,
        "🙂" * 1_000,
        "   ",
        "-9223372036854775808s",
        "1e309",
        "NaN",
        "now-99999999w",
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-23:59",
        "col:value",
        "^x",
        "(((",
        "message:*",
        '"a" NEAR/2 "b"',
        "up offset -1y @ end()",
        '{__name__=~".+"}[100000y]',
        "/tmp/../../etc/shadow",
        "..\\..\\windows\\system32",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        "https://sqs.us-east-1.amazonaws.com/000000000000/other-account-queue",
        f"; touch {marker}",
        f"| touch {marker}",
        f"&& touch {marker}",
        f"x\ntouch {marker}",
        f"'; touch {marker}; '",
        "' OR 1=1 --",
        '{"$ne": null}',
        "{% for x in range(10**9) %}{% endfor %}",
        "@/etc/passwd",
        "q" * 81,
        "q" * 257,
    ]
    return core + more if FULL_HOSTILE else core


HOSTILE_INTEGERS: list[Any] = [2**63, -(2**63) - 1, 2**64, 10**100, -1, 0, 1e308, -1e308, 0.5]

#: Valid arguments (from the seeded scenario) that every hostile value is added to.
#: Filled in by the fixture for the scenario-dependent ones.
BASE_ARGS: dict[str, dict[str, Any]] = {
    "analyze_dlq": {"queue": "order-cancellation-queue-dlq", "max_messages": 20},
    "find_orders": {"status": "PENDING"},
    "get_order": {"order_id": "<order>"},
    "get_trace": {"trace_id": "<trace>"},
    "list_metrics": {},
    "list_playbooks": {},
    "list_queues": {},
    "log_stats": {},
    "peek_messages": {"queue": "notification-queue", "max_messages": 1},
    "query_metrics": {"namespace": "OpsMCP/Services", "metric_name": "ErrorCount"},
    "redrive_dlq": {"queue": "order-cancellation-queue-dlq"},  # a dry run
    "run_playbook": {"name": "collect_diagnostics"},  # check mode
    "search_logs": {},
}


def _encodable(arguments: dict[str, Any]) -> bool:
    """Whether JSON (UTF-8) can carry ``arguments``: false for lone surrogates."""
    try:
        json.dumps(arguments, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _types(prop: dict[str, Any]) -> set[str]:
    """The JSON types one property accepts (``anyOf`` flattened)."""
    options = prop.get("anyOf", [prop])
    return {o.get("type", "") for o in options}


# ------------------------------------------------------------------------------------ the server


def _rss() -> int:
    """This process's RSS after a full collection and ``malloc_trim`` (glibc hands freed heap
    back to the OS), so freed 1 MB buffers do not count as growth and kept ones do."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: RSS includes freed heap
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(psutil.Process().memory_info().rss)


@pytest.fixture(scope="module")
def moto_child() -> Iterator[str]:
    """A moto server in its own process (so its memory is not in this process's RSS)."""
    from moto_process import MotoProcess

    moto = MotoProcess().start()
    try:
        yield moto.endpoint
    finally:
        moto.stop()


@pytest.fixture(scope="module")
def fuzz(moto_child: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[types.SimpleNamespace]:
    """A seeded moto server (its own process) and an in-memory client of a writes-enabled
    server with every toolset, driven from sync tests through an anyio blocking portal
    (hypothesis's ``given`` does not run async tests)."""
    from anyio.from_thread import start_blocking_portal
    from helpers import make_settings
    from mcp import Client

    from opsmcp.sandbox.logseed import seed_logs
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws
    from opsmcp.server import build_server

    tmp = tmp_path_factory.mktemp("fuzz")
    settings = make_settings(moto_child, tmp, allow_writes=True, playbook_timeout_seconds=60)
    scenario = build_scenario()
    seed_aws(settings, scenario, metrics=False)
    seed_logs(settings.log_store_path, scenario)
    BASE_ARGS["get_order"]["order_id"] = scenario.orders[0]["orderId"]
    BASE_ARGS["get_trace"]["trace_id"] = next(iter(scenario.failing_traces))
    server, runtime = build_server(settings)

    counted = {"calls": 0}

    async def call(name: str, arguments: dict[str, Any]) -> tuple[bool, str]:
        import anyio

        counted["calls"] += 1
        from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError

        with anyio.fail_after(CALL_TIMEOUT):
            if _encodable(arguments):
                result = await client.call_tool(name, arguments)
            else:
                # The SDK client cannot encode a lone surrogate, and the stdio and HTTP
                # transports refuse one as invalid JSON: only an in-process caller gets it to a
                # tool. Call the server directly (validation and the choke point still run).
                try:
                    result = await server.call_tool(name, arguments)
                except ToolError as exc:
                    return True, str(exc)
                except UnexpectedToolError as exc:
                    return True, f"Internal error in {name} (outside the choke point): {exc.__cause__!r}"
        return bool(result.is_error), " ".join(getattr(c, "text", "") for c in result.content)

    with start_blocking_portal() as portal, portal.wrap_async_context_manager(Client(server)) as client:
        schemas = {t.name: t.input_schema for t in portal.call(client.list_tools).tools}
        yield types.SimpleNamespace(
            portal=portal, client=client, runtime=runtime, schemas=schemas, marker=tmp / MARKER_NAME,
            call=lambda name, arguments: portal.call(call, name, arguments),
        )
        print(f"\nfuzz: {counted['calls']:,} tool calls on one in-memory server")


class Findings:
    """Internal errors seen in one test; any of them fails it.

    With ``fail_fast`` (hypothesis) a new one raises at once, so hypothesis shrinks it to a
    minimal example; otherwise every new one is collected and :meth:`settle` lists them all.
    """

    def __init__(self, *, fail_fast: bool = False) -> None:
        self.fail_fast = fail_fast
        self.new: list[str] = []

    def check(self, tool: str, arguments: dict[str, Any], is_error: bool, text: str) -> None:
        """Record an internal error in this result; raise at once if fail_fast."""
        if not (is_error and any(marker in text for marker in INTERNAL)):
            return
        message = f"{tool}({_shown_args(arguments)}) reached the internal-error path: {text[:400]}"
        if self.fail_fast:
            raise AssertionError(message)
        self.new.append(message)

    def settle(self) -> None:
        """Fail if any call reached the internal-error path."""
        assert not self.new, f"{len(self.new)} calls reached the internal-error path:\n" + "\n".join(self.new)


def _shown_args(arguments: dict[str, Any]) -> str:
    text = json.dumps(arguments, ensure_ascii=True, default=str)
    return text if len(text) < 300 else text[:300] + f"... ({len(text):,} characters)"


# ------------------------------------------------------------------------------------ tests


def _base_args(tool: str, schema: dict[str, Any]) -> dict[str, Any]:
    """BASE_ARGS for a known tool; for another, a plain value for each required property."""
    if tool in BASE_ARGS:
        return BASE_ARGS[tool]
    plain = {"string": "x", "integer": 1, "number": 1, "boolean": False, "object": {}, "array": []}
    props = schema.get("properties", {})
    return {name: plain.get(next(iter(_types(props.get(name, {}))), "string"), "x")
            for name in schema.get("required", [])}


def _tools(fuzz: types.SimpleNamespace, tool: str) -> list[str]:
    """The tools one parametrized case covers: ``tool``, or every registered tool not in TOOLS."""
    if tool != OTHER:
        return [tool]
    others = sorted(set(fuzz.schemas) - set(TOOLS))
    if not others:
        pytest.skip("every registered tool has its own case")
    return others


def test_every_known_tool_is_registered(fuzz: types.SimpleNamespace) -> None:
    assert set(TOOLS) <= set(fuzz.schemas), "a tool in TOOLS is no longer registered: update TOOLS and BASE_ARGS"
    assert sorted(BASE_ARGS) == sorted(TOOLS)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("tool", [*TOOLS, OTHER])
def test_schema_fuzz(fuzz: types.SimpleNamespace, tool: str) -> None:
    """Arguments drawn from the tool's published input schema never reach the internal-error path."""
    findings = Findings(fail_fast=True)

    def run(name: str) -> None:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 50,
                  suppress_health_check=list(HealthCheck))
        @given(arguments=from_schema(fuzz.schemas[name]))
        def one(arguments: dict[str, Any]) -> None:
            findings.check(name, arguments, *fuzz.call(name, arguments))

        one()

    for name in _tools(fuzz, tool):
        run(name)
    findings.settle()


def _hostile_calls(tool: str, schema: dict[str, Any], strings: list[str]) -> Iterator[dict[str, Any]]:
    """Argument dicts: the tool's valid base arguments with one property made hostile."""
    base = _base_args(tool, schema)
    for prop_name, prop in schema.get("properties", {}).items():
        kinds = _types(prop)
        if "string" in kinds:
            for value in strings:
                yield {**base, prop_name: value}
        if "integer" in kinds or "number" in kinds:
            for number in HOSTILE_INTEGERS:
                yield {**base, prop_name: number}
        if "object" in kinds:  # dimensions, extra_vars: hostile keys and values
            for value in strings[:8]:
                yield {**base, prop_name: {value: "x"}}
                yield {**base, prop_name: {"log_file": value, "Service": value}}
            for number in HOSTILE_INTEGERS[:3]:
                yield {**base, prop_name: {"error_lines": number}}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("tool", [*TOOLS, OTHER])
def test_hostile_values(fuzz: types.SimpleNamespace, tool: str) -> None:
    """1 MB strings, lone surrogates, extreme numbers and dates, FTS/PromQL/shell/Jinja syntax
    and path traversal in every argument: tool errors or results, never the internal-error
    path, and no shell syntax runs."""
    findings = Findings()
    for name in _tools(fuzz, tool):
        for arguments in _hostile_calls(name, fuzz.schemas[name], hostile_strings(fuzz.marker)):
            findings.check(name, arguments, *fuzz.call(name, arguments))
    assert not fuzz.marker.exists(), "a hostile argument ran a shell command"
    findings.settle()


WARMUP = 2
ROUNDS = int(os.environ.get("OPSMCP_FUZZ_RSS_ROUNDS", "6"))
RSS_LIMIT_MIB = 20.0


@pytest.mark.timeout(900)
@pytest.mark.parametrize("tool", TOOLS)
def test_rss_growth_bounded_under_1mb_arguments(fuzz: types.SimpleNamespace, tool: str) -> None:
    """Rounds of distinct 1 MB values in each string argument of the tool: after two warm-up
    rounds, RSS grows by at most 20 MiB over ``OPSMCP_FUZZ_RSS_ROUNDS`` more rounds (default 6;
    a cache that keeps every argument grows by at least 1 MB per argument per round)."""
    findings = Findings()
    props = [name for name, prop in fuzz.schemas[tool].get("properties", {}).items() if "string" in _types(prop)]
    if not props:
        pytest.skip(f"{tool} takes no string argument")

    def round_(n: int) -> None:
        for prop_name in props:
            arguments = {**_base_args(tool, fuzz.schemas[tool]), prop_name: f"{n:08d}" + "y" * MB}
            findings.check(tool, arguments, *fuzz.call(tool, arguments))

    for n in range(WARMUP):  # worker threads, connection caches and the allocator settle
        round_(-n - 1)
    before = _rss()
    for n in range(1, ROUNDS + 1):
        round_(n)
    grown = (_rss() - before) / 2**20
    print(f"{tool}: RSS {grown:+.1f} MiB over {ROUNDS} rounds of 1 MB in {', '.join(props)}")
    assert fuzz.portal.call(fuzz.client.list_tools).tools, "the server still answers"
    findings.settle()
    assert grown <= RSS_LIMIT_MIB, f"RSS grew by {grown:.1f} MiB over {ROUNDS} rounds of 1 MB arguments"


# ------------------------------------------------------------------------------ malformed JSON-RPC


@pytest.fixture(scope="module")
def http_base(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``opsmcp serve --transport http`` on a free port, pointed at the session's moto."""
    from helpers import free_port, stop_process, wait_answering

    port = free_port()
    data = tmp_path_factory.mktemp("fuzz-http")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSMCP_")}
    env.update(AWS_ENDPOINT_URL=moto_endpoint, OPSMCP_DATA_DIR=str(data), OPSMCP_TOOLSETS="queues,orders")
    proc = subprocess.Popen([OPSMCP, "serve", "--transport", "http", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{base}/healthz", proc, 60)
        yield base
    finally:
        stop_process(proc)


JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "fuzz", "version": "0"}}}


def malformed_requests() -> Iterator[tuple[str, str, dict[str, str], bytes]]:
    """(label, method, headers, body) of requests no well-behaved client sends."""
    def body(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    bodies: dict[str, bytes] = {
        "empty": b"",
        "not json": b"{not json",
        "truncated": body(INIT)[:-5],
        "invalid utf-8": b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}',
        "lone surrogate escape": b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"x": "\\ud800"}}',
        "null": b"null",
        "number": b"12345678901234567890123456789",
        "string": b'"initialize"',
        "empty array": b"[]",
        "batch": body([INIT, INIT]),
        "deep nesting": b"[" * 100_000 + b"]" * 100_000,
        "deep object": b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        "no method": body({"jsonrpc": "2.0", "id": 1}),
        "wrong version": body({**INIT, "jsonrpc": "1.0"}),
        "id object": body({**INIT, "id": {"x": 1}}),
        "id huge": body({**INIT, "id": 2**200}),
        "id float": body({**INIT, "id": 1.5e308}),
        "method number": body({**INIT, "method": 7}),
        "params string": body({**INIT, "params": "x"}),
        "params 1MB": body({**INIT, "params": {"x": "y" * MB}}),
        "unknown method": body({"jsonrpc": "2.0", "id": 1, "method": "tools/destroy", "params": {}}),
        "call before init": body({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": "get_order", "arguments": {"order_id": "x"}}}),
        "response object": body({"jsonrpc": "2.0", "id": 1, "result": {}}),
        "error object": body({"jsonrpc": "2.0", "id": 1, "error": {"code": "x"}}),
        "notification garbage": body({"jsonrpc": "2.0", "method": "notifications/\u0000"}),
        "init bad version": body({**INIT, "params": {**INIT["params"], "protocolVersion": "\ud800" * 3}}),
        "init capabilities list": body({**INIT, "params": {**INIT["params"], "capabilities": []}}),
        "10 MB": b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "' + b"z" * (10 * MB) + b'"}}',
    }
    for label, payload in bodies.items():
        yield label, "POST", JSON_HEADERS, payload
    yield "no content type", "POST", {"Accept": JSON_HEADERS["Accept"]}, body(INIT)
    yield "text/plain", "POST", {**JSON_HEADERS, "Content-Type": "text/plain"}, body(INIT)
    yield "no accept", "POST", {"Content-Type": "application/json"}, body(INIT)
    yield "accept image", "POST", {**JSON_HEADERS, "Accept": "image/png"}, body(INIT)
    yield "garbage session", "POST", {**JSON_HEADERS, "Mcp-Session-Id": "\x7f" * 300}, body(INIT)
    yield "unknown session", "POST", {**JSON_HEADERS, "Mcp-Session-Id": "deadbeef"}, body(
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    yield "bad protocol header", "POST", {**JSON_HEADERS, "Mcp-Protocol-Version": "9999-99-99"}, body(INIT)
    yield "GET without session", "GET", {"Accept": "text/event-stream"}, b""
    yield "DELETE without session", "DELETE", {}, b""
    yield "PUT", "PUT", JSON_HEADERS, body(INIT)
    yield "PATCH", "PATCH", JSON_HEADERS, b"x"


@pytest.mark.timeout(300)
def test_malformed_jsonrpc_over_streamable_http_gets_no_5xx(http_base: str) -> None:
    server_errors = []
    with httpx.Client(base_url=http_base, timeout=30) as http:
        for label, method, headers, payload in malformed_requests():
            response = http.request(method, "/mcp", headers=headers, content=payload)
            if response.status_code >= 500:
                server_errors.append(f"{label}: HTTP {response.status_code} {response.text[:200]!r}")
        assert not server_errors, "\n".join(server_errors)
        # The server still serves a well-formed session.
        init = http.post("/mcp", headers=JSON_HEADERS, content=json.dumps(INIT))
        assert init.status_code == 200, init.text
        assert http.get("/healthz").status_code == 200


async def test_server_answers_a_real_client_after_malformed_requests(http_base: str) -> None:
    from mcp import Client

    async with Client(f"{http_base}/mcp") as client:
        result = await client.call_tool("list_queues", {})
        assert not result.is_error, result.content
