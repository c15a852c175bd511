"""JSON-RPC request ids the SDK would take for notifications: answered as invalid requests.

MCP requires a request's ``id`` to be a string or an integer. The SDK's transports validate
a message that has an ``id`` of another kind (``1e999``, ``NaN``, ``1.5``, ``true``,
``[1]``, ``{"a": 1}``, ``null``) as a *notification* instead, answer ``202 Accepted`` and
never reply, so the client waits for an answer that does not come. :class:`RequestIdGuard`
sits in front of the SDK's ``/mcp`` and ``/messages/`` and answers such a message itself:
HTTP 400 with the JSON-RPC error ``-32600 Invalid Request`` and ``id: null`` (JSON-RPC 2.0:
the id of a request whose id cannot be read). Everything else passes unchanged, the body
replayed to the SDK as it arrived.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import pydantic_core
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp_types import INVALID_REQUEST
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Paths whose POST bodies are JSON-RPC messages (streamable HTTP, legacy SSE).
RPC_PATHS = ("/mcp", "/messages/")


def bad_id(message: Any) -> str | None:
    """Why ``message`` (one parsed JSON-RPC message) has an id MCP does not allow, or None.

    Only requests and notifications (objects with a ``method``) are checked; a message
    without an ``id`` key is a notification and fine."""
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        return None
    value = message["id"]
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        shown = "a number out of range" if not math.isnan(value) else "NaN"
    elif isinstance(value, float):
        shown = f"the fraction {value!r}"
    else:
        shown = {type(None): "null", bool: "a boolean", list: "a list", dict: "an object"}.get(type(value), "a value")
    return f"the request id must be a string or an integer, not {shown}"


class RequestIdGuard:
    """ASGI middleware: see module doc. Bodies larger than the SDK's own limit pass unread
    (the SDK answers them 413)."""

    def __init__(self, app: ASGIApp, max_body: int = DEFAULT_MAX_REQUEST_BODY_SIZE) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in RPC_PATHS:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        kept: deque[Message] = deque()
        while True:
            message = await receive()
            kept.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False) or len(body) > self.max_body:
                break

        async def replay() -> Message:
            return kept.popleft() if kept else await receive()

        why = self._check(bytes(body)) if len(body) <= self.max_body and b'"id"' in body else None
        if why is None:
            await self.app(scope, replay, send)
            return
        error = {"code": INVALID_REQUEST, "message": f"Invalid Request: {why}"}
        answer = {"jsonrpc": "2.0", "id": None, "error": error}
        await JSONResponse(answer, status_code=400)(scope, replay, send)

    @staticmethod
    def _check(body: bytes) -> str | None:
        try:
            parsed = pydantic_core.from_json(body)
        except ValueError:
            return None  # not JSON: the SDK answers its parse error
        for message in parsed if isinstance(parsed, list) else [parsed]:
            why = bad_id(message)
            if why:
                return why
        return None
