"""The composition root: builds settings' backends, toolsets, the audit trail and the
runtime, and registers every tool through the one choke point.

:func:`build_server` is the only place that knows every concrete piece: it builds each
backend and hands ``(settings, backend)`` to its toolset, builds the audit trail and the
``/events`` hub, fills :class:`~opsmcp.calls.runtime.Runtime` (what the transports and the
MCP surface may use) and registers each toolset method wrapped by
:func:`opsmcp.calls.choke.choke`. :class:`OpsServer` is the SDK's server with opsmcp's
answers for unknown tools and invalid arguments.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import ValidationError

from opsmcp import __version__
from opsmcp.backends.aws import AwsClients
from opsmcp.calls.audit import AuditSink, AuditTrail, FileAudit
from opsmcp.calls.choke import choke
from opsmcp.calls.events import DepthPoller, EventHub, queue_sources
from opsmcp.calls.runtime import Runtime
from opsmcp.config import Settings
from opsmcp.errors import OpsError
from opsmcp.surface.arg_errors import explain
from opsmcp.surface.tool_visibility import ProtocolGuard
from opsmcp.telemetry import ToolStats
from opsmcp.toolsets.base import marked_tools

log = logging.getLogger("opsmcp")

INSTRUCTIONS = """\
opsmcp operates an order-processing system: SQS queues and DLQs, the orders table, \
application logs, metrics and approved playbooks. Triage path: list_queues → \
analyze_dlq on a growing DLQ (groups by failure signature with order and trace ids) → \
get_trace / search_logs for the explaining errors → get_order for affected orders → \
query_metrics for onset and scale. Writes (redrive_dlq, run_playbook) exist only when \
the operator enabled them; always dry-run first and show the preview to the user. A real \
write needs a person's approval and never does more than the preview showed: an approval \
prompt, or (where the operator allows it) confirm=true with the preview's approval.token, or \
(status pending_approval) a request a person decides outside this conversation: then poll \
get_approval(approval_id) and do not repeat the write."""


class OpsServer(MCPServer):
    """The SDK's server with opsmcp's answers where the SDK's own would not help a model:

    - a call of a tool that exists but is not registered here (a write tool on a read-only
      server, a disabled toolset) says why and what to change, instead of "Unknown tool";
    - a tool that does not exist names the closest tools and the whole list;
    - arguments that fail the input schema get :func:`opsmcp.surface.arg_errors.explain` (argument,
      what was wrong, the allowed range or values, an example) instead of pydantic's text.
    """

    runtime: Runtime

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Any, Any] | None = None) -> CallToolResult | InputRequiredResult:
        """Call tool ``name``; see the class docstring for the errors it rewrites.

        Raises:
            ToolError: unknown or unavailable tool, invalid arguments, or a tool error.
        """
        why = self.runtime.hidden.get(name)
        if why is not None:
            raise ToolError(f"{name} is not available on this server: {why}")
        if name not in self.runtime.tools:
            raise ToolError(unknown_tool(name, self.runtime))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError) or not isinstance(exc.__cause__, ValidationError):
                raise
            schema = next((t.input_schema for t in await self.list_tools() if t.name == name), {})
            raise ToolError(explain(name, exc.__cause__, schema, arguments)) from exc.__cause__


def unknown_tool(name: str, runtime: Runtime) -> str:
    """The error text for a call of tool ``name`` that does not exist: the closest names the
    caller may call and every tool it may call (a read-only identity is not shown write tools)."""
    from opsmcp.calls.identity import may_call
    from opsmcp.errors import closest

    callable_ = sorted(t for t, mark in runtime.tools.items() if may_call(mark.write))
    near = closest(name, callable_, n=3)
    hint = f" Did you mean {', '.join(near)}?" if near else ""
    return f"Unknown tool: {name[:100]}.{hint} The tools on this server: {', '.join(callable_)}."


def build_toolsets(settings: Settings, clients: AwsClients) -> dict[str, object]:
    """Instantiate the enabled toolsets (``settings.toolsets``) with their backends."""
    from opsmcp.backends.dynamodb import DynamoBackend
    from opsmcp.backends.sqs import SqsBackend
    from opsmcp.toolsets.orders import OrderTools
    from opsmcp.toolsets.queues import QueueTools

    enabled = set(settings.toolsets)
    out: dict[str, object] = {}
    if "logs" in enabled:
        from opsmcp.toolsets.logs import LogTools

        out["logs"] = LogTools(settings)
    if "queues" in enabled:
        # With logs enabled, analyze_dlq explains messages without error attributes by the
        # ERROR lines of their trace.
        correlate = out["logs"].error_lines if "logs" in out else None  # type: ignore[attr-defined]
        out["queues"] = QueueTools(SqsBackend(clients), correlate=correlate)
    if "orders" in enabled:
        out["orders"] = OrderTools(settings, DynamoBackend(clients))
    if "metrics" in enabled:
        from opsmcp.backends.cloudwatch import CloudWatchBackend
        from opsmcp.toolsets.metrics import MetricTools

        out["metrics"] = MetricTools(settings, CloudWatchBackend(clients))
    if "playbooks" in enabled:
        from opsmcp.toolsets.playbooks import PlaybookTools

        out["playbooks"] = PlaybookTools(settings)
    if "prometheus" in enabled and settings.prometheus_url:
        from opsmcp.backends.prometheus import PrometheusBackend
        from opsmcp.toolsets.prometheus import PrometheusTools

        out["prometheus"] = PrometheusTools(settings, PrometheusBackend.from_settings(settings))
    if "alerts" in enabled and (settings.alertmanager_url or settings.alerts_table):
        from opsmcp.backends.alertstore import build_alert_store
        from opsmcp.toolsets.alerts import AlertTools

        out["alerts"] = AlertTools(settings, build_alert_store(settings, clients))
    return out


def _wire_poller(runtime: Runtime) -> None:
    """With the queues toolset, attach the one depth poller to the ``/events`` hub (started
    by the hub's first listener, stopped by its last)."""
    settings = runtime.settings
    hub = runtime.events
    queues = runtime.toolsets.get("queues")
    if queues is None:
        return
    list_states, read_dead_letters = queue_sources(queues)

    async def ready_states() -> list[dict[str, Any]]:
        await runtime.wait_ready()
        return await list_states()

    poller = runtime.poller = DepthPoller(hub, ready_states, read_dead_letters, settings.events_poll_seconds)
    hub.on_first_listener = poller.start
    hub.on_last_listener = poller.stop


def _wire_chat(runtime: Runtime) -> None:
    """With ``OPSMCP_NOTIFY_SLACK_URL`` / ``OPSMCP_NOTIFY_WEBHOOK_URL``, tell chat about each new
    approval request and each new firing alert (:class:`~opsmcp.backends.chat.ChatNotifier`)."""
    from opsmcp.backends.chat import ChatNotifier

    notifier = ChatNotifier.from_settings(runtime.settings)
    if notifier is None:
        return
    runtime.approvals.desk.notify = notifier.approval
    runtime.events.observers.append(notifier.observe)


#: How long one readiness answer of :func:`backend_check` is reused, seconds (probes come often).
READINESS_CACHE_SECONDS = 5.0


def backend_check(runtime: Runtime) -> Callable[[], Awaitable[str | None]] | None:
    """A cheap call to the first enabled AWS backend (SQS ListQueues, else the orders
    table's DescribeTable), for ``/readyz``: returns why it failed (the tool error text: no
    credentials, unknown profile, endpoint down) or None. Answers are reused for
    :data:`READINESS_CACHE_SECONDS`. None when no AWS toolset is enabled."""
    import time

    from opsmcp.backends.aws import aws_call

    clients, settings = runtime.clients, runtime.settings
    if "queues" in runtime.toolsets:
        what, call = "list queues", lambda: clients.client("sqs").list_queues(MaxResults=1)
    elif "orders" in runtime.toolsets:
        what = f"describe table {settings.orders_table}"
        call = lambda: clients.client("dynamodb").describe_table(TableName=settings.orders_table)  # noqa: E731
    else:
        return None
    last: list[Any] = [float("-inf"), None]  # when, answer

    async def check() -> str | None:
        if time.monotonic() - last[0] >= READINESS_CACHE_SECONDS:
            try:
                await aws_call(clients, what, call)
                answer = None
            except OpsError as exc:
                answer = str(exc)
            last[:] = [time.monotonic(), answer]
        return typing.cast(str | None, last[1])

    return check


def build_audit(settings: Settings, clients: AwsClients) -> AuditSink:
    """The audit sink: the DynamoDB table when ``audit_table`` is set, else the JSON Lines file."""
    from opsmcp.calls.audit import DynamoAudit

    if settings.audit_table:
        return DynamoAudit(clients.client("dynamodb"), settings.audit_table)
    return FileAudit(settings.audit_log_path)


def build_server(settings: Settings | None = None) -> tuple[MCPServer, Runtime]:
    """Build the MCP server for ``settings`` (default: read from the environment).

    Registers every ``@tool`` method of every enabled toolset through :func:`~opsmcp.calls.choke.choke`;
    write tools only when ``settings.allow_writes``. Returns ``(server, runtime)``.
    """
    settings = settings or Settings()
    clients = AwsClients(settings)
    hub = EventHub(history=settings.events_history, buffer=settings.events_buffer,
                   max_listeners=settings.events_max_listeners,
                   max_per_owner=settings.events_max_listeners_per_identity)
    trail = AuditTrail(build_audit(settings, clients), hub.publish, lambda: bool(hub.listeners))
    runtime = Runtime(settings=settings, clients=clients, toolsets=build_toolsets(settings, clients),
                      stats=ToolStats(), tools={}, events=hub, trail=trail)
    _wire_poller(runtime)
    _wire_chat(runtime)
    runtime.backend_check = backend_check(runtime)
    if "logs" in runtime.toolsets:  # what the log engine scanned, in /metrics
        runtime.stats.watch(runtime.toolsets["logs"].scan_totals)  # type: ignore[attr-defined]
    level = settings.log_level.upper()
    secret = settings.approval_secret
    security = None
    if secret is not None:  # replicas that share the secret also open each other's request_state
        key = hashlib.sha256(b"opsmcp request state v1\0" + secret.get_secret_value().encode()).digest()
        security = RequestStateSecurity(keys=[key], audience="opsmcp")
    server = OpsServer("opsmcp", instructions=INSTRUCTIONS, version=__version__, request_state_security=security,
                       log_level=typing.cast(Any, level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
                                             else "WARNING"))
    server.runtime = runtime
    for toolset_name, toolset in runtime.toolsets.items():
        register_toolset(server, runtime, toolset_name, toolset)
    if settings.allow_writes and settings.write_approval == "human":
        from opsmcp.toolsets.approvals import ApprovalTools

        register_toolset(server, runtime, "approvals", ApprovalTools(runtime.approvals.desk.describe))
    if isinstance(runtime.audit, FileAudit):
        runtime.close_interrupted()  # local and quick; a DynamoDB table is checked once backends are ready
    elif runtime.audit is not None:
        def recover() -> None:
            runtime.ready.wait()
            runtime.close_interrupted()

        threading.Thread(target=recover, daemon=True, name="opsmcp-audit-recovery").start()
    from opsmcp.surface.completions import register_prompts_and_resources

    register_prompts_and_resources(server, runtime)  # prompts, resources, completions of the registered tools
    server.middleware.append(ProtocolGuard(server, lambda n: runtime.tools[n].write if n in runtime.tools else None))
    return server, runtime


def register_toolset(server: MCPServer, runtime: Runtime, toolset_name: str, toolset: object) -> None:
    """Register every ``@tool`` method of ``toolset`` through :func:`~opsmcp.calls.choke.choke`.

    A toolset whose ``check()`` raises OpsError is left out (``runtime.disabled`` says why);
    write tools are left out unless ``settings.allow_writes``. Every tool left out is named
    in ``runtime.hidden`` with the reason, which a call of it gets back.
    """
    check = getattr(toolset, "check", None)
    if check is not None:
        try:
            check()  # e.g. playbooks: the catalog loads and ansible-playbook is installed
        except OpsError as exc:
            runtime.disabled[toolset_name] = str(exc)
            log.error("toolset %s disabled: %s", toolset_name, exc)
            for name, _, _ in marked_tools(toolset):
                runtime.hidden[name] = f"the {toolset_name} toolset is disabled: {exc}"
            return
    for name, fn, mark in marked_tools(toolset):
        if mark.write and not runtime.settings.allow_writes:
            runtime.hidden[name] = ("writes are disabled; start with --allow-writes (or OPSMCP_ALLOW_WRITES=true) "
                                    "to enable it.")
            continue
        server.add_tool(
            choke(name, fn, mark, runtime),
            name=name,
            title=mark.title,
            annotations=ToolAnnotations(
                title=mark.title,
                readOnlyHint=mark.read_only,
                destructiveHint=mark.destructive,
                idempotentHint=mark.idempotent,
                openWorldHint=mark.open_world,
            ),
        )
        runtime.tools[name] = mark
