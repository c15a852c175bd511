"""The one Host/Origin policy (DNS-rebinding protection) for every HTTP route on every bind address.

A browser page can make a victim's browser send requests to opsmcp (a DNS name rebound to
127.0.0.1, or a page on another origin). Two headers tell such requests apart:

- ``Host``: a rebound name arrives as ``Host: evil.example``. Loopback names
  (``127.0.0.1``, ``localhost``, ``[::1]``), the bind address and ``OPSMCP_ALLOWED_HOSTS``
  pass. The check applies when bound to a loopback address or when
  ``OPSMCP_ALLOWED_HOSTS`` is set; bound to another address without that list the Host is
  not restricted (the server then requires a token; set the list behind a load balancer).
- ``Origin``: requests without one (CLI clients, agents, probes) pass; a browser request
  passes only when same-origin (its Origin's host:port is the request's Host) or listed in
  ``OPSMCP_ALLOWED_ORIGINS``, on every bind address.

Refused requests get ``403`` with a JSON body naming the header and the setting that would
allow it. The SDK's own (loopback-only) check is switched off by :mod:`opsmcp.transport.app` so
that this policy is the only one.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from opsmcp.config import is_loopback

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})


def _split_host(value: str) -> tuple[str, str | None]:
    """``"Example.com:3001"`` → ``("example.com", "3001")``; ``"[::1]:80"`` → ``("::1", "80")``."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[1:end], value[end + 1:]
        return name, rest[1:] if rest.startswith(":") else None
    if value.count(":") > 1:
        return value, None  # a bare IPv6 address, no port
    name, _, port = value.partition(":")
    return name, port or None


def _host_matches(pattern: str, host: str) -> bool:
    """``pattern`` is ``name`` (any port), ``name:port`` or ``name:*``; ``host`` a Host header."""
    p_name, p_port = _split_host(pattern)
    h_name, h_port = _split_host(host)
    return p_name == h_name and (p_port in (None, "*") or p_port == h_port)


def _origin_matches(pattern: str, origin: str) -> bool:
    """``pattern`` is ``*``, ``scheme://host[:port]`` or ``scheme://host:*``."""
    if pattern.strip() == "*":
        return True
    pattern = pattern.strip().rstrip("/").lower()
    origin = origin.strip().rstrip("/").lower()
    if pattern.endswith(":*"):
        p = urlsplit(pattern[:-2])
        o = urlsplit(origin)
        return p.scheme == o.scheme and p.hostname == o.hostname
    return pattern == origin


class HostOriginPolicy:
    """ASGI middleware enforcing the module's Host/Origin policy on every HTTP request.

    Args:
        app: the wrapped application.
        bind_host: the address the server listens on (``--host``).
        allowed_hosts: extra Host values (``name``, ``name:port``, ``name:*``).
        allowed_origins: extra browser Origins (``https://ui.example``, ``http://localhost:*``, ``*``).
    """

    def __init__(self, app: ASGIApp, bind_host: str, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        self.app = app
        self.allowed_origins = list(allowed_origins)
        self.hosts = [*LOOPBACK_NAMES, *allowed_hosts]
        try:
            if not ipaddress.ip_address(bind_host.strip("[]")).is_unspecified:
                self.hosts.append(bind_host)
        except ValueError:
            self.hosts.append(bind_host)  # a name such as "ops.internal"
        self.check_host = is_loopback(bind_host) or bool(allowed_hosts)

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request with these ``Host`` / ``Origin`` headers is refused, or ``None``."""
        if self.check_host and not (host and any(_host_matches(p, host) for p in self.hosts)):
            return f"Host {host!r} is not allowed (DNS-rebinding protection); add it to OPSMCP_ALLOWED_HOSTS"
        if origin is None:
            return None
        same = host is not None and urlsplit(origin.strip()).netloc.lower() == host.strip().lower()
        if same or any(_origin_matches(p, origin) for p in self.allowed_origins):
            return None
        return f"Origin {origin!r} is not allowed; add it to OPSMCP_ALLOWED_ORIGINS"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        why = self.refusal(headers.get(b"host"), headers.get(b"origin"))
        if why:
            await JSONResponse({"error": "forbidden", "error_description": why}, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)
