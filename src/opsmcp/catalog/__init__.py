"""The playbook catalog shipped with opsmcp, as package data.

``catalog.yml`` names what ``run_playbook`` may run; ``playbooks/`` holds the playbooks it
points at and ``runbooks/`` the Markdown runbooks served as ``opsmcp://runbooks/{name}``.
They are installed inside the wheel and found with :mod:`importlib.resources`, so an
installed opsmcp works without a source checkout. ``OPSMCP_PLAYBOOK_CATALOG`` points at
another catalog instead.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib import resources
from pathlib import Path

_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


def packaged_dir() -> Path:
    """The directory holding the shipped ``catalog.yml``, ``playbooks/`` and ``runbooks/``.

    A normal install (a wheel unpacked into site-packages, or an editable install) gives
    the real directory. From a zip import (Python 3.12+ can extract a directory), the files
    are extracted once to a temporary directory that lives until the process exits
    (ansible-runner needs real files).
    """
    root = resources.files(__name__)
    if isinstance(root, Path):
        return root
    return Path(_extracted.enter_context(resources.as_file(root)))


def packaged_catalog() -> Path:
    """The shipped ``catalog.yml`` (the default of ``Settings.playbook_catalog``)."""
    return packaged_dir() / "catalog.yml"


def packaged_runbooks() -> Path:
    """The directory of the shipped Markdown runbooks."""
    return packaged_dir() / "runbooks"
