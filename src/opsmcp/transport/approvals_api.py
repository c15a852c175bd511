"""The approvals HTTP API (``OPSMCP_WRITE_APPROVAL=human``): what the console, ``opsmcp
approvals`` and a chat link call to see and decide approval requests.

Routes (mounted by :mod:`opsmcp.transport.app`, behind the same Host/Origin policy and
bearer authentication as every route; no cookies):

- ``GET /api/approvals?status=pending|all&limit=N`` (``ops:read``) →
  ``{"approvals": [Request, ...]}``, newest first (``status`` default ``pending``,
  ``limit`` 1-500, default 100).
- ``GET /api/approvals/{id}`` (``ops:read``) → ``Request``; 404 for an unknown id.
- ``POST /api/approvals/{id}/approve`` (``ops:approve``), optional JSON body ``{}`` → 200
  ``Request`` after the write ran (``done`` or ``failed``).
- ``POST /api/approvals/{id}/deny`` (``ops:approve``), body ``{"reason": "..."}`` (at most
  500 characters) → 200 ``Request`` (``denied``).

Both POSTs answer 409 when the request is not pending (decided, running, done, expired),
403 without ``ops:approve`` or when the approver is the requester (unless allowed by
``OPSMCP_APPROVAL_ALLOW_SELF``), 404 for an unknown id, 400 for a malformed body. Every
error is ``{"error": "..."}``. ``Request`` is :meth:`~opsmcp.calls.approval_desk.ApprovalDesk.view`.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsmcp.calls.approval_desk import MAX_REASON_CHARS, ApprovalConflict, ApprovalForbidden
from opsmcp.calls.identity import APPROVE_SCOPE, READ_SCOPE, caller, scopes
from opsmcp.errors import NotFound, OpsError

#: Largest request body accepted (bytes).
MAX_BODY_BYTES = 8_192
MAX_LIMIT = 500


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers={"Cache-Control": "no-store"})


def _ok(body: Any) -> JSONResponse:
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _lacks(scope: str) -> JSONResponse | None:
    if scope in scopes.get():
        return None
    return _error(f"{caller.get()} may not do this: it needs scope {scope}.", 403)


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object body (empty body: ``{}``), read up to :data:`MAX_BODY_BYTES`.

    Raises:
        ValueError: too large, not JSON, or not an object.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ValueError(f"body larger than {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise ValueError(f"body larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


async def decision(desk: Any, request_id: str, approve: bool, reason: Any) -> JSONResponse:
    """Decide ``request_id`` as the current caller (:meth:`ApprovalDesk.decide`) and answer as
    the API does: 200 the request, 400 a bad reason, 403, 404, 409, 503 (see the module doc)."""
    if reason is not None and not isinstance(reason, str):
        return _error("reason must be a string", 400)
    if reason is not None and len(reason) > MAX_REASON_CHARS:
        return _error(f"reason is {len(reason)} characters; at most {MAX_REASON_CHARS}", 400)
    try:
        decided = await desk.decide(request_id, approve, reason)
    except NotFound as exc:
        return _error(exc.message, 404)
    except ApprovalForbidden as exc:
        return _error(str(exc), 403)
    except ApprovalConflict as exc:
        return _error(str(exc), 409)
    except OpsError as exc:
        return _error(str(exc), 503)
    return _ok(desk.view(decided))


def routes(runtime: Any) -> list[Route]:
    """The ``/api/approvals`` routes for ``runtime`` (an :class:`opsmcp.calls.runtime.Runtime`;
    its approval flow's desk holds the requests)."""
    desk = runtime.approvals.desk

    async def listing(request: Request) -> Response:
        if (refused := _lacks(READ_SCOPE)) is not None:
            return refused
        status = request.query_params.get("status", "pending")
        raw_limit = request.query_params.get("limit", "100")
        if status not in ("pending", "all"):
            return _error(f"status={status[:40]!r} is not allowed; use pending or all.", 400)
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
            return _error(f"limit={raw_limit[:40]!r} is not allowed; use a whole number from 1 to {MAX_LIMIT}.", 400)
        try:
            found = await desk.list(status, int(raw_limit))
        except OpsError as exc:
            return _error(str(exc), 503)
        return _ok({"approvals": [desk.view(r) for r in found]})

    async def one(request: Request) -> Response:
        if (refused := _lacks(READ_SCOPE)) is not None:
            return refused
        request_id = request.path_params["id"]
        try:
            found = await desk.get(request_id)
        except OpsError as exc:
            return _error(str(exc), 503)
        if found is None:
            return _error(f"no approval request {request_id[:60]!r}", 404)
        return _ok(desk.view(found))

    async def decide(request: Request, approve: bool) -> Response:
        if (refused := _lacks(APPROVE_SCOPE)) is not None:
            return refused
        try:
            body = await _body(request)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(f"malformed body: {exc}", 400)
        return await decision(desk, request.path_params["id"], approve, body.get("reason"))

    async def approve(request: Request) -> Response:
        return await decide(request, True)

    async def deny(request: Request) -> Response:
        return await decide(request, False)

    return [
        Route("/api/approvals", listing, methods=["GET"]),
        Route("/api/approvals/{id}", one, methods=["GET"]),
        Route("/api/approvals/{id}/approve", approve, methods=["POST"]),
        Route("/api/approvals/{id}/deny", deny, methods=["POST"]),
    ]
