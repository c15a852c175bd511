"""``POST /webhooks/approvals``: a chat bot approves or denies a request on behalf of a person,
with an HMAC-signed callback instead of a bearer token.

A Slack incoming webhook is one-way; a chat bot (a Slack app with buttons, a Teams or
Mattermost bot) that has verified which person clicked can call back here. The route is
open to the bot (no bearer token: the signature is the credential) and answers 404 unless
``OPSMCP_CHAT_CALLBACK_SECRET`` is set.

Request: JSON ``{"id": "apr-...", "action": "approve"|"deny", "user": "<chat user id>",
"reason": "..."}`` with headers ``X-Opsmcp-Timestamp: <unix seconds>`` and
``X-Opsmcp-Signature: sha256=<hex HMAC-SHA256 under the secret of "<timestamp>.<raw body>">``.

What makes it sound:

- the signature (constant-time compare) and a timestamp within :data:`MAX_SKEW_SECONDS`
  (a replay later than that is refused; one within it finds the request already decided:
  409);
- only chat users mapped in ``OPSMCP_CHAT_APPROVERS`` (``chatuser=identity,...``) may decide,
  and they decide *as that identity*: the approver recorded in the audit log and checked
  against the requester (no self-approval unless ``OPSMCP_APPROVAL_ALLOW_SELF`` lists it);
- everything else is the HTTP API's path (:meth:`~opsmcp.calls.approval_desk.ApprovalDesk.decide`):
  one write per approval, held to the preview's bound.

The trust placed in the bot equals a token with ``ops:approve`` for each mapped identity:
whoever holds the secret can act as any of them. Keep the secret in the bot only, and map
only the people who approve.

Answers: 200 the request (as ``GET /api/approvals/{id}``), 400 malformed, 401 bad or stale
signature, 403 an unmapped user or self-approval, 404 unknown id (or callbacks off), 409
not pending.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opsmcp.calls.identity import APPROVE_SCOPE, READ_SCOPE, caller, scopes
from opsmcp.transport.approvals_api import decision

PATH = "/webhooks/approvals"
#: Largest callback body (bytes).
MAX_BODY_BYTES = 8_192
#: How far a callback's timestamp may be from now, seconds.
MAX_SKEW_SECONDS = 300


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Opsmcp-Signature`` value of ``body`` sent at ``timestamp``: ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def approvers(pairs: list[str]) -> dict[str, str]:
    """``OPSMCP_CHAT_APPROVERS`` entries ``chatuser=identity`` as a mapping (malformed ones skipped)."""
    out = {}
    for pair in pairs:
        user, _, identity = pair.partition("=")
        if user.strip() and identity.strip():
            out[user.strip()] = identity.strip()
    return out


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def chat_callback_route(runtime: Any) -> Route:
    """The ``POST /webhooks/approvals`` route for ``runtime`` (see the module doc)."""
    settings = runtime.settings
    desk = runtime.approvals.desk

    async def receive(request: Request) -> Response:
        secret = settings.chat_callback_secret
        if secret is None:
            return _error("chat callbacks are off: set OPSMCP_CHAT_CALLBACK_SECRET and OPSMCP_CHAT_APPROVERS", 404)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(f"body larger than {MAX_BODY_BYTES} bytes", 400)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _error(f"body larger than {MAX_BODY_BYTES} bytes", 400)
        stamp = request.headers.get("x-opsmcp-timestamp", "")
        given = request.headers.get("x-opsmcp-signature", "")
        expected = sign(secret.get_secret_value().encode(), stamp, bytes(body))
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _error("bad signature", 401)
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_SKEW_SECONDS:
            return _error(f"stale timestamp: a callback must be sent within {MAX_SKEW_SECONDS} s", 401)
        try:
            data = json.loads(body)
            request_id, action, user = str(data["id"]), data["action"], str(data["user"])
            reason = data.get("reason")
        except (ValueError, KeyError, TypeError):
            return _error('body must be {"id", "action", "user", "reason"?}', 400)
        if action not in ("approve", "deny"):
            return _error("action must be approve or deny", 400)
        identity = approvers(settings.chat_approvers).get(user)
        if identity is None:
            return _error(f"chat user {user[:80]!r} may not decide approvals (not in OPSMCP_CHAT_APPROVERS)", 403)
        who, what = caller.set(identity), scopes.set(frozenset({READ_SCOPE, APPROVE_SCOPE}))
        try:
            return await decision(desk, request_id, action == "approve", reason)
        finally:
            caller.reset(who)
            scopes.reset(what)

    return Route(PATH, receive, methods=["POST"])
