"""HTTP routes for custom UIs: the ``/events`` SSE feed and the live page at ``/``.

``GET /events`` (sse-starlette) streams the :mod:`opsmcp.calls.events` hub:

- ``?types=queue_depth,alert`` filters by event type (unknown types: 400 naming the allowed ones);
- ``Last-Event-ID`` (header, or ``?last_event_id=``) resumes after that id from the bounded
  history; without it the stream starts with a ``snapshot`` event (the queues' last known
  state and the latest dead-letter, alert and write events);
- a comment heartbeat every ``OPSMCP_EVENTS_HEARTBEAT_SECONDS``;
- a client whose buffer fills is dropped (the stream ends); the page reconnects with its
  last id.

``GET /`` serves the live page (static HTML + JS from package data, no build step, no CDN).
The page itself holds no data; the feed it reads is authenticated like every other route.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsmcp import __version__
from opsmcp.calls.events import EVENT_TYPES

SNAPSHOT_KEEP = 20  # latest events of each kind in a snapshot


def _static(name: str) -> bytes:
    return resources.files("opsmcp").joinpath("static", name).read_bytes()


def _types(raw: str | None) -> frozenset[str] | None:
    if not raw:
        return None
    wanted = frozenset(t.strip() for t in raw.split(",") if t.strip())
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown event types {unknown}; allowed: {', '.join(EVENT_TYPES)}")
    return wanted


def _last_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise ValueError(f"Last-Event-ID {raw[:40]!r} is not an event id (a whole number)")
    return int(raw)


def routes(runtime: Any) -> list[Route]:
    """The ``/events``, ``/`` and ``/static/*`` routes for ``runtime`` (an opsmcp Runtime
    with ``events`` (EventHub), ``poller`` (DepthPoller or None) and ``settings``)."""
    heartbeat = runtime.settings.events_heartbeat_seconds

    async def events(request: Request) -> Response:
        from sse_starlette import EventSourceResponse

        try:
            types, last = _types(request.query_params.get("types")), _last_id(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        listener = runtime.events.add(types, last)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            try:
                yield {"event": "hello", "data": json.dumps({"version": __version__, "tools": sorted(runtime.tools),
                                                             "last_event_id": runtime.events.last_id})}
                if last is None:
                    yield {"event": "snapshot", "data": json.dumps(snapshot(runtime, types), default=str)}
                async for event in listener.stream():
                    yield {"id": str(event.id), "event": event.type, "data": json.dumps(event.data, default=str)}
            finally:
                runtime.events.remove(listener)

        return EventSourceResponse(stream(), ping=heartbeat)

    async def page(request: Request) -> Response:
        return Response(_static("index.html"), media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'"})

    async def script(request: Request) -> Response:
        return Response(_static("app.js"), media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    return [
        Route("/events", events, methods=["GET"]),
        Route("/", page, methods=["GET"]),
        Route("/static/app.js", script, methods=["GET"]),
    ]


def snapshot(runtime: Any, types: frozenset[str] | None) -> dict[str, Any]:
    """What a new listener sees first: last known queue states and the latest events."""
    def want(t: str) -> bool:
        return types is None or t in types

    poller = runtime.poller
    return {
        "queues": poller.snapshot() if poller is not None and want("queue_depth") else [],
        "dlq_messages": ([e.data for e in runtime.events.latest("dlq_message")[-SNAPSHOT_KEEP:]]
                         if want("dlq_message") else []),
        "alerts": [e.data for e in runtime.events.latest("alert")[-SNAPSHOT_KEEP:]][::-1] if want("alert") else [],
        "writes": [e.data for e in runtime.events.latest("write")[-SNAPSHOT_KEEP:]][::-1] if want("write") else [],
    }
