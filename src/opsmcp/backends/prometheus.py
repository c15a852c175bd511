"""Thin Prometheus HTTP API adapter (``/api/v1/*``) over ``httpx``, plus reachability checks.

One :class:`PrometheusBackend` per server: an ``httpx.AsyncClient`` with bounded connect and
read timeouts (``OPSMCP_BACKEND_TIMEOUT_SECONDS``) and optional bearer or basic auth. Every
call returns the ``data`` member of Prometheus's JSON envelope, or raises:

* :class:`~opsmcp.errors.InvalidInput` when Prometheus refuses the request (HTTP 400/422,
  ``status: error``): the message carries Prometheus's own ``errorType`` and ``error``
  text, which for PromQL holds the ``line:column`` position of a parse error;
* :class:`~opsmcp.errors.BackendUnavailable` when the server does not answer within the
  timeout, refuses the connection, or answers 5xx (the message names the URL);
* :class:`~opsmcp.errors.OpsError` for any other unexpected answer (401/403 say which
  setting to check).

:func:`check_reachability` is what ``opsmcp doctor`` runs for Prometheus, Alertmanager
and the alert store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from opsmcp.config import Settings
from opsmcp.errors import BackendUnavailable, InvalidInput, OpsError
from opsmcp.logsetup import backend_call_line, backends_log

#: Prometheus refuses range queries that would return more points per series than this.
MAX_POINTS_PER_SERIES = 11_000


def _ts(t: datetime) -> str:
    """A time as Prometheus's API takes it: Unix seconds (float text)."""
    return f"{t.timestamp():.3f}"


class PrometheusBackend:
    """Calls to one Prometheus server's HTTP API.

    Args:
        url: the base URL (``http://prometheus:9090``; a path prefix is kept).
        timeout: connect and read timeout per call, seconds.
        token: bearer token, if any.
        username, password: basic auth, if any (ignored when ``token`` is set).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        self._auth: httpx.BasicAuth | None = None
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif username:
            self._auth = httpx.BasicAuth(username, password or "")
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PrometheusBackend:
        """The backend for ``settings.prometheus_url`` with its auth settings.

        Raises:
            ValueError: ``prometheus_url`` is unset.
        """
        if not settings.prometheus_url:
            raise ValueError("prometheus_url is not set")
        return cls(
            settings.prometheus_url,
            settings.backend_timeout_seconds,
            settings.prometheus_token.get_secret_value() if settings.prometheus_token else None,
            settings.prometheus_username,
            settings.prometheus_password.get_secret_value() if settings.prometheus_password else None,
        )

    def _http(self) -> httpx.AsyncClient:
        """The shared client, made once per event loop (an httpx client belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                base_url=self.url,
                headers=self._headers,
                auth=self._auth,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
            )
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client (tests; the server keeps it for its lifetime)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def get(self, path: str, params: dict[str, Any] | list[tuple[str, str]] | None = None) -> Any:
        """``GET {url}{path}`` (``path`` like ``/api/v1/query``); POST is used for queries
        whose parameters are long (Prometheus accepts form-encoded POST on query endpoints).

        Returns:
            the ``data`` member of the JSON answer.

        Raises:
            InvalidInput, BackendUnavailable, OpsError: see the module doc.
        """
        what = f"{self.url}{path}"
        items: list[tuple[str, str | int | float | bool | None]] = [(str(k), str(v)) for k, v in (
            params.items() if isinstance(params, dict) else params or []
        )]
        long = sum(len(str(k)) + len(str(v)) for k, v in items) > 2000
        started = time.perf_counter()
        try:
            if long and path in ("/api/v1/query", "/api/v1/query_range", "/api/v1/series", "/api/v1/labels"):
                resp = await self._http().post(path, data=dict(items))
            else:
                resp = await self._http().get(path, params=items)
            if backends_log.isEnabledFor(logging.DEBUG):
                backend_call_line("prometheus", path, time.perf_counter() - started, f"HTTP {resp.status_code}")
        except UnicodeEncodeError as exc:  # e.g. a lone surrogate in the query text
            raise InvalidInput(
                f"The request to {path} holds text that cannot be encoded ({exc.reason}).",
                "remove unpaired surrogate or control characters from the query and labels.",
            ) from exc
        except httpx.TimeoutException as exc:
            backend_call_line("prometheus", path, time.perf_counter() - started, type(exc).__name__)
            raise BackendUnavailable(
                f"Prometheus at {self.url} did not answer within {self.timeout:g} s ({path}).",
                "narrow the query (shorter window, larger step_seconds, fewer series) or check that Prometheus is up.",
            ) from exc
        except httpx.HTTPError as exc:
            backend_call_line("prometheus", path, time.perf_counter() - started, type(exc).__name__)
            raise BackendUnavailable(
                f"Could not reach Prometheus at {self.url} ({type(exc).__name__}: {exc}).",
                "check that Prometheus is up and OPSMCP_PROMETHEUS_URL is right; `opsmcp doctor` checks it.",
            ) from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "success":
            return body.get("data")
        if isinstance(body, dict) and body.get("status") == "error" and resp.status_code in (400, 422):
            raise InvalidInput(
                f"Prometheus rejected the request ({body.get('errorType', 'error')}): {body.get('error', '')}",
                "fix the PromQL at the line:column shown (metric names and label values are case-sensitive); "
                "list_prometheus_metrics and label_values show what exists.",
            )
        if resp.status_code in (401, 403):
            raise OpsError(
                f"Prometheus at {self.url} refused access (HTTP {resp.status_code}) to {path}.",
                "set OPSMCP_PROMETHEUS_TOKEN or OPSMCP_PROMETHEUS_USERNAME/PASSWORD.",
            )
        if resp.status_code >= 500 or resp.status_code == 503:
            detail = body.get("error", "") if isinstance(body, dict) else resp.text[:200]
            raise BackendUnavailable(
                f"Prometheus at {self.url} failed with HTTP {resp.status_code} on {path}: {detail}".rstrip(": "),
                "retry later, or narrow the query (a timeout or too many samples shows here).",
            )
        raise OpsError(f"Unexpected answer from {what}: HTTP {resp.status_code}: {resp.text[:200]}")

    async def query_range(self, query: str, start: datetime, end: datetime, step_seconds: int) -> dict[str, Any]:
        """``/api/v1/query_range``: ``{"resultType": "matrix", "result": [{metric, values}]}``."""
        params = {"query": query, "start": _ts(start), "end": _ts(end), "step": str(step_seconds)}
        data: dict[str, Any] = await self.get("/api/v1/query_range", params)
        return data

    async def query(self, query: str, at: datetime | None = None) -> dict[str, Any]:
        """``/api/v1/query``: ``{"resultType": vector|scalar|string|matrix, "result": ...}``."""
        params = {"query": query}
        if at is not None:
            params["time"] = _ts(at)
        data: dict[str, Any] = await self.get("/api/v1/query", params)
        return data

    async def metadata(self, metric: str | None = None) -> dict[str, list[dict[str, str]]]:
        """``/api/v1/metadata``: ``{name: [{"type", "help", "unit"}]}`` (all metrics or one)."""
        data: dict[str, list[dict[str, str]]] = await self.get(
            "/api/v1/metadata", {"metric": metric} if metric else None
        )
        return data or {}

    async def label_names(self, match: str | None = None) -> list[str]:
        """``/api/v1/labels`` (optionally of the series matching selector ``match``)."""
        data: list[str] = await self.get("/api/v1/labels", [("match[]", match)] if match else None)
        return data or []

    async def label_values(self, label: str, match: str | None = None) -> list[str]:
        """``/api/v1/label/<label>/values`` (optionally of the series matching ``match``)."""
        data: list[str] = await self.get(f"/api/v1/label/{label}/values", [("match[]", match)] if match else None)
        return data or []


