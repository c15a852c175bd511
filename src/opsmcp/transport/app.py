"""One Starlette app for every HTTP transport.

Routes: ``/mcp`` (streamable HTTP), ``/sse`` + ``/messages/`` (legacy SSE), ``/events``
(the typed SSE feed for custom UIs) and the live page at ``/`` (:mod:`opsmcp.transport.console`),
``/healthz`` (liveness),
``/readyz`` (readiness: start-up done and a cheap backend call answers), ``/metrics``
(Prometheus), ``/api/approvals`` (approval requests, :mod:`opsmcp.transport.approvals_api`),
``/api/console/*`` (what the console shows at load, :mod:`opsmcp.transport.console_api`),
and with OAuth the RFC 9728 metadata
at ``/.well-known/oauth-protected-resource/mcp``.

Every request passes, outermost first:

1. :class:`~opsmcp.transport.origin.HostOriginPolicy`: the one Host/Origin policy, on every route and
   every bind address (the SDK's own loopback-only check is switched off).
2. Authentication (when tokens, a tokens file or a JWKS are configured; see
   :mod:`opsmcp.transport.auth`): the SDK's bearer middleware; every route but the open ones
   (:data:`OPEN_PATHS`) answers 401 with ``WWW-Authenticate`` without a valid token.
3. :class:`IdentityMiddleware`: sets :data:`opsmcp.calls.identity.caller` and ``scopes`` for the
   choke point, audit records and ``/events``.

``POST /webhooks/alertmanager`` takes Alertmanager's own credential: ``OPSMCP_WEBHOOK_TOKEN``
(bearer, or basic-auth password; checked here, before the bearer middleware) or a token
with scope ``alerts:write`` (checked by the route). Without any authentication configured
the server is open, the webhook too.
"""

from __future__ import annotations

import re

from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.routes import create_protected_resource_routes
from mcp.server.transport_security import TransportSecuritySettings
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from opsmcp import __version__
from opsmcp.calls.identity import ALERTS_SCOPE, ALL_SCOPES, KNOWN_SCOPES, READ_SCOPE, caller, scopes
from opsmcp.calls.runtime import Runtime
from opsmcp.transport import approvals_api, console_api
from opsmcp.transport import console as live
from opsmcp.config import weak_token_problem
from opsmcp.errors import OpsError
from opsmcp.transport.auth import HttpAuth, build_http_auth, webhook_token_matches
from opsmcp.transport.chat_callback import PATH as CHAT_CALLBACK
from opsmcp.transport.chat_callback import chat_callback_route
from opsmcp.transport.console_panels import Panels
from opsmcp.transport.origin import HostOriginPolicy
from opsmcp.transport.rpc_ids import RequestIdGuard
from opsmcp.transport.webhooks import PATH as WEBHOOK_PATH
from opsmcp.transport.webhooks import alertmanager_route

#: Routes that answer without a token (probes and the OAuth metadata), still under the Host/Origin policy.
OPEN_PATHS = ("/healthz", "/readyz", "/", *live.STATIC_PATHS,  # the page holds no data; its feed needs a token
              CHAT_CALLBACK)  # signed by the chat bot (HMAC), not a bearer token; 404 unless configured
OPEN_PREFIXES = ("/.well-known/oauth-protected-resource",)
#: Routes that show tool activity: they need ``ops:read``.
READ_PATHS = ("/events", "/metrics")


class IdentityMiddleware:
    """Set the caller's subject and scopes (contextvars) for the rest of the request.

    An authenticated request gets its token's subject and scopes; without configured
    authentication the subject is ``http:<client ip>`` with every scope (``alerts:write``
    too, unless ``OPSMCP_WEBHOOK_TOKEN`` is set). ``/events`` and ``/metrics`` need
    ``ops:read`` (403 otherwise).
    """

    def __init__(self, app: ASGIApp, open_scopes: frozenset[str] = ALL_SCOPES) -> None:
        self.app = app
        self.open_scopes = open_scopes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        if isinstance(user, AuthenticatedUser):
            subject = user.access_token.subject or user.access_token.client_id
            granted = frozenset(user.scopes)
        else:
            subject, granted = f"http:{(scope.get('client') or ('unknown', 0))[0]}", self.open_scopes
        if scope["path"] in READ_PATHS and READ_SCOPE not in granted:
            body = {"error": "insufficient_scope", "error_description": f"Required scope: {READ_SCOPE}"}
            challenge = f'Bearer error="insufficient_scope", scope="{READ_SCOPE}"'
            response = JSONResponse(body, status_code=403, headers={"WWW-Authenticate": challenge})
            await response(scope, receive, send)
            return
        who, what = caller.set(subject), scopes.set(granted)
        try:
            await self.app(scope, receive, send)
        finally:
            caller.reset(who)
            scopes.reset(what)


