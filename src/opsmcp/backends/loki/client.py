"""Loki's HTTP API (httpx, sync) from settings, and its errors as tool errors.

Auth: a bearer token (``OPSMCP_LOKI_TOKEN``) or basic auth (``OPSMCP_LOKI_USERNAME`` +
``OPSMCP_LOKI_PASSWORD``); ``OPSMCP_LOKI_TENANT`` is sent as ``X-Scope-OrgID`` (multi-tenant
Loki). Every request is bounded by ``OPSMCP_BACKEND_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from opsmcp.errors import BackendUnavailable, InvalidInput, NotFound, OpsError

if TYPE_CHECKING:
    from opsmcp.config import Settings

MAX_BODY = 64 * 1024 * 1024  # the largest answer read (a query_range of 5,000 long lines fits)


def redact(url: str) -> str:
    """The URL without user info."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


class LokiClient:
    """GET/POST against one Loki, JSON in and out, errors as :mod:`opsmcp.errors` types.

    Args:
        url: Loki's base URL (``http://loki:3100``).
        timeout: seconds per request.
        headers: extra headers (auth, tenant).
        verify: verify TLS certificates.
        transport: an httpx transport (tests).
    """

    def __init__(self, url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None,
                 auth: tuple[str, str] | None = None, verify: bool = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = redact(url.rstrip("/"))
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers or {}, auth=auth,
                                  verify=verify, transport=transport, follow_redirects=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> LokiClient:
        """The client ``OPSMCP_LOKI_*`` describe.

        Raises:
            OpsError: no URL, or both a token and a user configured.
        """
        if not settings.loki_url:
            raise OpsError("OPSMCP_LOG_BACKEND=loki but OPSMCP_LOKI_URL is not set.",
                           "set OPSMCP_LOKI_URL, e.g. http://loki:3100.")
        headers: dict[str, str] = {}
        auth = None
        if settings.loki_token is not None and settings.loki_username:
            raise OpsError("Both OPSMCP_LOKI_TOKEN and OPSMCP_LOKI_USERNAME are set.",
                           "choose one way to authenticate.")
        if settings.loki_token is not None:
            headers["Authorization"] = f"Bearer {settings.loki_token.get_secret_value()}"
        elif settings.loki_username:
            if settings.loki_password is None:
                raise OpsError("OPSMCP_LOKI_USERNAME needs OPSMCP_LOKI_PASSWORD.", "set both, or neither.")
            auth = (settings.loki_username, settings.loki_password.get_secret_value())
        if settings.loki_tenant:
            headers["X-Scope-OrgID"] = settings.loki_tenant
        return cls(settings.loki_url, timeout=settings.backend_timeout_seconds, headers=headers, auth=auth,
                   verify=settings.loki_verify_tls)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, what: str, *, params: dict[str, Any] | None = None,
                json_body: Any = None, text: bool = False) -> Any:
        """One request; the parsed JSON answer (``None`` for an empty body; the body as text
        with ``text``).

        Raises:
            BackendUnavailable: unreachable, timed out, throttled (429) or a 5xx.
            InvalidInput: Loki refused the query (400), with its own reason.
            NotFound: 404 (the endpoint is not enabled, e.g. patterns).
            OpsError: 401/403 (auth) or anything else unexpected.
        """
        try:
            resp = self._http.request(method, path, params=params, json=json_body)
        except httpx.TimeoutException:
            raise BackendUnavailable(f"Loki at {self.url} did not answer {what} in time.",
                                     "retry, narrow the window, or raise OPSMCP_BACKEND_TIMEOUT_SECONDS.") from None
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"Cannot reach Loki at {self.url} ({type(exc).__name__}: {exc}).",
                                     "check OPSMCP_LOKI_URL and that Loki is up (`opsmcp doctor`).") from None
        reason = _reason(resp)
        if resp.status_code in (401, 403):
            raise OpsError(f"Loki at {self.url} refused {what} ({resp.status_code}): {reason}.",
                           "check OPSMCP_LOKI_TOKEN / OPSMCP_LOKI_USERNAME and OPSMCP_LOKI_TENANT (X-Scope-OrgID).")
        if resp.status_code == 404:
            raise NotFound(f"Loki at {self.url} has no {path} ({what}): {reason}.", "check OPSMCP_LOKI_URL.")
        if resp.status_code == 429:
            raise BackendUnavailable(f"Loki is throttling requests (429) for {what}: {reason}.",
                                     "retry in a few seconds, or narrow the window.")
        if resp.status_code == 400:
            raise InvalidInput(f"Loki rejected {what}: {reason}.", "narrow the window or simplify the filters.")
        if resp.status_code >= 500:
            raise BackendUnavailable(f"Loki {what} failed ({resp.status_code}): {reason}.",
                                     "retry; see `opsmcp doctor`.")
        if resp.status_code >= 300:
            raise OpsError(f"Loki {what} answered {resp.status_code}: {reason}.", "see `opsmcp doctor`.")
        if len(resp.content) > MAX_BODY:
            raise BackendUnavailable(f"Loki's answer to {what} is larger than {MAX_BODY:,} bytes.",
                                     "narrow the window or lower the limit.")
        if text:
            return resp.text
        if not resp.content.strip():
            return None
        try:
            return resp.json()
        except ValueError:
            raise OpsError(f"Loki answered {what} with something that is not JSON.", "check OPSMCP_LOKI_URL.") from None


def _reason(resp: httpx.Response) -> str:
    """Loki's own one-line reason (its bodies are plain text or {"message"/"error": ...})."""
    text = resp.text.strip()
    try:
        data = resp.json()
        if isinstance(data, dict):
            text = str(data.get("error") or data.get("message") or text)
    except ValueError:
        pass
    return " ".join(text.split())[:300] or resp.reason_phrase
