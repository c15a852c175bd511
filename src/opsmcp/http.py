"""One Starlette app for every HTTP transport.

Routes: ``/mcp`` (streamable HTTP), ``/sse`` + ``/messages/`` (legacy SSE), ``/events``
(a plain SSE feed of tool-call events for custom UIs), ``/healthz`` and ``/metrics``
(Prometheus text). When ``OPSMCP_HTTP_TOKEN`` is set every route but ``/healthz``
requires ``Authorization: Bearer <token>``. Host/Origin checks (DNS rebinding
protection) come from the SDK's transport security when bound to loopback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

from mcp.server import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from opsmcp import __version__
from opsmcp.identity import caller
from opsmcp.server import Runtime
from opsmcp.webhooks import alertmanager_route

OPEN_PATHS = ("/healthz",)


class BearerAuth:
    """ASGI middleware: require ``Authorization: Bearer <token>`` and record the caller.

    The subject recorded for audit is ``bearer:<first 8 hex of sha256(token)>`` (never the
    token itself); without a configured token the subject is ``http:<client ip>``.
    """

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token
        self.subject = f"bearer:{hashlib.sha256(token.encode()).hexdigest()[:8]}" if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token and scope["path"] not in OPEN_PATHS:
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"")
            if not (given.startswith(b"Bearer ") and hmac.compare_digest(given[7:].strip(), self.token.encode())):
                response = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                        headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        client = scope.get("client") or ("unknown", 0)
        token = caller.set(self.subject or f"http:{client[0]}")
        try:
            await self.app(scope, receive, send)
        finally:
            caller.reset(token)


def build_app(server: MCPServer, runtime: Runtime, host: str = "127.0.0.1") -> ASGIApp:
    """The combined Starlette app for ``server`` (see module doc for routes)."""
    app = server.streamable_http_app(host=host)
    sse = server.sse_app(host=host)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "tools": sorted(runtime.tools),
                             "sandbox": runtime.settings.sandbox, "writes_enabled": runtime.settings.allow_writes,
                             "disabled_toolsets": runtime.disabled})

    async def metrics(request: Request) -> Response:
        return PlainTextResponse(runtime.stats.render(), media_type="text/plain; version=0.0.4")

    async def events(request: Request) -> Response:
        from sse_starlette import EventSourceResponse

        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)
        runtime.subscribers.add(queue)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            try:
                yield {"event": "hello", "data": json.dumps({"version": __version__, "tools": sorted(runtime.tools)})}
                while True:
                    item = await queue.get()
                    yield {"event": item.get("type", "tool_call"), "data": json.dumps(item, default=str)}
            finally:
                runtime.subscribers.discard(queue)

        return EventSourceResponse(stream(), ping=15)

    app.router.routes.extend(sse.routes)
    app.router.routes.extend([
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
    ])
    app.router.routes.append(alertmanager_route(runtime))  # POST /webhooks/alertmanager
    return BearerAuth(app, runtime.settings.http_token)
