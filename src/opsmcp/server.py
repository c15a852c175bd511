"""The MCP server: builds toolsets, registers their tools, and owns the one choke point.

Every tool call passes through :func:`_choke` (the wrapper around each toolset method):

    validation (the SDK, from the signature; errors rewritten by :class:`OpsServer`)
    → timing → approval + audit for writes (:mod:`opsmcp.approval`) → the toolset method
    → error mapping → size budget (:mod:`opsmcp.budget`) → compact text + structuredContent

so no toolset repeats error handling, and a failure anywhere becomes a tool error
(``isError: true``) with a message the model can act on, never a stack trace. This module
keeps :class:`Runtime` (what the server built), the choke point and :func:`build_server`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import threading
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.request_state import RequestStateSecurity
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ValidationError

from opsmcp import __version__
from opsmcp.approval import INJECTED, ApprovalFlow
from opsmcp.audit import HOST, AuditSink, FileAudit, bounded, mark_interrupted, now_iso, redact
from opsmcp.backends.aws import AwsClients
from opsmcp.budget import cut_text, fit_result
from opsmcp.config import Settings
from opsmcp.errors import OpsError
from opsmcp.events import DepthPoller, EventHub, queue_sources
from opsmcp.identity import caller, require_scope
from opsmcp.protocol_guard import ProtocolGuard
from opsmcp.telemetry import ToolStats
from opsmcp.toolsets.base import ToolMark, marked_tools
from opsmcp.validation import explain

log = logging.getLogger("opsmcp")

INSTRUCTIONS = """\
opsmcp operates an order-processing system: SQS queues and DLQs, the orders table, \
application logs, metrics and approved playbooks. Triage path: list_queues → \
analyze_dlq on a growing DLQ (groups by failure signature with order and trace ids) → \
get_trace / search_logs for the explaining errors → get_order for affected orders → \
query_metrics for onset and scale. Writes (redrive_dlq, run_playbook) exist only when \
the operator enabled them; always dry-run first and show the preview to the user. A real \
write asks the user to approve (or, for clients without approval prompts, takes confirm=true \
and the preview's approval_token) and never does more than the preview showed."""


@dataclass
class Runtime:
    """What the server built: settings, shared AWS clients, toolset instances, stats, the
    audit sink and the approval flow (:class:`~opsmcp.approval.ApprovalFlow`)."""

    settings: Settings
    clients: AwsClients
    toolsets: dict[str, object]
    stats: ToolStats
    tools: dict[str, ToolMark]
    events: EventHub = field(default_factory=EventHub)
    poller: DepthPoller | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    startup_error: str | None = None
    audit: AuditSink | None = None
    disabled: dict[str, str] = field(default_factory=dict)  # toolset -> why its start-up check failed
    hidden: dict[str, str] = field(default_factory=dict)  # tool -> why it is not registered (writes off...)
    approvals: ApprovalFlow = field(init=False)

    def audit_record(self, tool: str, arguments: dict[str, Any], *, real: bool, phase: str, outcome: str,
                     start: float, call_id: str | None = None, approval: str | None = None,
                     counts: dict[str, Any] | None = None, note: str | None = None,
                     strict: bool = True) -> str | None:
        """Append one audit record (secrets in ``arguments`` redacted, long values cut by the
        sink); return its ``call_id``.

        With ``strict`` (the default) a failure raises OpsError, so the write does not act;
        otherwise it is logged and ``None`` is returned.
        """
        call_id = call_id or uuid.uuid4().hex
        shown = redact({k: v for k, v in arguments.items() if k not in INJECTED})
        record = {"time": now_iso(), "call_id": call_id, "phase": phase, "caller": caller.get(), "tool": tool,
                  "arguments": shown, "dry_run": not real, "outcome": outcome, "approval": approval,
                  "duration_ms": round((time.perf_counter() - start) * 1000, 1), "pid": os.getpid(), "host": HOST}
        if counts:
            record["counts"] = counts
        if note:
            record["note"] = note
        if self.audit is None:
            return call_id
        try:
            self.audit.append(record)
        except OpsError:
            if strict:
                raise
            log.error("audit record lost: %s", cut_text(json.dumps(record, default=str), 4_000))
            return None
        if self.events.listeners:
            self.events.publish("write", bounded(record))  # the same cut the audit sink applies
        return call_id

    def __post_init__(self) -> None:
        self.ready.set()  # cleared by whoever starts a background dependency (the sandbox)
        self.approvals = ApprovalFlow(self.settings)

    def close_interrupted(self) -> None:
        """Mark the intents that a killed server left without an outcome as ``interrupted``
        (:func:`opsmcp.audit.mark_interrupted`); a failure is logged, never raised."""
        if self.audit is None:
            return
        try:
            for record in mark_interrupted(self.audit):
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


#: The old name of :func:`opsmcp.budget.fit_result`.
bound_result = fit_result


def _choke(name: str, fn: Callable[..., Any], mark: ToolMark, runtime: Runtime) -> Callable[..., Any]:
    """Wrap toolset method ``fn`` as the MCP tool ``name``: the single choke point.

    The wrapper keeps ``fn``'s signature (so the SDK derives the same input and output
    schemas), fills server-injected parameters (``progress``; ``confirmed`` for writes), and
    maps failures:
    :class:`OpsError` → tool error with its hint; anything unexpected → tool error naming
    the exception type, with the traceback logged to stderr. Write tools also get the
    approval flow and the audit trail (:meth:`ApprovalFlow.gate`). The result is cut to the
    size budget (:func:`~opsmcp.budget.fit_result`) and sent as ``structuredContent`` plus
    the same JSON, compact, as its text (:func:`_tool_result`).
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    wants = {p for p in INJECTED if p in signature.parameters}
    params = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in signature.parameters.values() if p.name not in INJECTED]
    budget = runtime.settings.max_result_bytes
    extra: list[inspect.Parameter] = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    if mark.write:
        extra += runtime.approvals.params(name, fn, mark, runtime, [p.name for p in params])

    async def tool_call(ctx: Context, **kwargs: Any) -> Any:
        start = time.perf_counter()
        ok = False
        try:
            require_scope(name, mark.write)
            await runtime.wait_ready()
            if "progress" in wants:
                kwargs["progress"] = _progress_reporter(ctx)
            if mark.write:
                result = await runtime.approvals.gate(runtime, name, fn, mark, kwargs, start, "confirmed" in wants)
            else:
                result = await fn(**kwargs)
            ok = True
            return _tool_result(fit_result(result, budget))
        except OpsError as exc:
            raise ToolError(str(exc)) from exc
        except ToolError:
            raise
        except Exception as exc:
            log.exception("tool %s failed unexpectedly", name)
            raise ToolError(
                f"Internal error in {name}: {type(exc).__name__}: {exc}. This is an opsmcp bug; the server log has "
                "the details. Retrying with other arguments may work."
            ) from exc
        finally:
            elapsed = time.perf_counter() - start
            runtime.stats.record(name, elapsed, ok, sys.exc_info()[1])
            if runtime.events.listeners:
                runtime.publish({"type": "tool_call", "tool": name, "ok": ok, "ms": round(elapsed * 1000, 2),
                                 "caller": caller.get(), "at": time.time()})

    all_params = params + extra
    tool_call.__name__ = name
    tool_call.__qualname__ = name
    tool_call.__doc__ = inspect.cleandoc(fn.__doc__ or name)
    tool_call.__signature__ = signature.replace(parameters=all_params, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
    tool_call.__annotations__ = {p.name: p.annotation for p in all_params} | {"return": hints.get("return")}
    return tool_call


def _tool_result(result: Any) -> Any:
    """A pydantic result as a ``CallToolResult``: ``structuredContent`` and, as the text that
    many clients hand to the model, the same JSON without indentation (the SDK's default
    text is indented JSON, 1.3-1.6x larger). Other values pass to the SDK unchanged."""
    if not isinstance(result, BaseModel):
        return result
    return CallToolResult(content=[TextContent(type="text", text=result.model_dump_json(by_alias=True))],
                          structured_content=result.model_dump(mode="json", by_alias=True))


def _progress_reporter(ctx: Context) -> Callable[[float, float | None, str], Any]:
    """An ``async (progress, total, message)`` callable that sends MCP progress notifications.

    Notification failures (a client that went away) are logged, never raised into the tool.
    """

    async def report(progress: float, total: float | None = None, message: str = "") -> None:
        try:
            await ctx.report_progress(progress, total, message)
        except Exception:  # progress is best effort; the tool's own result still matters
            log.debug("progress notification failed", exc_info=True)

    return report


class OpsServer(MCPServer):
    """The SDK's server with opsmcp's answers where the SDK's own would not help a model:

    - a call of a tool that exists but is not registered here (a write tool on a read-only
      server, a disabled toolset) says why and what to change, instead of "Unknown tool";
    - arguments that fail the input schema get :func:`opsmcp.validation.explain` (argument,
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
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError) or not isinstance(exc.__cause__, ValidationError):
                raise
            schema = next((t.input_schema for t in await self.list_tools() if t.name == name), {})
            raise ToolError(explain(name, exc.__cause__, schema, arguments)) from exc.__cause__


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


def _wire_events(runtime: Runtime) -> None:
    """Size the ``/events`` hub from settings and, with the queues toolset, attach the one
    depth poller (started by the hub's first listener, stopped by its last)."""
    settings = runtime.settings
    hub = runtime.events = EventHub(history=settings.events_history, buffer=settings.events_buffer)
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


def build_audit(settings: Settings, clients: AwsClients) -> AuditSink:
    """The audit sink: the DynamoDB table when ``audit_table`` is set, else the JSON Lines file."""
    from opsmcp.audit import DynamoAudit

    if settings.audit_table:
        return DynamoAudit(clients.client("dynamodb"), settings.audit_table)
    return FileAudit(settings.audit_log_path)


def build_server(settings: Settings | None = None) -> tuple[MCPServer, Runtime]:
    """Build the MCP server for ``settings`` (default: read from the environment).

    Registers every ``@tool`` method of every enabled toolset through :func:`_choke`;
    write tools only when ``settings.allow_writes``. Returns ``(server, runtime)``.
    """
    settings = settings or Settings()
    clients = AwsClients(settings)
    runtime = Runtime(settings=settings, clients=clients, toolsets=build_toolsets(settings, clients),
                      stats=ToolStats(), tools={}, audit=build_audit(settings, clients))
    _wire_events(runtime)
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
    if isinstance(runtime.audit, FileAudit):
        runtime.close_interrupted()  # local and quick; a DynamoDB table is checked once backends are ready
    elif runtime.audit is not None:
        def recover() -> None:
            runtime.ready.wait()
            runtime.close_interrupted()

        threading.Thread(target=recover, daemon=True, name="opsmcp-audit-recovery").start()
    from opsmcp.completions import register_prompts_and_resources

    register_prompts_and_resources(server, runtime)  # prompts, resources, completions of the registered tools
    server.middleware.append(ProtocolGuard(server, lambda n: runtime.tools[n].write if n in runtime.tools else None))
    return server, runtime


def register_toolset(server: MCPServer, runtime: Runtime, toolset_name: str, toolset: object) -> None:
    """Register every ``@tool`` method of ``toolset`` through :func:`_choke`.

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
            _choke(name, fn, mark, runtime),
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
