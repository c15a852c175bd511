"""Where the playbook catalog is: ``catalog.yml`` (what ``run_playbook`` may run),
``playbooks/`` (the playbooks it points at) and ``runbooks/`` (the Markdown runbooks served as
``opsmcp://runbooks/{name}``).

The catalog opsmcp ships is ``tools/`` at the top of the repository, for operators to read and
edit; the wheel carries it as the data package ``opsmcp.tools`` (``pyproject.toml``), so an
installed opsmcp works without a checkout. A team's own catalog is a directory of the same
shape named by ``OPSMCP_CATALOG_DIR`` (or just its YAML by ``OPSMCP_PLAYBOOK_CATALOG``);
its ``runbooks/`` come first, the shipped runbooks after them.
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

    An installed wheel: ``opsmcp/tools/`` in site-packages (from a zip import, extracted once
    to a temporary directory that lives until the process exits: ansible-runner needs real
    files). A source checkout (an editable install, the tests): the repository's ``tools/``.
    """
    installed = resources.files("opsmcp") / "tools"
    if installed.is_dir():
        if isinstance(installed, Path):
            return installed
        return Path(_extracted.enter_context(resources.as_file(installed)))
    return Path(__file__).resolve().parents[3] / "tools"


def packaged_catalog() -> Path:
    """The shipped ``catalog.yml`` (the default of ``Settings.playbook_catalog``)."""
    return packaged_dir() / "catalog.yml"


def packaged_runbooks() -> Path:
    """The directory of the shipped Markdown runbooks."""
    return packaged_dir() / "runbooks"
