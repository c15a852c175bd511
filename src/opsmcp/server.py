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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from mcp.server.request_state import RequestStateSecurity
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.types import CallToolResult, InputRequiredResult, ToolAnnotations
from pydantic import BaseModel, ConfigDict, ValidationError

from opsmcp import __version__
from opsmcp.backends.aws import AwsClients
from opsmcp.calls.audit import AuditSink, AuditTrail, FileAudit
from opsmcp.calls.choke import choke
from opsmcp.calls.events import DepthPoller, EventHub
from opsmcp.calls.runtime import Runtime
from opsmcp.config import Settings
from opsmcp.errors import OpsError
from opsmcp.surface.arg_errors import explain
from opsmcp.surface.sdk_seams import logging_configured, registered_tool
from opsmcp.surface.tool_schemas import OutputSchemas, compact
from opsmcp.surface.tool_visibility import ProtocolGuard
from opsmcp.telemetry import ToolStats
from opsmcp.toolsets.base import marked_tools

if TYPE_CHECKING:
    from opsmcp.analysis.queue_state import QueueStates
    from opsmcp.backends.alertstore import AlertStore
    from opsmcp.backends.ansible.reader import CatalogReader
    from opsmcp.backends.cloudwatch import CloudWatchBackend

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
    #: Output schemas kept from an earlier start (set by :func:`build_server`); None: derive each.
    output_schemas: OutputSchemas | None = None

    def add_tool(self, fn: Callable[..., Any], name: str | None = None, title: str | None = None,
                 description: str | None = None, annotations: ToolAnnotations | None = None, icons: Any = None,
                 meta: dict[str, Any] | None = None, structured_output: bool | None = None) -> None:
        """Register a tool as the SDK does, then make its arguments strict: an argument the
        tool does not have is an error (``additionalProperties: false`` in the input schema,
        pydantic ``extra="forbid"`` when validating), which :func:`explain` turns into the
        closest known argument, instead of being ignored silently. Its input and output
        schemas are published in their compact form (:func:`opsmcp.surface.tool_schemas.compact`).

        A tool whose result is a pydantic model gets its output schema from
        :attr:`output_schemas` when an earlier start derived it with the same code; the SDK
        then registers it unstructured and the result class and schema are set as the SDK
        sets them (``fn_metadata.output_model`` and ``output_schema``, which it reads on each
        list and call), so results are validated against the class as before."""
        name = name or fn.__name__
        returns = getattr(fn, "__annotations__", {}).get("return")
        model = returns if isinstance(returns, type) and issubclass(returns, BaseModel) else None
        cache = self.output_schemas
        cached = cache.get(name, model) if cache is not None and model is not None and structured_output is None \
            else None
        super().add_tool(fn, name=name, title=title, description=description, annotations=annotations, icons=icons,
                         meta=meta, structured_output=False if cached is not None else structured_output)
        tool = registered_tool(self, name)
        if tool is None:
            return
        strict_arguments(tool)
        tool.parameters = compact(tool.parameters, root_title=tool.fn_metadata.arg_model.__name__)
        metadata = tool.fn_metadata
        if cached is not None:
            metadata.output_model, metadata.output_schema = model, cached
        elif metadata.output_schema is not None:  # read by the SDK when it lists the tool
            metadata.output_schema = compact(metadata.output_schema, root_title=getattr(returns, "__name__", None))
            if cache is not None and model is not None and metadata.output_model is model and not metadata.wrap_output:
                cache.put(name, model, metadata.output_schema)

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
            raise ToolError(explain(name, exc.__cause__, schema, arguments, self._absent(name))) from exc.__cause__

    def _absent(self, name: str) -> dict[str, str]:
        """Arguments tool ``name`` deliberately lacks on this server, and why (for argument errors)."""
        mark = self.runtime.tools.get(name)
        mode = self.runtime.settings.write_approval
        if mark is None or not mark.write or mode == "prompt-or-confirm":
            return {}
        if mode == "human":
            why = (f"on this server a person approves every real change (OPSMCP_WRITE_APPROVAL=human): call with "
                   f"{mark.preview_arg}=false and no confirm; the answer is an approval request (pending_approval, "
                   "approval_id) that you can follow with get_approval")
        else:
            why = (f"this server makes real changes only through an approval prompt that the user answers "
                   f"(OPSMCP_WRITE_APPROVAL=prompt), so a client that cannot show one cannot make them; call with "
                   f"{mark.preview_arg}=false from a client that supports approval prompts (elicitation), or show "
                   "the dry run's preview to the user")
        return {"confirm": why, "approval_token": why}


