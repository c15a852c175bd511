"""Who may call over HTTP: bearer tokens with a subject and scopes, and OAuth 2.1 JWTs.

Three sources of identities, any combination (tried in this order):

- ``OPSMCP_HTTP_TOKEN``: one shared token with every scope; its subject is
  ``OPSMCP_HTTP_TOKEN_SUBJECT`` (default ``token``).
- ``OPSMCP_TOKENS_FILE``: JSON Lines, one ``{"subject", "scopes", "sha256"}`` per token.
  Only the SHA-256 of each token is stored (tokens are 256-bit random strings, so a plain
  hash is enough); ``opsmcp token add`` appends entries and prints the token once. The file
  is re-read when it changes.
- ``OPSMCP_JWKS_URL``: JWTs signed by a key of that JWKS (PyJWT), with ``iss`` =
  ``OPSMCP_JWT_ISSUER`` and ``aud`` = ``OPSMCP_JWT_AUDIENCE`` (default: the resource URL),
  scopes from ``scope`` (space separated) or ``scp``. opsmcp is then an OAuth 2.1 resource
  server: it serves RFC 9728 protected resource metadata and its 401s point at it.

Each verifier implements the SDK's :class:`~mcp.server.auth.provider.TokenVerifier`; the
SDK's bearer middleware (scheme matched case-insensitively, RFC 9110) runs them. The
subject, never a hash of the secret, is what audit records and ``/events`` show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from pydantic import AnyHttpUrl

from opsmcp.calls.identity import ALL_SCOPES, KNOWN_SCOPES
from opsmcp.config import TOKEN_PREFIX, Settings
from opsmcp.errors import InvalidInput, OpsError
from opsmcp.private import open_private

log = logging.getLogger("opsmcp.transport.auth")

#: Signature algorithms accepted in JWTs: asymmetric only (no "none", no shared-secret HMAC).
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
MAX_TOKEN_CHARS = 8192


def hash_token(token: str) -> str:
    """Hex SHA-256 of ``token`` (UTF-8), as stored in the tokens file."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenEntry:
    """One identity of the tokens file: who (``subject``), what (``scopes``), and the token's hash."""

    subject: str
    scopes: tuple[str, ...]
    sha256: str


def load_token_entries(path: Path) -> list[TokenEntry]:
    """Read the tokens file (JSON Lines; blank lines and ``#`` comments skipped).

    Raises:
        OpsError: the file cannot be read, or a line is not ``{"subject", "scopes", "sha256"}``.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise OpsError(f"cannot read the tokens file {path}: {exc.strerror}", "check OPSMCP_TOKENS_FILE.") from exc
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
            scopes = item["scopes"]
            entry = TokenEntry(str(item["subject"]), tuple(scopes.split(",") if isinstance(scopes, str) else scopes),
                               str(item["sha256"]).lower())
        except (ValueError, KeyError, TypeError) as exc:
            raise OpsError(f"{path} line {number} is not a token entry",
                           'each line is {"subject": ..., "scopes": [...], "sha256": ...}; '
                           "`opsmcp token add` writes them.") from exc
        if len(entry.sha256) != 64:
            raise OpsError(f"{path} line {number}: sha256 must be 64 hex characters", "use `opsmcp token add`.")
        entries.append(entry)
    return entries


def add_token(path: Path, subject: str, scopes: list[str]) -> str:
    """Create a random token (``opsmcp_`` and 43 URL-safe characters, never starting with ``-``)
    for ``subject`` with ``scopes``, append its hash to ``path``
    (created with mode 0600) and return the token, which is stored nowhere.

    Raises:
        InvalidInput: an empty or malformed subject, or an unknown scope.
    """
    subject = subject.strip()
    if not subject or len(subject) > 200 or any(c.isspace() or not c.isprintable() for c in subject):
        raise InvalidInput("the subject must be 1-200 printable characters without spaces", "e.g. alice or ci-bot.")
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown or not scopes:
        raise InvalidInput(f"unknown scopes {unknown}" if unknown else "no scopes given",
                           f"choose from {', '.join(sorted(KNOWN_SCOPES))}.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    line = json.dumps({"subject": subject, "scopes": sorted(set(scopes)), "sha256": hash_token(token)})
    fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        if out.tell() and not path.read_bytes().endswith(b"\n"):
            out.write("\n")
        out.write(line + "\n")
    return token


class StaticTokenVerifier(TokenVerifier):
    """Opaque bearer tokens compared by SHA-256 (constant time) against known entries.

    ``entries`` are fixed; with ``path`` the tokens file is re-read whenever its mtime changes.
    """

    def __init__(self, entries: list[TokenEntry], path: Path | None = None) -> None:
        self.fixed = list(entries)
        self.path = path
        self.loaded: list[TokenEntry] = []
        self.mtime: float | None = None

    def entries(self) -> list[TokenEntry]:
        """The fixed entries plus the tokens file's current entries."""
        if self.path is not None:
            mtime = self.path.stat().st_mtime_ns if self.path.exists() else None
            if mtime != self.mtime:
                try:
                    self.loaded = load_token_entries(self.path) if mtime is not None else []
                except OpsError:
                    if self.mtime is None:
                        raise  # at start-up: refuse to serve with a broken file
                    log.error("tokens file %s is malformed; keeping its previous entries", self.path, exc_info=True)
                self.mtime = mtime
        return self.fixed + self.loaded

    async def verify_token(self, token: str) -> AccessToken | None:
        """The identity of ``token``, or ``None`` when no entry has its hash."""
        digest = hash_token(token.strip())
        found = None
        for entry in self.entries():
            if hmac.compare_digest(digest, entry.sha256):  # no early exit: timing says nothing
                found = entry
        if found is None:
            return None
        return AccessToken(token=token, client_id=found.subject, subject=found.subject, scopes=list(found.scopes))


