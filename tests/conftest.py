"""Shared fixtures: a real moto server over HTTP on a free loopback port, and Settings for it.

Tests talk to AWS APIs only through this server (never in-process mocks), so the
boto3 clients, timeouts and error mapping are exercised as in production.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Fake credentials for moto; never real ones. Set before any boto3 import.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ops_agent"


def pytest_collection_modifyitems(items):
    """Run every ``async def`` test on anyio's asyncio backend (fixtures set up and torn
    down in the test's own task, which the MCP client's task groups require)."""
    import inspect

    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.add_marker(pytest.mark.anyio)


@pytest.fixture(autouse=True)
def stop_shared_sandboxes(request):
    """After each test that used ``tmp_path``: stop the shared sandboxes its ``opsmcp serve``
    processes started there (a sandbox outlives its last server by
    OPSMCP_SANDBOX_IDLE_SECONDS, 600 s by default: without this, every test's sandbox would
    stay up that long)."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        from opsmcp.sandbox.shared import stop

        for state in tmp.rglob("sandbox/state.json"):
            stop(state.parent.parent)


@pytest.fixture(autouse=True, scope="session")
def stop_module_sandboxes(tmp_path_factory):
    """At the end of the run: stop the shared sandboxes of servers that module- or
    session-scoped fixtures started under ``tmp_path_factory`` directories."""
    yield
    from opsmcp.sandbox.shared import stop

    for state in tmp_path_factory.getbasetemp().rglob("sandbox/state.json"):
        stop(state.parent.parent)


@pytest.fixture(scope="session")
def anyio_backend():
    """asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start one moto server for the session; yield its ``http://127.0.0.1:PORT`` URL."""
    from opsmcp.sandbox import start_moto

    server, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def fresh_moto(moto_endpoint: str) -> Iterator[str]:
    """The session's moto server with its state reset (moto keeps one in-process state for
    every server in a process, so "fresh" means reset); yields its URL."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10).read()
    yield moto_endpoint


def make_settings(endpoint: str, data_dir: Path, **overrides):
    """Settings pointing every AWS client at ``endpoint`` with data under ``data_dir``."""
    from opsmcp.config import Settings

    return Settings(aws_endpoint_url=endpoint, aws_region="us-east-1", data_dir=data_dir, **overrides)


def drain_queue(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Receive and delete every message of the queue at ``url`` (a boto3 SQS client ``sqs``);
    return them in receive order, with all attributes and message attributes. Each message
    is deleted right after it is received (300 s visibility, so none reappears meanwhile)."""
    out: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300,
                                  MessageAttributeNames=["All"], AttributeNames=["All"]).get("Messages", [])
        if not got:
            return out
        for m in got:
            out.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


@pytest.fixture
def fixtures_dir() -> Path:
    """The ops_agent fixture directory (tests/fixtures/ops_agent)."""
    assert FIXTURES.is_dir(), f"fixtures missing at {FIXTURES}"
    return FIXTURES


class ToolFailed(AssertionError):
    """A tool call returned isError: the text is the tool error message."""


async def call(client, tool: str, /, **arguments):
    """Call ``tool``; return its structuredContent, or raise ToolFailed with the error text."""
    result = await client.call_tool(tool, arguments)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        raise ToolFailed(text)
    assert result.structured_content is not None, f"{tool} returned no structuredContent: {text[:200]}"
    return result.structured_content


async def real_redrive(client, **arguments):
    """The flow a client without elicitation follows on a ``prompt-or-confirm`` server: a dry
    run (the preview shown to the user), then the same call with dry_run=false, confirm=true
    and the preview's approval token. Returns the real result."""
    preview = await call(client, "redrive_dlq", **arguments)
    return await call(client, "redrive_dlq", **arguments, dry_run=False, confirm=True,
                      approval_token=preview["approval"]["token"])


@pytest.fixture
async def seeded(fresh_moto, tmp_path):
    """A fresh moto server seeded with the sandbox scenario, and an in-memory MCP client
    of a server with writes enabled (approval mode ``prompt-or-confirm``). Yields a
    namespace: client, settings, scenario, sqs, ddb."""
    import types

    import boto3
    from mcp import Client

    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws
    from opsmcp.server import build_server

    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, write_approval="prompt-or-confirm")
    scenario = build_scenario()
    seed_aws(settings, scenario, metrics=False)
    server, runtime = build_server(settings)
    async with Client(server) as client:
        yield types.SimpleNamespace(
            client=client, settings=settings, scenario=scenario, runtime=runtime,
            sqs=boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1"),
            ddb=boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1"),
        )
