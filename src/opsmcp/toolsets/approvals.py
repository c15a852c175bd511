"""The ``approvals`` toolset: ``get_approval``, how an agent learns what a person decided
about a write it asked for (``OPSMCP_WRITE_APPROVAL=human``).

A real write call in mode ``human`` answers ``status: "pending_approval"`` with an
``approval_id``; the agent polls ``get_approval(approval_id)`` until the request is
``done`` (the write's result is in ``result``), ``failed``, ``denied`` or ``expired``. The
toolset only reads: it is handed a ``lookup`` callable by the composition root (the
approval desk's), so it knows nothing of where requests are stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.errors import NotFound
from opsmcp.results import Result
from opsmcp.toolsets.base import tool

#: ``async (approval id) -> the request as the HTTP API shows it, or None``.
Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]


class Bound(BaseModel):
    """The argument a write is held to, and its approved value."""

    argument: str = Field(description="The argument, e.g. max_messages.")
    value: int | None = Field(description="Its most, from the preview the person approved.")


class ApprovalStatus(Result):
    """One approval request: what was asked, what a person decided, and what the write did."""

    id: str = Field(description="The approval id (apr-...).")
    tool: str = Field(description="The write tool the request is for.")
    status: str = Field(description="pending (no decision yet), approved / executing (the write is running), done "
                        "(the write ran: see result), failed (see error), denied (see reason) or expired.")
    arguments: dict[str, Any] = Field(description="The write's arguments (secrets redacted).")
    preview: str = Field(description="The preview text the person was shown.")
    bound: Bound | None = Field(None, description="The argument the write is held to, and its value.")
    requester: str = Field(description="The identity whose call asked for it.")
    approver: str | None = Field(None, description="Who approved or denied it.")
    reason: str | None = Field(None, description="Why it was denied, when the person said.")
    created_at: str = Field(description="When it was requested, ISO-8601 UTC.")
    expires_at: str = Field(description="When it expires if nobody decides, ISO-8601 UTC.")
    decided_at: str | None = Field(None, description="When it was decided, ISO-8601 UTC.")
    result: dict[str, Any] | None = Field(None, description="The write's result once done (the write tool's fields).")
    error: str | None = Field(None, description="Why the write failed, or why the request expired.")
    console_url: str = Field(description="The console page where a person decides it.")


NEXT = {
    "pending": "nobody has decided yet: nothing has changed. Call get_approval again later (every 10-30 s), and do "
               "not repeat the write call meanwhile (every call makes a new request).",
    "approved": "approved; the write is starting: call get_approval again in a few seconds for its result.",
    "executing": "approved; the write is running: call get_approval again in a few seconds for its result.",
    "done": "approved and done: `result` holds what the write did.",
    "failed": "approved, but the write failed (see error); check what it did before trying again.",
    "denied": "DENIED: nothing was changed. Tell the user; do not ask again unless they want you to.",
    "expired": "EXPIRED: nobody decided in time, nothing was changed. Ask the user whether to request it again.",
}


class ApprovalTools:
    """The ``approvals`` toolset.

    Args:
        lookup: finds a request by id (:data:`Lookup`).
    """

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup

    @tool(title="Get an approval request", read_only=True, destructive=False, idempotent=True, open_world=False)
    async def get_approval(
        self,
        approval_id: Annotated[str, Field(description="The approval_id a write call returned, e.g. "
                                                      "'apr-3f2a...' (apr- and 32 hex digits).",
                                          min_length=1, max_length=100)],
    ) -> ApprovalStatus:
        """Read an approval request (mode human): its status (pending, approved, executing,
        done, failed, denied, expired), who decided and why, and once done the write's
        result. Poll it after a write call answered pending_approval. Nothing here approves:
        a person does, outside this conversation."""
        found = await self.lookup(approval_id.strip())
        if found is None:
            raise NotFound(f"No approval request {approval_id[:100]!r}.",
                           "use the approval_id exactly as the write call returned it (apr- and 32 hex digits).")
        status = ApprovalStatus.model_validate({k: v for k, v in found.items() if k in ApprovalStatus.model_fields})
        status.notes.append(NEXT.get(status.status, status.status))
        return status