def strict_arguments(tool: Tool) -> None:
    """Make ``tool`` refuse arguments it does not have: its argument model forbids extra
    fields and its input schema says ``additionalProperties: false``."""
    model = tool.fn_metadata.arg_model
    if model.model_config.get("extra") == "forbid":
        return
    namespace = {"model_config": ConfigDict(extra="forbid"), "__module__": model.__module__}
    strict = typing.cast(type[ArgModelBase], type(model.__name__, (model,), namespace))
    tool.fn_metadata.arg_model = strict
    # what strict.model_json_schema() says (the same fields), without deriving it again
    tool.parameters = {"type": "object", "additionalProperties": False} | {
        k: v for k, v in tool.parameters.items() if k not in ("type", "additionalProperties")}


def unknown_tool(name: str, runtime: Runtime) -> str:
    """The error text for a call of tool ``name`` that does not exist: the closest names the
    caller may call and every tool it may call (a read-only identity is not shown write tools)."""
    from opsmcp.calls.identity import may_call
    from opsmcp.errors import did_you_mean

    callable_ = sorted(t for t, mark in runtime.tools.items() if may_call(mark.write))
    hint = did_you_mean(name, callable_, n=3, sentence=True)
    return f"Unknown tool: {name[:100]}.{' ' + hint if hint else ''} The tools on this server: {', '.join(callable_)}."


@dataclass
class Built:
    """What :func:`build_toolsets` built: the toolsets, and what the upper layers read of the
    backends (see :class:`~opsmcp.calls.runtime.Runtime`)."""

    toolsets: dict[str, object] = field(default_factory=dict)
    queues: QueueStates | None = None
    alerts: AlertStore | None = None
    catalog: CatalogReader | None = None
    metrics: CloudWatchBackend | None = None


def build_toolsets(settings: Settings, clients: AwsClients) -> Built:
    """Build each enabled toolset's backend (``settings.toolsets``) and hand ``(settings,
    backend)`` to the toolset; the queue-state reader, the alert store, the catalog reader and
    the CloudWatch metrics backend are also returned for the runtime, so nothing above
    reaches into a toolset."""
    from opsmcp.analysis.dlq_read import DlqReader
    from opsmcp.analysis.queue_state import QueueStates
    from opsmcp.backends.dynamodb import DynamoBackend
    from opsmcp.backends.sqs import SqsBackend
    from opsmcp.toolsets.orders import OrderTools
    from opsmcp.toolsets.queues import QueueTools

    enabled = set(settings.toolsets)
    built = Built()
    out = built.toolsets
    if "logs" in enabled:
        from opsmcp.toolsets.logs import LogTools

        out["logs"] = LogTools(settings)
    if "queues" in enabled:
        # With logs enabled, analyze_dlq explains messages without error attributes by the
        # ERROR lines of their trace.
        correlate = out["logs"].error_lines if "logs" in out else None  # type: ignore[attr-defined]
        sqs = SqsBackend(clients)
        reader = DlqReader(sqs, correlate, settings.redrive_hold_seconds, settings.dlq_read_seconds)
        built.queues = QueueStates(sqs, correlate, reader)  # one shared DLQ read for the tools and the poller
        out["queues"] = QueueTools(settings, sqs, correlate=correlate, states=built.queues)
    if "orders" in enabled:
        out["orders"] = OrderTools(settings, DynamoBackend(clients))
    if "metrics" in enabled:
        from opsmcp.backends.cloudwatch import CloudWatchBackend
        from opsmcp.toolsets.metrics import MetricTools

        built.metrics = CloudWatchBackend(clients)
        out["metrics"] = MetricTools(settings, built.metrics)
    if "playbooks" in enabled:
        from opsmcp.backends.ansible.reader import CatalogReader
        from opsmcp.toolsets.playbooks import PlaybookTools

        built.catalog = CatalogReader(settings.playbook_catalog)
        out["playbooks"] = PlaybookTools(settings, built.catalog)
    if "prometheus" in enabled and settings.prometheus_url:
        from opsmcp.backends.prometheus import PrometheusBackend
        from opsmcp.toolsets.prometheus import PrometheusTools

        out["prometheus"] = PrometheusTools(settings, PrometheusBackend.from_settings(settings))
    if "alerts" in enabled and (settings.alertmanager_url or settings.alerts_table):
        from opsmcp.backends.alertstore import build_alert_store
        from opsmcp.toolsets.alerts import AlertTools

        built.alerts = build_alert_store(settings, clients)
        out["alerts"] = AlertTools(settings, built.alerts)
    return built


