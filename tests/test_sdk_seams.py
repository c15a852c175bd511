"""The mcp SDK internals opsmcp relies on (opsmcp.surface.sdk_seams) are still there and still
mean what opsmcp assumes; this fails, naming what moved, as soon as an SDK release changes."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
from mcp import Client
from mcp.server import MCPServer

from opsmcp.surface import sdk_seams

pytestmark = pytest.mark.anyio


def test_the_sdk_is_the_release_the_seams_were_written_against():
    assert version("mcp") == sdk_seams.SDK_VERSION, "re-check every seam in opsmcp.surface.sdk_seams, then bump it"
    assert version("mcp-types") == sdk_seams.SDK_VERSION


def test_the_low_level_server_registers_request_handlers():
    assert callable(sdk_seams.lowlevel(MCPServer("t")).add_request_handler)


async def test_a_request_session_leads_to_one_connection_per_legacy_client_with_an_exit_stack():
    """resources/subscribe exists on 2025-11-25 only, where a client keeps one connection: its
    subscriptions are dropped when that connection's exit stack closes."""
    server = MCPServer("t")
    seen: list[Any] = []

    async def capture(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/list":
            seen.append(sdk_seams.connection_of(ctx.session))
        return await call_next(ctx)

    server.middleware.append(capture)
    async with Client(server, mode="legacy") as one:
        await one.list_tools()
        await one.list_tools()
    async with Client(server, mode="legacy") as two:
        await two.list_tools()
    assert seen[0] is seen[1] and seen[0] is not seen[2]
    assert hasattr(seen[0], "exit_stack") and callable(seen[0].notify)


def test_a_missing_internal_is_a_loud_error_naming_it():
    with pytest.raises(sdk_seams.SdkChanged, match="_connection"):
        sdk_seams.connection_of(object())


def test_the_registered_tool_is_the_sdks_with_the_fields_opsmcp_replaces():
    server = MCPServer("t")

    def echo(n: int = 1) -> int:
        """Echo."""
        return n

    server.add_tool(echo)
    tool = sdk_seams.registered_tool(server, "echo")
    assert tool.parameters["properties"]["n"]["type"] == "integer"
    assert tool.fn_metadata.arg_model.model_fields and tool.fn_metadata.output_schema is not None
    assert sdk_seams.registered_tool(server, "nope") is None


def test_mcpserver_calls_the_logging_set_up_the_seam_skips():
    import logging

    import mcp.server.mcpserver.server as sdk_server

    calls: list[Any] = []
    original = sdk_server.configure_logging
    sdk_server.configure_logging = lambda *a, **k: calls.append(a)
    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    try:
        MCPServer("t")
        assert len(calls) == 1, "MCPServer() no longer calls configure_logging: drop sdk_seams.logging_configured"
        with sdk_seams.logging_configured():
            MCPServer("t")
        assert len(calls) == 1
    finally:
        root.removeHandler(handler)
        sdk_server.configure_logging = original
    assert sdk_server.configure_logging is original
