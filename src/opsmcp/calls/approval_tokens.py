"""Approval tokens for the confirm path (``OPSMCP_WRITE_APPROVAL=prompt-or-confirm``): signed,
self-contained, single use.

A token is ``opsa1.<payload>.<mac>``: the payload (base64url JSON: tool ``t``, argument
digest ``a``, bound ``b``, caller subject ``s``, expiry ``e`` in epoch seconds, nonce
``n``) and HMAC-SHA256 of it under a key derived from the server secret
(``OPSMCP_APPROVAL_SECRET``). Any replica with the same secret verifies it; it is spent
once through the audit sink's ``claim_once`` (:meth:`ApprovalTokens.use`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from opsmcp.errors import OpsError


class ApprovalRefused(OpsError):
    """A real write's approval token cannot be verified or was already used; nothing acted."""


@dataclass(frozen=True)
class Grant:
    """What a verified approval token allows: ``bound`` (or None), its one-time ``nonce``,
    and ``expires_at`` (epoch seconds)."""

    bound: int | None
    nonce: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ApprovalTokens:
    """Signed, self-contained approvals for the confirm path.

    A token is ``opsa1.<payload>.<mac>``: the payload (base64url JSON: tool ``t``, argument
    digest ``a``, bound ``b``, caller subject ``s``, expiry ``e`` in epoch seconds, nonce
    ``n``) and HMAC-SHA256 of it under a key derived from the server secret. Any replica with
    the same secret verifies it; nothing is stored until it is used (:meth:`use`).

    Args:
        secret: the shared secret (``OPSMCP_APPROVAL_SECRET``); random bytes when None.
        ttl: seconds a token stays valid.
        clock: epoch-seconds clock (tests move it).
    """

    PREFIX = "opsa1"

    def __init__(self, secret: bytes | None, ttl: float, clock: Callable[[], float] = time.time) -> None:
        material = secret if secret is not None else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"opsmcp approval token v1\0" + material).digest()
        self.ttl = ttl
        self.clock = clock
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{self.PREFIX}.{payload}".encode(), hashlib.sha256).digest())

    def mint(self, tool: str, digest: str, bound: int | None, subject: str) -> tuple[str, float]:
        """A token approving ``tool`` with the arguments of ``digest`` for ``subject``, capped at
        ``bound``, and its expiry (epoch seconds)."""
        expires = int(self.clock() + self.ttl)
        body = {"t": tool, "a": digest, "b": bound, "s": subject, "e": expires, "n": uuid.uuid4().hex}
        payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"{self.PREFIX}.{payload}.{self._mac(payload)}", float(expires)

    def verify(self, token: str, tool: str, digest: str, subject: str) -> Grant:
        """The :class:`Grant` of a valid ``token`` for this call.

        Raises:
            ApprovalRefused: altered or foreign (signature), expired, issued to another caller,
                for another tool or for other arguments.
        """
        again = "run the dry run again, show its preview to the user, and pass the new approval_token."
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != self.PREFIX or not hmac.compare_digest(self._mac(parts[1]), parts[2]):
            raise ApprovalRefused("Not done: the approval_token is not valid (altered, truncated, or issued by a "
                                  "server with another OPSMCP_APPROVAL_SECRET).", again)
        try:
            body = json.loads(_unb64(parts[1]))
            bound, expires, nonce = body["b"], float(body["e"]), str(body["n"])
        except (ValueError, KeyError, TypeError):
            raise ApprovalRefused("Not done: the approval_token cannot be read.", again) from None
        if self.clock() >= expires:
            raise ApprovalRefused(f"Not done: the approval_token expired {int(self.clock() - expires)} s ago "
                                  f"(tokens last {int(self.ttl)} s).", again)
        if body.get("s") != subject:
            raise ApprovalRefused("Not done: the approval_token was issued to another caller.", again)
        if body.get("t") != tool or body.get("a") != digest:
            raise ApprovalRefused("Not done: the approval_token approves other arguments (or another tool) than "
                                  "this call's; call with exactly the arguments of the approved dry run.", again)
        return Grant(bound=bound if isinstance(bound, int) else None, nonce=nonce, expires_at=expires)

    def use(self, grant: Grant, claim: Callable[[str, float], bool] | None = None) -> None:
        """Spend ``grant`` once: remembered here until it expires and, when ``claim`` is
        given (the audit sink's ``claim_once``: a claim file or a conditional write), claimed
        durably, so it stays spent after a restart and on other replicas.

        Raises:
            ApprovalRefused: the token was already used. OpsError: the claim could not be stored.
        """
        now = self.clock()
        with self._lock:
            self._used = {n: e for n, e in self._used.items() if e > now}
            if grant.nonce in self._used:
                raise ApprovalRefused("Not done: this approval_token was already used; one approval makes one "
                                      "change.", "run the dry run again and ask the user about the new preview.")
            self._used[grant.nonce] = grant.expires_at
        if claim is not None and not claim(grant.nonce, grant.expires_at):
            raise ApprovalRefused("Not done: this approval_token was already used (before a restart, or on another "
                                  "replica).",
                                  "run the dry run again and ask the user about the new preview.")
