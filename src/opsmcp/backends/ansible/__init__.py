"""Thin adapter over ansible-runner, in three parts:

* :mod:`.catalog`: the catalog and variable validation (the security boundary);
* :mod:`.runner`: running one entry with ansible-runner, timeouts, cancellation;
* :mod:`.results`: the bounded result models and the event collector that fills them.

This package knows nothing of MCP or of toolsets; it raises
:class:`~opsmcp.errors.OpsError` subclasses for everything it anticipates.
"""

from opsmcp.backends.ansible.catalog import Catalog, PlaybookEntry, VarSpec, load_catalog, validate_vars
from opsmcp.backends.ansible.results import (
    MAX_DIFF_BYTES,
    MAX_DIFFS,
    MAX_TASKS,
    EventCollector,
    FileDiff,
    HostRecap,
    PlaybookRun,
    TaskEvent,
    TaskResult,
)
from opsmcp.backends.ansible.runner import RUN_MARKER_ENV, check_ansible_available, run_playbook

__all__ = [
    "MAX_DIFFS",
    "MAX_DIFF_BYTES",
    "MAX_TASKS",
    "RUN_MARKER_ENV",
    "Catalog",
    "EventCollector",
    "FileDiff",
    "HostRecap",
    "PlaybookEntry",
    "PlaybookRun",
    "TaskEvent",
    "TaskResult",
    "VarSpec",
    "check_ansible_available",
    "load_catalog",
    "run_playbook",
    "validate_vars",
]
