"""The approval secret an installation keeps in its data directory.

Approval tokens (:class:`opsmcp.calls.approval.ApprovalTokens`) are HMAC-signed. Without
``OPSMCP_APPROVAL_SECRET`` every process used to make its own key, so a client that starts
``opsmcp serve`` per call (langchain-mcp-adapters' default ``get_tools()``) could never
confirm a write: the preview's token came from another process. :func:`stored_secret`
gives every process of one data directory the same key, generated once.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from opsmcp.errors import OpsError
from opsmcp.private import open_private

log = logging.getLogger("opsmcp")

#: The file in the data directory that holds the generated secret (64 hex characters).
SECRET_FILE = "approval.secret"


def stored_secret(data_dir: Path) -> bytes:
    """The approval secret of ``data_dir`` (``<data_dir>/approval.secret``), created on first use.

    The file is written whole to a private temporary file (mode 0600) and linked into place
    with ``os.link``, which fails when the name exists: two processes starting together
    both end up with the one file that won, never with a half-written one.

    Returns:
        The secret's text (64 hex characters) as bytes: the HMAC key material.

    Raises:
        OpsError: the file exists but does not hold a secret (say which file, and that
            deleting it makes a new one; tokens issued under the old one stop verifying).
        OSError: the data directory cannot be created or written.
    """
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        temp = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # 0600, in a 0700 directory
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(temp, path)
                log.info("generated the approval secret %s", path)
            except FileExistsError:
                pass  # another process won the race: use its secret
        finally:
            temp.unlink(missing_ok=True)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise OpsError(f"{path} does not hold an approval secret (64 hex characters).",
                       "delete it (a new one is generated; approval tokens issued before stop verifying), "
                       "or set OPSMCP_APPROVAL_SECRET.")
    return text.encode("ascii")
