"""Approval by a person (``OPSMCP_WRITE_APPROVAL=human``): the desk where requests wait, are
decided, and where an approved write is run once.

A real write call creates an :class:`~opsmcp.calls.approval_store.ApprovalRequest`
(:meth:`ApprovalDesk.create`) and answers ``pending_approval`` at once; nothing changes
until a person decides through the HTTP API (:mod:`opsmcp.transport.approvals_api`: the
console, ``opsmcp approvals``, a chat link). :meth:`ApprovalDesk.decide`:

- refuses an identity without ``ops:approve``, and the requester itself unless listed in
  ``OPSMCP_APPROVAL_ALLOW_SELF`` (:class:`ApprovalForbidden`);
- claims the request with a compare-and-set ``pending -> approved`` on the shared store,
  so of two approvers racing (on one replica or two) one wins and the other gets
  :class:`ApprovalConflict`; an expired request is marked ``expired`` instead;
- runs the write in this process through the approval flow's executor (the same audited
  path as every write, held to the request's bound, as the requester, the approver
  recorded), shielded from the approver's HTTP request being cancelled, and stores its
  result (``done``) or error (``failed``).

Every step is an audit record with ``call_id`` = the request id (``requested``,
``approved`` / ``denied`` / ``expired``, then the write's ``intent`` and ``outcome``), and
an ``approval`` event on ``/events``. A request still ``approved`` / ``executing`` whose
process on this host is gone is marked ``failed`` (interrupted) when next read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from opsmcp.calls.approval_store import FINAL, ApprovalRequest, RequestStore, new_id
from opsmcp.calls.audit import HOST, pid_alive, redact
from opsmcp.calls.identity import APPROVE_SCOPE, caller, scopes
from opsmcp.errors import NotFound, OpsError
from opsmcp.times import iso

if TYPE_CHECKING:
    from opsmcp.calls.audit import AuditTrail
    from opsmcp.config import Settings

log = logging.getLogger("opsmcp")

#: Longest deny reason kept (characters).
MAX_REASON_CHARS = 500
#: Seconds between re-reads of the store while a call waits for a decision.
POLL_SECONDS = 1.0
#: Seconds between progress reports while a call waits for a decision.
REPORT_SECONDS = 5.0

#: ``async (request) -> the write's structured result``; raises OpsError when the write fails.
Executor = Callable[[ApprovalRequest], Awaitable[dict[str, Any]]]
#: ``async (progress, total, message)``: an MCP progress reporter.
Reporter = Callable[[float, float | None, str], Awaitable[None]]


class ApprovalForbidden(OpsError):
    """The identity may not decide this request (no ``ops:approve``, or it is the requester)."""


class ApprovalConflict(OpsError):
    """The request is not pending any more (decided, running, done, expired)."""


@dataclass
class ApprovalDesk:
    """Approval requests: create, read, decide, run once, wait (see the module doc).

    Args:
        settings: reads ``approval_request_ttl_seconds``, ``approval_max_pending``,
            ``approval_allow_self``, ``public_url``.
        trail: the audit trail (records and the ``/events`` publisher).
        store: where requests live (:func:`~opsmcp.calls.approval_store.store_for`).
        execute: runs an approved request's write (set by the approval flow).
        notify: called with each new request's :meth:`view` (chat notifications); must not block.
        clock: epoch seconds (tests move it).
    """

    settings: Settings
    trail: AuditTrail
    store: RequestStore
    execute: Executor | None = None
    notify: Callable[[dict[str, Any]], None] | None = None
    clock: Callable[[], float] = time.time
    _waiters: dict[str, set[anyio.Event]] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading -----
    def console_url(self, request_id: str) -> str:
        """The console's page of the request: ``<OPSMCP_PUBLIC_URL>/#/approvals/<id>``
        (relative without a public URL)."""
        base = (self.settings.public_url or "").rstrip("/")
        return f"{base}/#/approvals/{request_id}"

    def view(self, req: ApprovalRequest) -> dict[str, Any]:
        """The request as the HTTP API, ``get_approval`` and notifications show it
        (arguments redacted; times ISO-8601 UTC)."""
        bound = {"argument": req.bound_argument, "value": req.bound} if req.bound_argument else None
        return {"id": req.id, "tool": req.tool, "arguments": req.shown_arguments, "preview": req.preview,
                "bound": bound, "requester": req.requester, "created_at": iso(req.created_at),
                "expires_at": iso(req.expires_at), "status": req.status, "approver": req.approver,
                "reason": req.reason, "decided_at": iso(req.decided_at), "result": req.result, "error": req.error,
                "console_url": self.console_url(req.id)}

    async def get(self, request_id: str) -> ApprovalRequest | None:
        """The request (settled: an overdue pending one is marked expired, an interrupted
        one failed), or None for an unknown id."""
        req = await self.store.get(request_id)
        return await self._settle(req) if req is not None else None

    async def describe(self, request_id: str) -> dict[str, Any] | None:
        """:meth:`view` of the request, or None for an unknown id (``get_approval``'s lookup)."""
        req = await self.get(request_id)
        return self.view(req) if req is not None else None

    async def list(self, status: str = "pending", limit: int = 100) -> list[ApprovalRequest]:
        """Requests newest first: ``status`` ``"pending"`` or ``"all"``; at most ``limit``."""
        found = await self.store.list()
        settled = [await self._settle(r) for r in found]
        if status != "all":
            settled = [r for r in settled if r.status == status]
        settled.sort(key=lambda r: r.created_at, reverse=True)
        return settled[:max(0, limit)]

    async def _settle(self, req: ApprovalRequest) -> ApprovalRequest:
        now = self.clock()
        if req.status == "pending" and now >= req.expires_at:
            done = await self._move(req, frozenset({"pending"}), {"status": "expired", "decided_at": now,
                                                                  "error": "nobody decided before it expired"})
            if done is not None:
                await self._audit(done, "expired", "expired", actor="opsmcp")
            return done or await self._reread(req)
        if req.status in ("approved", "executing") and req.executor:
            host, _, pid = req.executor.rpartition(":")
            if host == HOST and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                note = "interrupted: the server running this write stopped; the audit log says how far it got"
                done = await self._move(req, frozenset({req.status}), {"status": "failed", "error": note})
                return done or await self._reread(req)
        return req

    async def _reread(self, req: ApprovalRequest) -> ApprovalRequest:
        return await self.store.get(req.id) or req

    # ------------------------------------------------------------------ creating ----
    async def create(self, tool: str, arguments: dict[str, Any], preview: str, bound_argument: str | None,
                     bound: int | None) -> ApprovalRequest:
        """Store a pending request for the current caller, audit it (``requested``),
        publish it and notify chat.

        Raises:
            OpsError: too many requests pending (``OPSMCP_APPROVAL_MAX_PENDING``), or the
                store or the audit log cannot be written (then nothing is pending).
        """
        pending = await self.list("pending", self.settings.approval_max_pending)
        if len(pending) >= self.settings.approval_max_pending:
            raise OpsError(f"Not done: {len(pending)} approval requests are already pending (the most this server "
                           f"keeps, OPSMCP_APPROVAL_MAX_PENDING).",
                           "wait for people to decide the pending ones (get_approval), then try again.")
        now = self.clock()
        req = ApprovalRequest(id=new_id(), tool=tool, arguments=arguments, shown_arguments=redact(arguments),
                              preview=preview, bound_argument=bound_argument, bound=bound, requester=caller.get(),
                              created_at=now, expires_at=now + self.settings.approval_request_ttl_seconds)
        await self.store.create(req)
        await self._audit(req, "requested", "pending", actor=req.requester, strict=True)
        self._announce(req)
        if self.notify is not None:
            try:
                self.notify(self.view(req))
            except Exception:  # a notification never stops the request
                log.warning("approval notification failed", exc_info=True)
        return req

    # ------------------------------------------------------------------ deciding ----
    async def decide(self, request_id: str, approve: bool, reason: str | None = None) -> ApprovalRequest:
        """Approve (and run) or deny ``request_id`` as the current caller.

        Returns the request after the decision: ``denied``, or ``done`` / ``failed`` once
        the approved write ran here.

        Raises:
            NotFound: unknown id. ApprovalForbidden: no ``ops:approve``, or the caller is
            the requester (not allowed to approve itself). ApprovalConflict: not pending
            (already decided, running, done, or expired). OpsError: the store or the
            audit log cannot be written.
        """
        actor = caller.get()
        if APPROVE_SCOPE not in scopes.get():
            raise ApprovalForbidden(f"Refused: {actor} may not decide approvals: it needs scope {APPROVE_SCOPE}.",
                                    "ask the operator for a token with ops:approve.")
        req = await self.get(request_id)
        if req is None:
            raise NotFound(f"No approval request {request_id[:60]!r}.", "list them with GET /api/approvals.")
        if req.status != "pending":
            raise self._conflict(req)
        if actor == req.requester and actor not in self.settings.approval_allow_self:
            raise ApprovalForbidden(f"Refused: {actor} requested this write and may not decide it; another "
                                    "person with ops:approve must.",
                                    "ask a colleague, or have the operator list this identity in "
                                    "OPSMCP_APPROVAL_ALLOW_SELF.")
        text = _clean(reason)
        now = self.clock()
        changes: dict[str, Any] = {"status": "approved" if approve else "denied", "approver": actor, "reason": text,
                                   "decided_at": now}
        if approve:
            changes["executor"] = f"{HOST}:{os.getpid()}"
        won = await self._move(req, frozenset({"pending"}), changes)
        if won is None:
            raise self._conflict(await self._reread(req))
        if not approve:
            await self._audit(won, "denied", "denied", actor=actor, note=text, strict=False)
            return won
        try:
            await self._audit(won, "approved", "approved", actor=actor)
        except OpsError as exc:  # no record of the approval: the write must not run
            failed = await self._move(won, frozenset({"approved"}), {"status": "failed", "error": exc.message})
            return failed or won
        with anyio.CancelScope(shield=True):  # the approver hanging up must not cut the write short
            final = await self._run(won)
        return final

    async def _run(self, req: ApprovalRequest) -> ApprovalRequest:
        running = await self._move(req, frozenset({"approved"}), {"status": "executing"})
        if running is None:
            return await self._reread(req)
        try:
            if self.execute is None:
                raise OpsError("this server has no write tools registered to run the approved request.")
            result = await self.execute(running)
            changes: dict[str, Any] = {"status": "done", "result": result}
        except OpsError as exc:
            changes = {"status": "failed", "error": str(exc)}
        except Exception as exc:
            log.exception("approved write %s (%s) failed unexpectedly", req.id, req.tool)
            changes = {"status": "failed", "error": f"Internal error in {req.tool}: {type(exc).__name__}: {exc}. This "
                                                    "is an opsmcp bug; the server log has the details."}
        return await self._move(running, frozenset({"executing"}), changes) or await self._reread(running)

    def _conflict(self, req: ApprovalRequest) -> ApprovalConflict:
        by = f" by {req.approver}" if req.approver else ""
        when = f" at {iso(req.decided_at)}" if req.decided_at else ""
        return ApprovalConflict(f"Approval request {req.id} is {req.status}{by}{when}, not pending: nothing was "
                                "changed by this decision.", "reload it to see its current state.")

    async def _move(self, req: ApprovalRequest, expect: frozenset[str], changes: dict[str, Any]
                    ) -> ApprovalRequest | None:
        """Transition ``req`` in the store; on success publish the change and wake waiters."""
        moved = await self.store.transition(req.id, expect, changes)
        if moved is not None:
            self._announce(moved)
        return moved

    def _announce(self, req: ApprovalRequest) -> None:
        if self.trail.publish is not None:
            self.trail.publish("approval", {"id": req.id, "status": req.status, "tool": req.tool,
                                            "requester": req.requester, "approver": req.approver, "at": self.clock()})
        for event in self._waiters.pop(req.id, set()):
            event.set()

    async def _audit(self, req: ApprovalRequest, phase: str, outcome: str, *, actor: str, note: str | None = None,
                     strict: bool = False) -> None:
        reset = caller.set(actor)
        try:
            await self.trail.record(req.tool, req.arguments, real=True, phase=phase, outcome=outcome,
                                    start=time.perf_counter(), call_id=req.id, approval="human", strict=strict,
                                    note=note, approver=req.approver)
        finally:
            caller.reset(reset)

    # ------------------------------------------------------------------ waiting -----
    async def wait(self, request_id: str, seconds: float, report: Reporter | None = None) -> ApprovalRequest | None:
        """Wait up to ``seconds`` for ``request_id`` to reach a final status, re-reading the
        store every :data:`POLL_SECONDS` (a decision on another replica) and waking at once
        on a decision here; reports progress every :data:`REPORT_SECONDS`. Returns the
        request as last read."""
        start = time.monotonic()
        req = await self.get(request_id)
        last_report = -REPORT_SECONDS
        while req is not None and req.status not in FINAL:
            waited = time.monotonic() - start
            if waited >= seconds:
                break
            if report is not None and waited - last_report >= REPORT_SECONDS:
                last_report = waited
                await report(waited, seconds, f"waiting for a person to approve {req.id} ({req.status}): "
                                              f"{self.console_url(req.id)}")
            event = anyio.Event()
            self._waiters.setdefault(request_id, set()).add(event)
            with anyio.move_on_after(min(POLL_SECONDS, max(0.0, seconds - waited))):
                await event.wait()
            self._waiters.get(request_id, set()).discard(event)
            req = await self.get(request_id)
        return req


def _clean(reason: str | None) -> str | None:
    """A deny reason: printable text, lone surrogates replaced, cut to :data:`MAX_REASON_CHARS`."""
    if not reason:
        return None
    text = reason.encode("utf-8", "replace").decode("utf-8")
    text = "".join(c if c.isprintable() else " " for c in text).strip()
    return text[:MAX_REASON_CHARS] or None
