"""The playbook catalog as the running server reads it: loaded once, reloaded when its file
changes (:class:`CatalogReader`).

One reader per server, built by the composition root and shared by the playbooks toolset
(``list_playbooks``, ``run_playbook``) and the MCP surface (the playbook resources and
name completion), so an operator's edit of ``catalog.yml`` shows everywhere at once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from opsmcp.backends.ansible.catalog import Catalog, load_catalog


class CatalogReader:
    """The catalog at ``path``, re-read when the file's modification time changes.

    Args:
        path: the catalog YAML (``OPSMCP_PLAYBOOK_CATALOG``, default the shipped one).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._catalog: Catalog | None = None
        self._mtime: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Catalog:
        """The loaded catalog (reloaded when the file's mtime changed since the last read).

        Raises:
            OpsError: the catalog file is missing or invalid (names the file).
        """
        try:
            mtime: float | None = os.stat(self.path).st_mtime
        except OSError:
            mtime = None
        with self._lock:
            if self._catalog is None or mtime != self._mtime:
                self._catalog = load_catalog(self.path)
                self._mtime = mtime
            return self._catalog
