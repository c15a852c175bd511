"""What the server built (:class:`Runtime`): the one object the call pipeline, the MCP
surface and the transports share.

The composition root (:func:`opsmcp.server.build_server`) fills it; everything above the
toolsets reads it instead of importing the server, so nothing calls back up a layer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opsmcp.backends.aws import AwsClients
from opsmcp.calls.approval import ApprovalFlow
from opsmcp.calls.audit import AuditSink, AuditTrail, mark_interrupted
from opsmcp.calls.events import DepthPoller, EventHub
from opsmcp.config import Settings
from opsmcp.errors import OpsError
from opsmcp.telemetry import ToolStats
from opsmcp.toolsets.base import ToolMark

if TYPE_CHECKING:  # built by the composition root; imported here for their types only
    from opsmcp.analysis.queue_state import QueueStates
    from opsmcp.backends.alertstore import AlertStore
    from opsmcp.backends.ansible.reader import CatalogReader
    from opsmcp.backends.cloudwatch import CloudWatchBackend

log = logging.getLogger("opsmcp")


@dataclass
class Runtime:
    """What the server built, and what the transports and the MCP surface may use of it.

    Attributes:
        settings: the settings the server was built with.
        clients: the shared boto3 clients (:class:`~opsmcp.backends.aws.AwsClients`).
        toolsets: toolset name -> instance: the composition root's registry, read by it and the
            registration code only (``tests/test_structure.py`` checks it); ``enabled`` names them.
        stats: per-tool counters and histograms behind ``/metrics``.
        tools: registered tool name -> its :class:`~opsmcp.toolsets.base.ToolMark`.
        events: the ``/events`` hub; ``poller``: its queue-depth poller (queues toolset on).
        trail: the audit trail of writes; ``approvals``: the approval flow built on it.
        ready / startup_error: background start-up (the sandbox) finished / failed.
        disabled: toolset -> why its start-up check failed; hidden: tool -> why it is not
            registered (writes off, toolset disabled).
        backend_check: a cheap backend call for readiness; returns why it failed, or None.
        queues: queue state for the ``/events`` poller, the queue resources and name
            completion (None without the queues toolset).
        alerts: the alert store the webhook writes and the alerts toolset reads (None
            without the alerts toolset).
        catalog: the playbook catalog reader for the playbook resources and name completion
            (None without the playbooks toolset).
        metrics: the CloudWatch metrics backend the console's charts read (None without the
            metrics toolset).

    What the upper layers need from the backends is here, built by the composition root;
    none of them reaches into a toolset or calls a tool past the choke point.
    """

    settings: Settings
    clients: AwsClients
    toolsets: dict[str, object]
    stats: ToolStats
    tools: dict[str, ToolMark]
    events: EventHub = field(default_factory=EventHub)
    trail: AuditTrail = field(default_factory=lambda: AuditTrail(None))
    poller: DepthPoller | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    startup_error: str | None = None
    disabled: dict[str, str] = field(default_factory=dict)  # toolset -> why its start-up check failed
    hidden: dict[str, str] = field(default_factory=dict)  # tool -> why it is not registered (writes off...)
    queues: QueueStates | None = None
    alerts: AlertStore | None = None
    catalog: CatalogReader | None = None
    metrics: CloudWatchBackend | None = None
    backend_check: Callable[[], Awaitable[str | None]] | None = None  # /readyz: why the backends do not answer
    approvals: ApprovalFlow = field(init=False)

    def __post_init__(self) -> None:
        self.ready.set()  # cleared by whoever starts a background dependency (the sandbox)
        self.approvals = ApprovalFlow(self.settings, self.trail, self.wait_ready)

    @property
    def enabled(self) -> list[str]:
        """Names of the toolsets the server built, in the order it built them (``opsmcp doctor``)."""
        return list(self.toolsets)

    @property
    def audit(self) -> AuditSink | None:
        """The audit sink (the trail's), or None when auditing is off."""
        return self.trail.sink

    async def close_interrupted(self) -> None:
        """Mark the intents that a killed server left without an outcome as ``interrupted``
        (:func:`opsmcp.calls.audit.mark_interrupted`); a failure is logged, never raised."""
        if self.audit is None:
            return
        try:
            for record in await mark_interrupted(self.audit):
                log.warning("audit: write %s (%s) was interrupted by a server stop; last progress %s",
                            record["call_id"], record["tool"], record.get("counts") or "none")
        except Exception:  # the audit sink may be unreachable at start-up; writes will say so
            log.warning("audit: could not check for interrupted writes", exc_info=True)

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until background start-up (the sandbox) finished.

        Raises:
            OpsError: start-up failed, or did not finish within ``timeout`` seconds.
        """
        if not self.ready.is_set():
            import anyio.to_thread

            await anyio.to_thread.run_sync(self.ready.wait, timeout, abandon_on_cancel=True)
        if not self.ready.is_set():
            raise OpsError("opsmcp is still starting its sandbox.", "retry in a few seconds.")
        if self.startup_error:
            raise OpsError(self.startup_error, "see the server's stderr; restart with a configured AWS endpoint.")

    def publish(self, event: dict[str, Any]) -> None:
        """Hand ``event`` (a dict with ``type``) to the ``/events`` feed; a slow listener is
        dropped rather than stalling tools. Call on the event loop's thread."""
        self.events.publish(str(event.get("type", "tool_call")), event)
