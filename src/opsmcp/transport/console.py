"""HTTP routes for custom UIs: the ``/events`` SSE feed and the live page at ``/``.

``GET /events`` (sse-starlette) streams the :mod:`opsmcp.calls.events` hub:

- ``?types=queue_depth,alert`` filters by event type (unknown types: 400 naming the allowed ones);
- ``Last-Event-ID`` (header, or ``?last_event_id=``) resumes after that id from the bounded
  history; without it the stream starts with a ``snapshot`` event (the queues' last known
  state and the latest dead-letter, alert and write events);
- a comment heartbeat every ``OPSMCP_EVENTS_HEARTBEAT_SECONDS``;
- a client whose buffer fills is dropped (the stream ends); the page reconnects with its
  last id;
- listeners are capped per identity and in total (``OPSMCP_EVENTS_MAX_LISTENERS_PER_IDENTITY``,
  ``OPSMCP_EVENTS_MAX_LISTENERS``): past either the answer is 503 with ``Retry-After`` and
  ``{"error": ...}`` naming the limit.

``GET /`` serves the console (static HTML + JS from package data, and the uPlot chart
library vendored under ``static/vendor/``; no build step, no CDN). The page itself holds no
data; the feed and the ``/api/...`` routes it reads are authenticated like every other route.
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
from opsmcp.calls.events import EVENT_TYPES, ListenerLimit
from opsmcp.calls.identity import caller

SNAPSHOT_KEEP = 20  # latest events of each kind in a snapshot
RETRY_AFTER_SECONDS = 30  # what a 503 (too many listeners) asks the client to wait


#: What ``/static/`` serves (package data, no token needed: no data in them) and as what.
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "vendor/uPlot.min.css": "text/css; charset=utf-8",
}
#: Their paths, open like the page itself (:data:`opsmcp.transport.app.OPEN_PATHS`).
STATIC_PATHS = tuple(f"/static/{name}" for name in STATIC_FILES)


def _static(name: str) -> bytes:
    return resources.files("opsmcp").joinpath("static", *name.split("/")).read_bytes()


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


def routes(runtime: Any, panels: Any = None) -> list[Route]:
    """The ``/events``, ``/`` and ``/static/*`` routes for ``runtime`` (an opsmcp Runtime
    with ``events`` (EventHub), ``poller`` (DepthPoller or None) and ``settings``).

    ``panels`` (a :class:`~opsmcp.transport.console_panels.Panels`, optional): its metric
    charts are published as ``metrics`` events while anyone listens."""
    heartbeat = runtime.settings.events_heartbeat_seconds

    async def events(request: Request) -> Response:
        from sse_starlette import EventSourceResponse

        try:
            types, last = _types(request.query_params.get("types")), _last_id(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            listener = runtime.events.add(types, last, owner=caller.get())
        except ListenerLimit as exc:
            return JSONResponse({"error": str(exc)}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"})

        if panels is not None:
            panels.watch_metrics()

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

    def static(name: str) -> Any:
        async def serve(request: Request) -> Response:
            return Response(_static(name), media_type=STATIC_FILES[name],
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

        return serve

    return [
        Route("/events", events, methods=["GET"]),
        Route("/", page, methods=["GET"]),
        *(Route(path, static(name), methods=["GET"]) for name, path in zip(STATIC_FILES, STATIC_PATHS, strict=True)),
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