def _wire_poller(runtime: Runtime) -> None:
    """With the queues toolset, attach the one depth poller to the ``/events`` hub (started
    by the hub's first listener, stopped by its last)."""
    settings = runtime.settings
    hub = runtime.events
    queues = runtime.queues
    if queues is None:
        return

    async def ready_states() -> list[dict[str, Any]]:
        await runtime.wait_ready()
        return await queues.states()

    poller = runtime.poller = DepthPoller(hub, ready_states, queues.dead_letters, settings.events_poll_seconds)
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
        return DynamoAudit(clients, settings.audit_table)
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
    built = build_toolsets(settings, clients)
    runtime = Runtime(settings=settings, clients=clients, toolsets=built.toolsets, stats=ToolStats(), tools={},
                      events=hub, trail=trail, queues=built.queues, alerts=built.alerts, catalog=built.catalog,
                      metrics=built.metrics)
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
    bus = InMemorySubscriptionBus()  # subscriptions/listen; the queue resources publish their changes on it
    with logging_configured():  # opsmcp's log handler is set up: skip the SDK's (rich's import)
        server = OpsServer("opsmcp", instructions=INSTRUCTIONS, version=__version__,
                           request_state_security=security, subscriptions=bus,
                           log_level=typing.cast(Any, level if level in ("DEBUG", "INFO", "WARNING", "ERROR",
                                                                         "CRITICAL") else "WARNING"))
    server.runtime = runtime
    server.output_schemas = OutputSchemas(settings.data_dir / "cache")
    for toolset_name, toolset in runtime.toolsets.items():
        register_toolset(server, runtime, toolset_name, toolset)
    if settings.allow_writes and settings.write_approval == "human":
        from opsmcp.toolsets.approvals import ApprovalTools

        register_toolset(server, runtime, "approvals", ApprovalTools(runtime.approvals.desk.describe))
    server.output_schemas.save()
    if runtime.audit is not None and not _empty_file(runtime.audit):
        # A file is local and quick: checked before the server answers anything. A DynamoDB
        # table is checked once the backends are ready, in the background. Either way on a
        # thread of its own: build_server may be called from inside a running event loop.
        local = isinstance(runtime.audit, FileAudit)

        def recover() -> None:
            if not local:
                runtime.ready.wait()
            anyio.run(runtime.close_interrupted)

        recovery = threading.Thread(target=recover, daemon=True, name="opsmcp-audit-recovery")
        recovery.start()
        if local:
            recovery.join()
    from opsmcp.surface.completions import register_prompts_and_resources

    # The scope policy first among opsmcp's middleware: a refused request reaches no other one.
    server.middleware.append(ProtocolGuard(server, lambda n: runtime.tools[n].write if n in runtime.tools else None))
    register_prompts_and_resources(server, runtime, bus)  # prompts, resources, completions of the registered tools
    return server, runtime


def _empty_file(audit: AuditSink) -> bool:
    """True when ``audit`` is a file that does not exist or is empty: no write can have been
    interrupted, so start-up skips the check (a thread and an event loop, ~10 ms)."""
    if not isinstance(audit, FileAudit):
        return False
    try:
        return audit.path.stat().st_size == 0
    except FileNotFoundError:
        return True
    except OSError:  # unreadable: the check runs and logs why
        return False


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