class AuthGate:
    """Route a request to the open app (probes, OAuth metadata), to the webhook with
    Alertmanager's own token, or through authentication."""

    def __init__(self, app: ASGIApp, auth: HttpAuth | None, runtime: Runtime | None = None) -> None:
        self.open = app
        self.settings = runtime.settings if runtime is not None else None
        webhook_token = self.settings is not None and self.settings.webhook_token is not None
        inner = IdentityMiddleware(app, ALL_SCOPES if webhook_token else KNOWN_SCOPES)
        if auth is None:
            self.protected: ASGIApp = inner
        else:
            self.protected = AuthenticationMiddleware(
                AuthContextMiddleware(RequireAuthMiddleware(inner, [], auth.resource_metadata_url)),
                backend=BearerAuthBackend(auth.verifier))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):  # lifespan: open
            await self.open(scope, receive, send)
        elif path == WEBHOOK_PATH and self.settings is not None and webhook_token_matches(
                self.settings, Headers(scope=scope).get("authorization")):
            who, what = caller.set("alertmanager-webhook"), scopes.set(frozenset({ALERTS_SCOPE}))
            try:
                await self.open(scope, receive, send)
            finally:
                caller.reset(who)
                scopes.reset(what)
        else:
            await self.protected(scope, receive, send)


def resource_url(runtime: Runtime, host: str, port: int | None) -> str:
    """This server's ``/mcp`` URL: ``OPSMCP_PUBLIC_URL`` + ``/mcp``, else from the bind address."""
    if runtime.settings.public_url:
        return runtime.settings.public_url.rstrip("/") + "/mcp"
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port or 3001}/mcp"


def build_app(server: MCPServer, runtime: Runtime, host: str = "127.0.0.1", port: int | None = None) -> ASGIApp:
    """The combined app for ``server`` bound to ``host``:``port`` (see module doc).

    Raises:
        OpsError: the authentication settings are unusable (malformed tokens file, JWKS
            without issuer).
    """
    settings = runtime.settings
    weak = weak_token_problem(settings, host)
    if weak:
        raise OpsError(f"refusing to serve: {weak}")
    auth = build_http_auth(settings, resource_url(runtime, host, port))
    ours = TransportSecuritySettings(enable_dns_rebinding_protection=False)  # HostOriginPolicy covers every route
    app = server.streamable_http_app(host=host, transport_security=ours)
    sse = server.sse_app(host=host, transport_security=ours)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "ready": _ready(runtime)[0],
                             "tools": sorted(runtime.tools), "sandbox": settings.sandbox,
                             "writes_enabled": settings.allow_writes, "disabled_toolsets": runtime.disabled})

    async def readyz(request: Request) -> Response:
        ready, reason = _ready(runtime)
        if ready and runtime.backend_check is not None:  # the backends answer (credentials, endpoint)
            failed = await runtime.backend_check()
            ready, reason = failed is None, failed or reason
        body = {"status": "ready" if ready else "not ready", "reason": reason, "disabled_toolsets": runtime.disabled}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        return Response(runtime.stats.render(), media_type=runtime.stats.content_type)

    app.router.routes.extend(sse.routes)
    app.router.routes.extend([
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ])
    panels = Panels(runtime)  # what the console shows at load
    app.router.routes.extend(live.routes(runtime, panels))  # /events, the console at / and its scripts
    app.router.routes.extend(console_api.routes(runtime, panels))  # /api/console/*
    app.router.routes.extend(approvals_api.routes(runtime))  # /api/approvals
    if auth is not None and auth.oauth is not None and auth.oauth.resource_server_url is not None:
        app.router.routes.extend(create_protected_resource_routes(
            resource_url=auth.oauth.resource_server_url, authorization_servers=[auth.oauth.issuer_url],
            scopes_supported=sorted(KNOWN_SCOPES), resource_name="opsmcp"))
    app.router.routes.append(alertmanager_route(runtime))  # POST /webhooks/alertmanager
    app.router.routes.append(chat_callback_route(runtime))  # POST /webhooks/approvals (signed chat callbacks)
    gated: ASGIApp = AuthGate(RequestIdGuard(app), auth, runtime)  # ids the SDK would drop: answered -32600
    if settings.allowed_origins:  # browsers on the configured origins may call /events and /mcp
        gated = cors(gated, settings.allowed_origins)
    return HostOriginPolicy(gated, host, settings.allowed_hosts, settings.allowed_origins)


def cors(app: ASGIApp, origins: list[str]) -> ASGIApp:
    """Starlette's CORS middleware for the configured ``OPSMCP_ALLOWED_ORIGINS`` only (exact
    origins, ``scheme://host:*`` patterns, or ``*``). It answers preflights itself, before
    authentication (a preflight carries no token), and adds the CORS headers to answers."""
    from starlette.middleware.cors import CORSMiddleware

    exact = [o for o in origins if "*" not in o or o == "*"]
    patterns = [re.escape(o).replace(r"\*", r"[0-9]+") for o in origins if "*" in o and o != "*"]
    return CORSMiddleware(app, allow_origins=exact, allow_origin_regex="|".join(patterns) or None,
                          allow_methods=["GET", "POST", "DELETE"],
                          allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Mcp-Session-Id",
                                         "Mcp-Protocol-Version"],
                          expose_headers=["Mcp-Session-Id"], max_age=600)


def _ready(runtime: Runtime) -> tuple[bool, str]:
    """Whether the backends are ready, and why not (sandbox still starting, start-up error)."""
    if not runtime.ready.is_set():
        return False, "starting: the embedded sandbox is not ready yet"
    if runtime.startup_error:
        return False, runtime.startup_error
    return True, "ready"
