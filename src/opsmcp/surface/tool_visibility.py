"""SDK middleware around every inbound MCP request: per-identity tool visibility.

- ``tools/list`` shows the caller only the tools its scopes allow (``ops:read`` for read
  tools, ``ops:write`` for write tools; see :mod:`opsmcp.calls.identity`).
- ``tools/call`` of a tool the caller may not call is refused as a tool error before the
  SDK resolves arguments, so no approval prompt or preview runs (the choke point checks
  again).

It runs for every transport; stdio callers have every scope, so there it changes nothing.
Unknown prompts and bad prompt arguments are answered ``-32602`` by
:func:`opsmcp.surface.prompts.prompt_params_guard`, the one middleware for ``prompts/get``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.types import CallToolResult, ListToolsResult, TextContent

from opsmcp.calls.identity import may_call, require_scope
from opsmcp.errors import OpsError


class ProtocolGuard(ServerMiddleware[Any]):
    """See module doc. ``is_write(name)`` says whether a registered tool writes (``None``: unknown)."""

    def __init__(self, server: MCPServer, is_write: Callable[[str], bool | None]) -> None:
        self.server = server
        self.is_write = is_write

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params if isinstance(ctx.params, dict) else {}
        name = params.get("name")
        if ctx.method == "tools/call" and isinstance(name, str):
            write = self.is_write(name)
            if write is not None:
                try:
                    require_scope(name, write)
                except OpsError as exc:
                    return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
        result = await call_next(ctx)
        if ctx.method == "tools/list":
            return self._visible(result)
        return result

    def _visible(self, result: HandlerResult) -> HandlerResult:
        """``result`` (a ListToolsResult, or its dict) without the tools the caller may not call."""
        def allowed(tool_name: str) -> bool:
            write = self.is_write(tool_name)
            return write is None or may_call(write)

        if isinstance(result, ListToolsResult):
            return result.model_copy(update={"tools": [t for t in result.tools if allowed(t.name)]})
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            return dict(result, tools=[t for t in result["tools"] if allowed(str(t.get("name")))])
        return result
