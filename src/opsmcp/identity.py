"""Who is calling: the identity every transport sets before a tool runs.

The HTTP transport (:mod:`opsmcp.http`) sets :data:`caller` to the authenticated subject
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
ALL_SCOPES = frozenset({READ_SCOPE, WRITE_SCOPE})

#: The caller's subject: the authenticated HTTP subject, else ``"stdio"``.
caller: contextvars.ContextVar[str] = contextvars.ContextVar("opsmcp_caller", default="stdio")
#: The caller's scopes; stdio and single-token HTTP have all of them.
scopes: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("opsmcp_scopes", default=ALL_SCOPES)