def jwt_scopes(claims: dict[str, Any]) -> list[str] | None:
    """Scopes of a JWT: ``scope`` (space-separated string, RFC 8693/9068) or ``scp`` (list of
    strings, or a string). A missing or null claim means no scopes (``[]``); a claim of any
    other shape (a number, an object, a list holding non-strings) makes the token invalid
    (``None``), so a caller gets 401, never a server error."""
    raw = claims.get("scope")
    if raw is None:
        raw = claims.get("scp")
    if raw is None:
        return []
    if isinstance(raw, str):
        return raw.split()
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return [word for s in raw for word in s.split()]
    return None


class JwtVerifier(TokenVerifier):
    """JWT access tokens verified against a JWKS URL (PyJWT's :class:`jwt.PyJWKClient`, keys cached
    for 5 minutes), with issuer, audience, expiry and subject required."""

    def __init__(self, jwks_url: str, issuer: str, audience: str) -> None:
        import jwt

        self.jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)
        self.issuer = issuer
        self.audience = audience

    async def verify_token(self, token: str) -> AccessToken | None:
        """The identity in ``token``, or ``None`` when it is not a valid JWT for this server."""
        import anyio.to_thread
        import jwt

        token = token.strip()
        try:
            key = await anyio.to_thread.run_sync(self.jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(token, key, algorithms=JWT_ALGORITHMS, audience=self.audience, issuer=self.issuer,
                                options={"require": ["exp", "iss", "aud", "sub"]})
            granted = jwt_scopes(claims)
            if granted is None:
                log.info("JWT refused: its scope/scp claim is neither a string nor a list of strings")
                return None
            subject = str(claims["sub"])
            return AccessToken(token=token, client_id=str(claims.get("client_id") or claims.get("azp") or subject),
                               subject=subject, scopes=granted, expires_at=int(claims["exp"]),
                               resource=self.audience, claims={"iss": str(claims["iss"])})
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:  # any claim shape: 401, never 500
            log.debug("JWT refused: %s: %s", type(exc).__name__, exc)
            return None


class ChainVerifier(TokenVerifier):
    """The first identity any of ``verifiers`` finds; over-long tokens are refused unread."""

    def __init__(self, verifiers: list[TokenVerifier]) -> None:
        self.verifiers = verifiers

    async def verify_token(self, token: str) -> AccessToken | None:
        """See class doc."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        for verifier in self.verifiers:
            found = await verifier.verify_token(token)
            if found is not None:
                return found
        return None


def webhook_token_matches(settings: Settings, authorization: str | None) -> bool:
    """True when the ``Authorization`` header carries ``OPSMCP_WEBHOOK_TOKEN``: as a bearer
    token (scheme case-insensitive) or as the password of basic auth (any user name), the two
    credentials Alertmanager's ``http_config`` can send. Compared in constant time (SHA-256
    digests, so the length of the secret does not show either)."""
    if settings.webhook_token is None or not authorization:
        return False
    import base64
    import binascii

    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() == "basic":
        try:
            credential = base64.b64decode(credential, validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    if len(credential) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(hash_token(credential), hash_token(settings.webhook_token.get_secret_value()))


@dataclass
class HttpAuth:
    """What the HTTP app needs to authenticate: the verifier, and for OAuth the SDK's
    :class:`AuthSettings` (resource URL, authorization server) and the metadata URL."""

    verifier: TokenVerifier
    oauth: AuthSettings | None = None

    @property
    def resource_metadata_url(self) -> AnyHttpUrl | None:
        """The RFC 9728 metadata URL (``/.well-known/oauth-protected-resource/mcp``), OAuth only."""
        if self.oauth is None or self.oauth.resource_server_url is None:
            return None
        return build_resource_metadata_url(self.oauth.resource_server_url)


def build_http_auth(settings: Settings, resource_url: str) -> HttpAuth | None:
    """The HTTP authentication configured in ``settings``, or ``None`` (no token, file or JWKS).

    ``resource_url`` is this server's ``/mcp`` URL (the JWT audience unless one is configured).

    Raises:
        OpsError: the tokens file is malformed, or a JWKS URL without ``OPSMCP_JWT_ISSUER``.
    """
    verifiers: list[TokenVerifier] = []
    if settings.http_token or settings.tokens_file:
        fixed = [TokenEntry(settings.http_token_subject, tuple(sorted(ALL_SCOPES)), hash_token(settings.http_token))
                 ] if settings.http_token else []
        static = StaticTokenVerifier(fixed, settings.tokens_file)
        static.entries()  # a malformed file fails at start-up, not on the first request
        verifiers.append(static)
    oauth = None
    if settings.jwks_url:
        if not settings.jwt_issuer:
            raise OpsError("OPSMCP_JWKS_URL is set but OPSMCP_JWT_ISSUER is not",
                           "set the issuer (the authorization server URL) that signs the tokens.")
        verifiers.append(JwtVerifier(settings.jwks_url, settings.jwt_issuer, settings.jwt_audience or resource_url))
        oauth = AuthSettings(issuer_url=AnyHttpUrl(settings.jwt_issuer), resource_server_url=AnyHttpUrl(resource_url),
                             required_scopes=None, validate_token_resource=False)
    if not verifiers:
        return None
    return HttpAuth(ChainVerifier(verifiers), oauth)
