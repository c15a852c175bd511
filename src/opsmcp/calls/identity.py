"""Who is calling: the identity every transport sets before a tool runs.

The HTTP transport (:mod:`opsmcp.transport.app`) sets :data:`caller` to the authenticated subject
(and, where identities carry scopes, :data:`scopes`); stdio leaves the defaults. The server's
choke point reads them for audit records, the ``/events`` feed and scope checks. Nothing
here imports a transport or a toolset.
"""

from __future__ import annotations

import contextvars

#: Scope that allows read tools.
READ_SCOPE = "ops:read"
#: Scope that allows write tools (only where writes are enabled).
WRITE_SCOPE = "ops:write"
#: Scope that allows deciding approval requests (``OPSMCP_WRITE_APPROVAL=human``).
APPROVE_SCOPE = "ops:approve"
ALL_SCOPES = frozenset({READ_SCOPE, WRITE_SCOPE, APPROVE_SCOPE})
#: Scope that allows posting alerts to ``/webhooks/alertmanager`` (Alertmanager's own
#: credential). Not part of :data:`ALL_SCOPES`: no person's or agent's token needs it.
ALERTS_SCOPE = "alerts:write"
#: Every scope a token may carry.
KNOWN_SCOPES = ALL_SCOPES | {ALERTS_SCOPE}

#: The caller's subject: the authenticated HTTP subject, else ``"stdio"``.
caller: contextvars.ContextVar[str] = contextvars.ContextVar("opsmcp_caller", default="stdio")
#: The caller's scopes; stdio and single-token HTTP have all of them.
scopes: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("opsmcp_scopes", default=ALL_SCOPES)


def needed_scope(write: bool) -> str:
    """The scope a tool needs: :data:`WRITE_SCOPE` for write tools (dry runs included), else
    :data:`READ_SCOPE`."""
    return WRITE_SCOPE if write else READ_SCOPE


def may_call(write: bool) -> bool:
    """True when the current caller's :data:`scopes` allow a (write) tool."""
    return needed_scope(write) in scopes.get()


def require_scope(tool: str, write: bool) -> None:
    """Refuse ``tool`` unless the current caller has the scope it needs.

    Called by the server's choke point and by a write tool's approval resolver, before any
    preview runs.

    Raises:
        OpsError: the caller lacks the scope (the message names caller, tool and scope).
    """
    from opsmcp.errors import OpsError

    need = needed_scope(write)
    if need not in scopes.get():
        have = ", ".join(sorted(scopes.get())) or "none"
        raise OpsError(f"Refused: {caller.get()} may not call {tool}: it needs scope {need} (this identity has: "
                       f"{have}).",
                       "ask the operator for a token with that scope, or use the read tools.")
