"""``POST /webhooks/alertmanager``: Alertmanager's webhook receiver (payload version 4).

:func:`alertmanager_route` builds the Starlette route that :mod:`opsmcp.transport.app`
mounts. Alertmanager posts with its own credential, never a person's token: either
``OPSMCP_WEBHOOK_TOKEN`` (``http_config.authorization.credentials``, or the password of
``http_config.basic_auth``; the app checks it in constant time) or a token whose scopes
include ``alerts:write`` (``opsmcp token add alertmanager --scopes alerts:write``). Any
other identity, ``ops:read``/``ops:write`` included, gets 403. The body is read
with a size bound (``OPSMCP_ALERTS_MAX_PAYLOAD_BYTES``, 413 beyond it), validated, merged
into the alert store by fingerprint, and each new, resolved or re-fired alert is published
on the ``/events`` feed (``type: alert``). Answers: 200 with counts, 400 for a payload
that is not Alertmanager's, 404 when the alerts toolset is not enabled, 503 when the store
cannot be written (Alertmanager retries).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsmcp.backends.alertstore import parse_webhook
from opsmcp.calls.identity import ALERTS_SCOPE, caller, scopes
from opsmcp.errors import InvalidInput, OpsError

log = logging.getLogger("opsmcp.transport.webhooks")

PATH = "/webhooks/alertmanager"


async def _read_bounded(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes (stops reading there)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def alertmanager_route(runtime: Any) -> Route:
    """The ``POST /webhooks/alertmanager`` route for ``runtime`` (an :class:`opsmcp.calls.runtime.Runtime`).

    The store is ``runtime.alerts`` (None without the alerts toolset: 404).
    """

    async def receive(request: Request) -> Response:
        if ALERTS_SCOPE not in scopes.get():
            log.warning("alert webhook: %s posted without scope %s; refused", caller.get(), ALERTS_SCOPE)
            anonymous = "authorization" not in request.headers
            error = "invalid_token" if anonymous else "insufficient_scope"
            return JSONResponse({"error": error,
                                 "error_description": f"Required scope: {ALERTS_SCOPE}. Alertmanager posts with its "
                                 "own credential: OPSMCP_WEBHOOK_TOKEN, or a token with scope alerts:write."},
                                status_code=401 if anonymous else 403,
                                headers={"WWW-Authenticate": f'Bearer error="{error}", scope="{ALERTS_SCOPE}"'})
        store = runtime.alerts
        if store is None:
            return JSONResponse({"error": "alerts are not enabled: set OPSMCP_ALERTMANAGER_URL "
                                          "(or OPSMCP_ALERTS_TABLE) and keep 'alerts' in OPSMCP_TOOLSETS"},
                                status_code=404)
        limit = runtime.settings.alerts_max_payload_bytes
        body = await _read_bounded(request, limit)
        if body is None:
            return JSONResponse({"error": f"payload larger than {limit} bytes (OPSMCP_ALERTS_MAX_PAYLOAD_BYTES); "
                                          "lower max_alerts in the Alertmanager webhook config"}, status_code=413)
        try:
            alerts = parse_webhook(json.loads(body))
        except ValueError as exc:  # JSON syntax (InvalidInput is not a ValueError)
            return JSONResponse({"error": f"body is not JSON: {exc}"}, status_code=400)
        except InvalidInput as exc:
            return JSONResponse({"error": exc.message}, status_code=400)
        try:
            changes = await store.record(alerts)
        except OpsError as exc:
            log.error("alert webhook: %s", exc)
            return JSONResponse({"error": exc.message}, status_code=503)
        counts: dict[str, int] = {}
        for change in changes:
            counts[change.kind] = counts.get(change.kind, 0) + 1
            if change.kind != "repeat":
                a = change.alert
                runtime.publish({"type": "alert", "change": change.kind, "fingerprint": a.fingerprint,
                                 "alertname": a.labels.get("alertname"), "severity": a.labels.get("severity"),
                                 "status": a.status, "starts_at": a.starts_at, "at": time.time()})
        return JSONResponse({"received": len(changes), **counts})

    return Route(PATH, receive, methods=["POST"])