async def _ready(url: str, timeout: float, headers: dict[str, str] | None = None) -> tuple[bool, str]:
    """GET ``{url}/-/ready``: ``(ok, detail)``."""
    try:
        async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
            resp = await client.get(url.rstrip("/") + "/-/ready")
    except httpx.HTTPError as exc:
        return False, f"{url} unreachable ({type(exc).__name__}: {exc})"
    if resp.status_code == 200:
        return True, f"{url} ready"
    return False, f"{url}/-/ready answered HTTP {resp.status_code}"


def check_reachability(settings: Settings) -> list[tuple[str, bool, str]]:
    """``opsmcp doctor``'s checks for Prometheus, Alertmanager and the alert webhook.

    Returns one ``(label, ok, detail)`` per check; nothing when neither URL is set.
    Prometheus: ``/-/ready`` and one instant query (``vector(1)``) through the same client
    the toolset uses (auth included). Alertmanager: ``/-/ready``. Webhook: the alert
    store's directory is writable (or the DynamoDB table is named), and the route's path.
    """
    import anyio

    results: list[tuple[str, bool, str]] = []

    async def run() -> None:
        if settings.prometheus_url:
            backend = PrometheusBackend.from_settings(settings)
            ok, detail = await _ready(settings.prometheus_url, settings.backend_timeout_seconds, backend._headers)
            if ok:
                try:
                    await backend.query("vector(1)")
                    detail += ", instant query answered"
                except OpsError as exc:
                    ok, detail = False, str(exc)
                finally:
                    await backend.aclose()
            results.append(("prometheus", ok, detail))
        if settings.alertmanager_url:
            ok, detail = await _ready(settings.alertmanager_url, settings.backend_timeout_seconds)
            results.append(("alertmanager", ok, detail))

    anyio.run(run)
    if settings.alertmanager_url or settings.alerts_table:
        if settings.alerts_table:
            where = f"DynamoDB table {settings.alerts_table}"
            results.append(("alert webhook", True, f"POST /webhooks/alertmanager → {where}"))
        else:
            path = Path(settings.data_dir)
            parent = next((p for p in [path, *path.parents] if p.exists()), path)
            writable = os.access(parent, os.W_OK)
            results.append((
                "alert webhook",
                writable,
                f"POST /webhooks/alertmanager → {path / 'alerts.json'}" if writable else f"{path} is not writable",
            ))
    return results
