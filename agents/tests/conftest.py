"""Shared fixtures: the real opsmcp server command, an isolated environment, and facts
discovered from the sandbox (a DLQ with messages and one of its trace ids) through a
plain MCP client session, so the scripted tests never hard-code seeded data."""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import dlq_names, server_command, trace_ids

_SCRUB = ("AWS_", "OPSMCP_AGENT_", "OLLAMA_HOST", "OPENAI_API_KEY")


def _isolate(mp: pytest.MonkeyPatch, data_dir: Path) -> None:
    for name in list(os.environ):
        if name.startswith(_SCRUB) and name != "OPSMCP_AGENT_SERVER_COMMAND":
            mp.delenv(name, raising=False)
    mp.setenv("XDG_DATA_HOME", str(data_dir))
    mp.setenv("OPSMCP_DATA_DIR", str(data_dir / "opsmcp"))


def stop_sandboxes(under: Path) -> None:
    """Stop the shared opsmcp sandboxes started under ``under``: each runs in its own process
    and outlives its last ``opsmcp serve`` by OPSMCP_SANDBOX_IDLE_SECONDS (600 s by default).
    Read from their state files (``<data dir>/sandbox/state.json``): this suite never
    imports opsmcp."""
    import json
    import signal

    for state in under.rglob("sandbox/state.json"):
        try:
            os.kill(int(json.loads(state.read_text())["pid"]), signal.SIGTERM)
        except (OSError, ValueError, KeyError):
            continue  # already gone


@pytest.fixture(autouse=True, scope="session")
def stop_module_sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the run: stop the sandboxes of servers that module-scoped fixtures started."""
    yield
    stop_sandboxes(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test: no AWS or agent settings from the outside; a fresh opsmcp data dir (its
    sandbox stopped afterwards)."""
    _isolate(monkeypatch, tmp_path / "data")
    yield tmp_path
    stop_sandboxes(tmp_path)


@pytest.fixture(scope="session")
def server_cmd() -> str:
    """Command line that starts the real opsmcp (sandbox) over stdio."""
    cmd = server_command()
    if cmd is None:
        pytest.skip("opsmcp is not installed (expected ../.venv/bin/opsmcp or OPSMCP_AGENT_SERVER_COMMAND)")
    return cmd


async def _probe(cmd: str) -> dict[str, Any]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    argv = shlex.split(cmd)
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = [t.name for t in (await session.list_tools()).tools]
        listing = await session.call_tool("list_queues", {})
        assert not listing.isError, listing.content
        payload: Any = listing.structuredContent or [c.text for c in listing.content if hasattr(c, "text")]
        names = dlq_names(payload)
        names.sort(key=lambda n: (not n.startswith("order-queue"), ".fifo" in n))
        for name in names:
            res = await session.call_tool("analyze_dlq", {"queue": name})
            if res.isError:
                continue
            data: Any = res.structuredContent or " ".join(c.text for c in res.content if hasattr(c, "text"))
            found = trace_ids(data)
            if found:
                return {"tools": tools, "dlq": name, "trace_id": found[0], "dlqs": names}
        raise AssertionError(f"no DLQ with trace ids found among {names}")


@pytest.fixture(scope="session")
def sandbox(server_cmd: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Facts from the real sandbox: ``tools``, ``dlq`` (a DLQ with messages) and a
    ``trace_id`` from it, discovered with list_queues + analyze_dlq over a plain MCP session."""
    mp = pytest.MonkeyPatch()
    probe = tmp_path_factory.mktemp("probe")
    try:
        _isolate(mp, probe)
        return asyncio.run(asyncio.wait_for(_probe(server_cmd), 120))
    finally:
        mp.undo()
        stop_sandboxes(probe)
