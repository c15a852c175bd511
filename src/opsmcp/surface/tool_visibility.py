"""SDK middleware around every inbound MCP message: one scope policy for every method.

The policy (scopes from :mod:`opsmcp.calls.identity`; the HTTP transport sets them per
token, stdio callers have every scope, so there it changes nothing):

- ``initialize``, ``ping``, ``server/discover`` and notifications: any identity (a client
  must be able to connect and learn what it may do);
- ``tools/list``: only the tools the caller may call (``ops:read`` for read tools,
  ``ops:write`` for write tools);
- ``tools/call``: the tool's scope, refused as a tool error before the SDK resolves
  arguments, so no approval prompt or preview runs (the choke point checks again); a name
  that is not a registered tool needs one of the ``ops:`` scopes;
- ``resources/list``, ``resources/templates/list``, ``prompts/list``: ``ops:read``; without
  it the list is empty, as ``tools/list`` is without tools;
- every other method (``resources/read``, ``prompts/get``, ``completion/complete``,
  ``subscriptions/listen``, the legacy ``resources/subscribe`` and ``unsubscribe``,
  ``logging/setLevel``, and any method a later SDK adds): ``ops:read``, else the JSON-RPC
  error :data:`SCOPE_REFUSED` naming the caller, the method and the scope it needs.

:class:`ProtocolGuard` is the one place that applies it; the server puts it first among
opsmcp's middleware, so no other middleware (the ``subscriptions/listen`` watcher, the
prompt argument guard) runs for a refused request. Unknown prompts and bad prompt
arguments are answered ``-32602`` by :func:`opsmcp.surface.prompts.prompt_params_guard`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, ListToolsResult, TextContent

from opsmcp.calls.identity import ALL_SCOPES, READ_SCOPE, caller, may_call, require_scope, scopes
from opsmcp.errors import OpsError

#: JSON-RPC error code of a request the caller's scopes do not allow (in the range JSON-RPC
#: leaves to implementations; HTTP's equivalent is 403 ``insufficient_scope``).
SCOPE_REFUSED = -32003
#: Methods any identity may send.
OPEN_METHODS = frozenset({"initialize", "ping", "server/discover"})
#: List methods answered with an empty list (the result's list field) without ``ops:read``.
LIST_METHODS = {"resources/list": "resources", "resources/templates/list": "resourceTemplates",
                "prompts/list": "prompts"}


def refusal(method: str, need: str) -> MCPError:
    """The :data:`SCOPE_REFUSED` error for ``method`` needing scope ``need``."""
    have = ", ".join(sorted(scopes.get())) or "none"
    return MCPError(SCOPE_REFUSED, f"Refused: {caller.get()} may not call {method}: it needs scope {need} (this "
                    f"identity has: {have}). Ask the operator for a token with that scope.",
                    {"required_scope": need, "method": method})


def _emptied(result: HandlerResult, field: str) -> HandlerResult:
    """A list result (model or dict) with its list ``field`` (wire name) emptied."""
    if isinstance(result, dict):
        return dict(result, **{field: []})
    if result is not None:
        name = next((n for n, f in type(result).model_fields.items() if (f.alias or n) == field), field)
        return result.model_copy(update={name: []})
    return result


class ProtocolGuard(ServerMiddleware[Any]):
    """See module doc. ``is_write(name)`` says whether a registered tool writes (``None``: unknown)."""

    def __init__(self, server: MCPServer, is_write: Callable[[str], bool | None]) -> None:
        self.server = server
        self.is_write = is_write

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        method = ctx.method
        if ctx.request_id is None or method in OPEN_METHODS:
            return await call_next(ctx)
        if method == "tools/list":
            return self._visible(await call_next(ctx))
        if method == "tools/call":
            params = ctx.params if isinstance(ctx.params, dict) else {}
            name = params.get("name")
            write = self.is_write(name) if isinstance(name, str) else None
            try:
                if write is not None:
                    require_scope(str(name), write)
                elif not scopes.get() & ALL_SCOPES:  # an unknown tool: no ops scope learns nothing about it
                    require_scope(str(name), False)
            except OpsError as exc:
                return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
            return await call_next(ctx)
        if READ_SCOPE in scopes.get():
            return await call_next(ctx)
        if method in LIST_METHODS:  # the SDK's answer (its caching hints included), emptied
            return _emptied(await call_next(ctx), LIST_METHODS[method])
        raise refusal(method, READ_SCOPE)

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
