"""langchain-mcp-adapters' DEFAULT path: ``MultiServerMCPClient(...).get_tools()`` over stdio.

Its tools open a new MCP session, and so start a new ``opsmcp serve`` process, for EVERY
call. Before issue 24 each of those processes had its own sandbox (the data the model had
just seen was gone) and its own approval secret (a confirmed write was impossible: "the
approval_token is not valid ... another OPSMCP_APPROVAL_SECRET"). Now the processes of one
data directory share the sandbox and the approval secret.

The confirmed write needs the ``prompt-or-confirm`` approval mode (the model passes
``confirm=true`` with the preview's token, because these tools cannot answer an approval
prompt). This test sets it explicitly: it is the trusted single-user case, and the default
mode may become one in which the model cannot approve its own write.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
from langchain_mcp_adapters.client import MultiServerMCPClient

pytestmark = pytest.mark.timeout(600)


def _sandbox_pid(data: Path) -> int | None:
    """The pid of the data dir's shared sandbox (from its state file), or None."""
    state = data / "sandbox" / "state.json"
    return int(json.loads(state.read_text())["pid"]) if state.exists() else None


async def _call(tool: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Call a LangChain MCP tool; return its structured content (fails on a tool error)."""
    message = await tool.ainvoke({"type": "tool_call", "id": "c1", "name": tool.name, "args": args})
    assert message.status != "error", message.content
    return message.artifact["structured_content"]


def test_default_get_tools_previews_and_confirms_a_redrive_across_processes(
    server_cmd: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_default_get_tools_redrive(server_cmd, isolated_env, monkeypatch))


async def _default_get_tools_redrive(server_cmd: str, isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSMCP_WRITE_APPROVAL", "prompt-or-confirm")  # see the module docstring
    data = Path(os.environ["OPSMCP_DATA_DIR"])
    starts = isolated_env / "starts.txt"  # one line per `opsmcp serve` the adapter started
    wrapper = f"echo $$ >> {shlex.quote(str(starts))}; exec {server_cmd} --allow-writes"
    client = MultiServerMCPClient(
        {"opsmcp": {"transport": "stdio", "command": "/bin/sh", "args": ["-c", wrapper], "env": dict(os.environ)}}
    )
    tools = {t.name: t for t in await client.get_tools()}  # the default: no session kept open
    queue = "order-cancellation-queue-dlq"

    preview = await _call(tools["redrive_dlq"], {"queue": queue})
    assert preview["dry_run"] is True and preview["matched"] == 8
    sandbox = _sandbox_pid(data)
    token = preview["approval"]["token"]

    moved = await _call(tools["redrive_dlq"], {"queue": queue, "dry_run": False, "confirm": True,
                                               "approval_token": token})
    assert moved["moved"] == 8 and moved["status"] == "complete"

    seen = await _call(tools["list_queues"], {"prefix": "order-cancellation"})
    depths = {q["name"]: q["visible"] for q in seen["queues"]}
    assert depths == {"order-cancellation-queue-dlq": 0, "order-cancellation-queue": 8}  # one sandbox's state

    servers = starts.read_text().split()
    assert len(servers) == 4 and len(set(servers)) == 4  # get_tools() and three calls: four processes
    assert sandbox is not None and _sandbox_pid(data) == sandbox  # one sandbox throughout
    audit = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["phase"] == "outcome" and audit[-1]["counts"]["moved"] == 8  # the real write, audited
