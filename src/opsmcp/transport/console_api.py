"""The console's read routes: what its panels show when the page opens
(:mod:`opsmcp.transport.console_panels` reads them; ``/events`` updates them afterwards).

Routes (mounted by :mod:`opsmcp.transport.app`, behind the same Host/Origin policy and
bearer authentication as every route; all ``GET``, all need ``ops:read``):

- ``/api/console/groups``: failure groups of every DLQ (the shared DLQ read ``analyze_dlq`` uses);
- ``/api/console/depths``: the last hour of queue depths;
- ``/api/console/metrics``: the key metric charts (``OPSMCP_CONSOLE_METRICS``);
- ``/api/console/writes?limit=N``: the last N writes from the audit log (1-200, default 50);
- ``/api/console/alerts?limit=N``: alerts from the alert store (1-200, default 50).

Each answers a JSON object with ``available`` (false: the toolset or audit log is off,
``reason`` says which) or ``{"error": ...}`` with 400 (bad ``limit``), 403 (no ``ops:read``)
or 503 (a backend failed). Answers are bounded and never cached by the browser.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsmcp.calls.identity import READ_SCOPE, caller, scopes
from opsmcp.errors import OpsError
from opsmcp.transport.console_panels import MAX_ALERTS, MAX_WRITES, Panels

log = logging.getLogger("opsmcp.transport.console_api")

DEFAULT_LIMIT = 50


def _answer(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _limit(request: Request, most: int) -> int:
    """``?limit=`` as a whole number from 1 to ``most`` (default :data:`DEFAULT_LIMIT`).

    Raises:
        ValueError: anything else (the message names the allowed range).
    """
    raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= most:
        raise ValueError(f"limit={raw[:40]!r} is not allowed; use a whole number from 1 to {most}.")
    return int(raw)


def routes(runtime: Any, panels: Panels | None = None) -> list[Route]:
    """The ``/api/console/*`` routes for ``runtime`` (an :class:`opsmcp.calls.runtime.Runtime`),
    reading through ``panels`` (default: a new :class:`Panels` for it)."""
    panels = panels or Panels(runtime)

    def guarded(read: Any, limit: int | None = None) -> Any:
        async def handler(request: Request) -> Response:
            if READ_SCOPE not in scopes.get():
                return _answer({"error": f"{caller.get()} may not read the console: it needs scope {READ_SCOPE}."},
                               403)
            try:
                args = [] if limit is None else [_limit(request, limit)]
            except ValueError as exc:
                return _answer({"error": str(exc)}, 400)
            try:
                return _answer(await read(*args))
            except OpsError as exc:
                return _answer({"error": str(exc)}, 503)

        return handler

    return [
        Route("/api/console/groups", guarded(panels.failure_groups), methods=["GET"]),
        Route("/api/console/depths", guarded(panels.depths), methods=["GET"]),
        Route("/api/console/metrics", guarded(panels.metrics), methods=["GET"]),
        Route("/api/console/writes", guarded(panels.writes, MAX_WRITES), methods=["GET"]),
        Route("/api/console/alerts", guarded(panels.alerts, MAX_ALERTS), methods=["GET"]),
    ]
