"""Operability logs: one INFO line per tool call (never argument values), DEBUG adds backend
calls, JSON Lines on request, and OPSMCP_LOG_LEVEL holds for every logger, uvicorn's too."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from helpers import OPSMCP, ToolFailed, call, free_port, make_settings, wait_answering
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from opsmcp.logsetup import configure

pytestmark = pytest.mark.anyio
SECRET = "hunter2-not-for-logs"


@pytest.fixture
def restore_logging():
    """Put the root logger back as it was after a test that configures it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_one_line_per_call_with_sizes_outcome_and_request_id_never_values(seeded, restore_logging):
    stream = io.StringIO()
    configure("INFO", "json")
    logging.getLogger().handlers[0].stream = stream  # type: ignore[attr-defined]
    await call(seeded.client, "list_queues", prefix="order")
    with pytest.raises(ToolFailed):
        await call(seeded.client, "get_order", order_id=SECRET)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    calls = [r for r in lines if r["logger"] == "opsmcp.calls"]
    assert [(r["tool"], r["outcome"]) for r in calls] == [("list_queues", "ok"), ("get_order", "tool_error")]
    ok, failed = calls
    assert ok["level"] == "INFO" and ok["caller"] == "stdio" and ok["duration_ms"] > 0
    validated = {"prefix": "order", "limit": 100, "cursor": None}  # the arguments with their defaults
    assert ok["argument_bytes"] == len(json.dumps(validated, separators=(",", ":"))) and ok["result_bytes"] > 100
    assert ok["request_id"] and ok["request_id"] != failed["request_id"]
    assert failed["error"] == "NotFound" and failed["result_bytes"] is None
    assert SECRET not in stream.getvalue()  # not in ours, nor in the SDK's "Tool failed: <message>" (WARNING+)
    assert not [r for r in lines if r["logger"] == "opsmcp.backends"]  # DEBUG only


@pytest.mark.process
async def test_a_debug_run_shows_each_call_and_its_backend_calls(fresh_moto: str, tmp_path: Path) -> None:
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws

    seed_aws(make_settings(fresh_moto, tmp_path), build_scenario(), metrics=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSMCP_", "OTEL_"))}
    env.update(AWS_ENDPOINT_URL=fresh_moto, OPSMCP_DATA_DIR=str(tmp_path), OPSMCP_TOOLSETS="queues,orders",
               OPSMCP_LOG_LEVEL="DEBUG")
    errlog = tmp_path / "stderr.log"
    with errlog.open("w") as err:
        server = stdio_client(StdioServerParameters(command=OPSMCP, args=["serve"], env=env), errlog=err)
        async with Client(server) as client:
            await call(client, "list_queues")
            await call(client, "list_queues", prefix="order")
            with pytest.raises(ToolFailed):
                await call(client, "get_order", order_id=SECRET)
    text = errlog.read_text()
    per_call = [ln for ln in text.splitlines() if " opsmcp.calls: tool call " in ln]
    assert [ln.split("tool call ")[1].split()[:2] for ln in per_call] == [
        ["list_queues", "ok"], ["list_queues", "ok"], ["get_order", "tool_error"]], per_call
    assert all("duration_ms=" in ln and "request_id=" in ln and "argument_bytes=" in ln for ln in per_call)
    backend = [ln for ln in text.splitlines() if " opsmcp.backends: backend call " in ln]
    assert any("system=sqs operation=list_queues" in ln for ln in backend), text[-2000:]
    assert any("system=dynamodb operation=get_item" in ln for ln in backend), text[-2000:]
    assert not [ln for ln in per_call + backend if SECRET in ln]  # botocore's own DEBUG lines show bodies
    assert " DEBUG botocore" in text  # the level holds for every library's logger


@pytest.mark.process
@pytest.mark.parametrize("level,uvicorn_lines", [("INFO", True), ("WARNING", False)])
def test_the_level_and_format_hold_for_uvicorn(tmp_path: Path, level: str, uvicorn_lines: bool) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSMCP_", "OTEL_"))}
    env.update(AWS_ENDPOINT_URL="http://127.0.0.1:9", OPSMCP_DATA_DIR=str(tmp_path), OPSMCP_TOOLSETS="queues",
               OPSMCP_LOG_LEVEL=level, OPSMCP_LOG_FORMAT="json")
    errlog = tmp_path / "stderr.log"
    with errlog.open("w") as err:
        proc = subprocess.Popen([OPSMCP, "serve", "--transport", "http", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_answering(f"http://127.0.0.1:{port}/healthz", proc)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    records = [json.loads(ln) for ln in errlog.read_text().splitlines() if ln.startswith("{")]
    from_uvicorn = [r for r in records if r["logger"].startswith("uvicorn")]
    assert bool(from_uvicorn) == uvicorn_lines, records
    if uvicorn_lines:
        assert any(r["logger"] == "uvicorn.access" and "/healthz" in r["message"] for r in from_uvicorn)
    others = [ln for ln in errlog.read_text().splitlines() if ln.strip() and not ln.startswith("{")]
    assert all(not ln.startswith(("INFO:", "WARNING:")) for ln in others), others  # no uvicorn default format
