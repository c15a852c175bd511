"""The MCP server: builds toolsets, registers their tools, and owns the one choke point.

Every tool call passes through :func:`_choke` (the wrapper around each toolset method):

    validation (the SDK, from the signature) → timing → confirmation + audit (writes)
    → the toolset method → error mapping → size budget

so no toolset repeats error handling, and a failure anywhere becomes a tool error
(``isError: true``) with a message the model can act on, never a stack trace.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.mcpserver import (
    AcceptedElicitation,
    CancelledElicitation,
    Context,
    Elicit,
    ElicitationResult,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from opsmcp import __version__
from opsmcp.audit import AuditSink, now_iso, redact
from opsmcp.backends.aws import AwsClients
from opsmcp.config import Settings
from opsmcp.errors import OpsError
from opsmcp.identity import caller
from opsmcp.toolsets.base import Result, ToolMark, marked_tools

log = logging.getLogger("opsmcp")

INSTRUCTIONS = """\
opsmcp operates an order-processing system: SQS queues and DLQs, the orders table, \
application logs, metrics and approved playbooks. Triage path: list_queues → \
analyze_dlq on a growing DLQ (groups by failure signature with order and trace ids) → \
get_trace / search_logs for the explaining errors → get_order for affected orders → \
query_metrics for onset and scale. Writes (redrive_dlq, run_playbook) exist only when \
the operator enabled them; always dry-run first and show the preview to the user. A real \
write asks the user to approve (or, for clients without approval prompts, takes confirm=true \
after that preview) and never does more than the preview showed."""


@dataclass
class ToolStats:
    """Per-tool call counters for ``/metrics`` (Prometheus text format)."""

    calls: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self, tool: str, elapsed: float, ok: bool) -> None:
        """Count one call of ``tool`` that took ``elapsed`` seconds."""
        self.calls[tool] = self.calls.get(tool, 0) + 1
        self.seconds[tool] = self.seconds.get(tool, 0.0) + elapsed
        if not ok:
            self.errors[tool] = self.errors.get(tool, 0) + 1

    def render(self) -> str:
        """The counters in Prometheus exposition format."""
        out = ["# TYPE opsmcp_tool_calls_total counter"]
        out += [f'opsmcp_tool_calls_total{{tool="{t}"}} {n}' for t, n in sorted(self.calls.items())]
        out.append("# TYPE opsmcp_tool_errors_total counter")
        out += [f'opsmcp_tool_errors_total{{tool="{t}"}} {n}' for t, n in sorted(self.errors.items())]
        out.append("# TYPE opsmcp_tool_seconds_total counter")
        out += [f'opsmcp_tool_seconds_total{{tool="{t}"}} {s:.6f}' for t, s in sorted(self.seconds.items())]
        return "\n".join(out) + "\n"


@dataclass
class Runtime:
    """What the server built: settings, shared AWS clients, toolset instances, stats."""

    settings: Settings
    clients: AwsClients
    toolsets: dict[str, object]
    stats: ToolStats
    tools: dict[str, ToolMark]
    subscribers: set[Any] = field(default_factory=set)
    ready: threading.Event = field(default_factory=threading.Event)
    startup_error: str | None = None
    audit: AuditSink | None = None
    disabled: dict[str, str] = field(default_factory=dict)  # toolset -> why its start-up check failed
    previews: dict[str, tuple[float, Any]] = field(default_factory=dict)

    PREVIEW_TTL = 120.0  # seconds a preview is reused within one approval flow

    @staticmethod
    def _preview_key(name: str, kwargs: dict[str, Any]) -> str:
        return name + json.dumps({k: v for k, v in kwargs.items() if k not in INJECTED}, sort_keys=True, default=str)

    async def preview(self, name: str, fn: Callable[..., Any], mark: ToolMark, kwargs: dict[str, Any]) -> Any:
        """Run ``fn`` as its preview (``preview_arg`` true) and audit it; reuse a preview of
        the same arguments from the last 120 s.

        The reuse keeps the approval prompt identical across the rounds of one call
        (protocol 2026-07-28 re-runs resolvers; a prompt that changes is asked again) and
        avoids a second check-mode run. :meth:`forget_preview` ends it after the call.
        """
        args = dict(kwargs, **{str(mark.preview_arg): True})
        key = self._preview_key(name, args)
        now = time.monotonic()
        self.previews = {k: v for k, v in self.previews.items() if now - v[0] < self.PREVIEW_TTL}
        if key in self.previews:
            return self.previews[key][1]
        start = time.perf_counter()
        result = await fn(**args)
        self.audit_record(name, args, real=False, phase="preview", outcome=_status(result), start=start,
                          counts=_counts(result))
        self.previews[key] = (now, result)
        return result

    def cached_preview(self, name: str, mark: ToolMark, kwargs: dict[str, Any]) -> Any | None:
        """The preview of these arguments from the last 120 s (a dry run or an approval prompt)."""
        found = self.previews.get(self._preview_key(name, dict(kwargs, **{str(mark.preview_arg): True})))
        return found[1] if found and time.monotonic() - found[0] < self.PREVIEW_TTL else None

    def remember_preview(self, name: str, kwargs: dict[str, Any], result: Any) -> None:
        """Keep a dry run's result (``kwargs`` has the preview flag set) as the preview of a real call."""
        self.previews[self._preview_key(name, kwargs)] = (time.monotonic(), result)

    def forget_preview(self, name: str, mark: ToolMark, kwargs: dict[str, Any]) -> None:
        """Drop the cached preview of these arguments: the next real call previews afresh."""
        self.previews.pop(self._preview_key(name, dict(kwargs, **{str(mark.preview_arg): True})), None)

    def audit_record(self, tool: str, arguments: dict[str, Any], *, real: bool, phase: str, outcome: str,
                     start: float, call_id: str | None = None, approval: str | None = None,
                     counts: dict[str, Any] | None = None, strict: bool = True) -> str | None:
        """Append one audit record (secrets in ``arguments`` redacted); return its ``call_id``.

        With ``strict`` (the default) a failure raises OpsError, so the write does not act;
        otherwise it is logged and ``None`` is returned.
        """
        call_id = call_id or uuid.uuid4().hex
        shown = redact({k: v for k, v in arguments.items() if k not in INJECTED})
        record = {"time": now_iso(), "call_id": call_id, "phase": phase, "caller": caller.get(), "tool": tool,
                  "arguments": shown, "dry_run": not real, "outcome": outcome, "approval": approval,
                  "duration_ms": round((time.perf_counter() - start) * 1000, 1)}
        if counts:
            record["counts"] = counts
        if self.audit is None:
            return call_id
        try:
            self.audit.append(record)
        except OpsError:
            if strict:
                raise
            log.error("audit record lost: %s", json.dumps(record, default=str))
            return None
        return call_id

    def __post_init__(self) -> None:
        self.ready.set()  # cleared by whoever starts a background dependency (the sandbox)

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
        """Hand ``event`` to every ``/events`` subscriber queue; a full queue drops it."""
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(event)
            except Exception:  # a slow subscriber loses events rather than stalling tools
                log.debug("dropped an event for a slow /events subscriber")


def _json_bytes(result: BaseModel) -> int:
    return len(result.model_dump_json().encode())


def bound_result(result: Any, budget: int) -> Any:
    """Cut a :class:`Result` to at most ``budget`` bytes of JSON by dropping list items.

    Trims the longest top-level list field from the end until the JSON fits, sets
    ``truncated`` and adds a note naming what was cut. A page that was cut loses its
    ``next_cursor`` (following it would skip the cut items): the note says which ``limit``
    pages without gaps. A ``count`` field that counted the cut list is updated. A result
    with nothing left to cut is returned over budget, labelled. Non-Result values pass
    unchanged.
    """
    if not isinstance(result, Result):
        return result
    size = _json_bytes(result)
    if size <= budget:
        return result
    lists = {name: list(getattr(result, name)) for name in type(result).model_fields
             if isinstance(getattr(result, name), list) and name != "notes"}
    original = {name: len(items) for name, items in lists.items()}
    while size > budget and any(lists.values()):
        name = max(lists, key=lambda n: len(json.dumps([i.model_dump(mode="json") if isinstance(i, BaseModel) else i
                                                         for i in lists[n]], default=str)))
        items = lists[name]
        drop = max(1, len(items) // 4) if len(items) > 8 else 1
        del items[-drop:]
        setattr(result, name, items)
        size = _json_bytes(result)
    cut = {name: (len(lists[name]), n) for name, n in original.items() if len(lists[name]) < n}
    result.truncated = True
    if not cut:
        result.notes.append(f"result is larger than the {budget}-byte budget and has nothing to cut")
        return result
    if "count" in type(result).model_fields and result.count in {n for _, n in cut.values()}:
        result.count = max(kept for kept, _ in cut.values())  # type: ignore[attr-defined]
    how = "; ".join(f"{name}: {kept} of {n}" for name, (kept, n) in cut.items())
    note = f"result cut to the {budget}-byte budget ({how}); narrow the query or lower the limit"
    if result.next_cursor:
        result.next_cursor = None
        kept = min(kept for kept, _ in cut.values())
        note += f"; the page's cursor was dropped (it would skip the cut items): call again with limit={max(1, kept)}"
    result.notes.append(note)
    return result


class Approval(BaseModel):
    """The user's answer to a write's approval prompt."""

    approve: bool = Field(description="true to make the change described above; false to cancel it.")


#: Parameters the server fills itself; never part of a tool's input schema. ``progress``:
#: an async (progress, total, message) reporter; ``confirmed``: true only for a real write
#: the user approved (elicitation or confirm=true).
INJECTED = ("progress", "confirmed")
NOT_NEEDED = "no approval needed"
NO_ELICITATION = "client cannot elicit"


def _summary(result: Any) -> str:
    """A short, deterministic text of a preview result, for approval prompts and errors."""
    if hasattr(result, "preview_text"):
        return str(result.preview_text())
    text = result.model_dump_json(exclude={"notes"}) if isinstance(result, BaseModel) else json.dumps(result, default=str)
    return text if len(text) <= 2000 else text[:2000] + "..."


def _counts(result: Any) -> dict[str, Any]:
    """A result's top-level numbers and list lengths (moved, failed, duplicates_possible...),
    for audit records."""
    data = result.model_dump() if isinstance(result, BaseModel) else {}
    counts: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            counts[k] = v
        elif isinstance(v, list) and k not in ("notes",):
            counts[k] = len(v)
    return counts


def _status(result: Any) -> str:
    """A result's own ``status`` (playbooks) or ``ok``."""
    return str(getattr(result, "status", None) or "ok")


def _choke(name: str, fn: Callable[..., Any], mark: ToolMark, runtime: Runtime) -> Callable[..., Any]:
    """Wrap toolset method ``fn`` as the MCP tool ``name``: the single choke point.

    The wrapper keeps ``fn``'s signature (so the SDK derives the same input and output
    schemas), fills server-injected parameters (``progress``; ``confirmed`` for writes), and
    maps failures:
    :class:`OpsError` → tool error with its hint; anything unexpected → tool error naming
    the exception type, with the traceback logged to stderr. Write tools also get the
    approval flow and the audit trail (:func:`_write_gate`).
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    wants = {p for p in INJECTED if p in signature.parameters}
    params = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in signature.parameters.values() if p.name not in INJECTED]
    budget = runtime.settings.max_result_bytes
    extra: list[inspect.Parameter] = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    if mark.write:
        extra += _write_params(name, fn, mark, runtime, params)

    async def tool_call(ctx: Context, **kwargs: Any) -> Any:
        start = time.perf_counter()
        ok = False
        try:
            await runtime.wait_ready()
            if "progress" in wants:
                kwargs["progress"] = _progress_reporter(ctx)
            if mark.write:
                result = await _write_gate(name, fn, mark, runtime, kwargs, start, "confirmed" in wants)
            else:
                result = await fn(**kwargs)
            ok = True
            return bound_result(result, budget)
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
            runtime.stats.record(name, elapsed, ok)
            if runtime.subscribers:
                runtime.publish({"type": "tool_call", "tool": name, "ok": ok, "ms": round(elapsed * 1000, 2),
                                 "caller": caller.get(), "at": time.time()})

    all_params = params + extra
    tool_call.__name__ = name
    tool_call.__qualname__ = name
    tool_call.__doc__ = inspect.cleandoc(fn.__doc__ or name)
    tool_call.__signature__ = signature.replace(parameters=all_params, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
    tool_call.__annotations__ = {p.name: p.annotation for p in all_params} | {"return": hints.get("return")}
    return tool_call


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


def _write_params(name: str, fn: Callable[..., Any], mark: ToolMark, runtime: Runtime,
                  params: list[inspect.Parameter]) -> list[inspect.Parameter]:
    """The extra parameters of a write tool: ``confirm`` and the approval resolver."""
    tool_params = [p.name for p in params]

    async def approval(ctx: Context, **kwargs: Any) -> Any:
        if kwargs.get(mark.preview_arg) is not False:
            return NOT_NEEDED  # a dry run / check run changes nothing: no approval
        caps = ctx.client_capabilities
        if caps is None or caps.elicitation is None:
            return NO_ELICITATION
        # Resolvers run before the tool body (outside _choke), so they wait for start-up and
        # map errors themselves.
        try:
            await runtime.wait_ready()
            preview = await runtime.preview(name, fn, mark, {k: kwargs[k] for k in tool_params})
        except OpsError as exc:
            raise ToolError(str(exc)) from exc
        except Exception as exc:
            log.exception("preview of %s failed unexpectedly", name)
            raise ToolError(f"Internal error while previewing {name}: {type(exc).__name__}: {exc}.") from exc
        return Elicit(
            f"opsmcp wants to make a real change with {name}:\n{_summary(preview)}\n"
            "Approve this change? Nothing happens unless you accept.",
            Approval,
        )

    resolver_params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    resolver_params += [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in tool_params + ["confirm"]]
    approval.__signature__ = inspect.Signature(resolver_params)  # type: ignore[attr-defined]
    approval.__annotations__ = {"ctx": Context}
    approval.__name__ = approval.__qualname__ = f"approve_{name}"
    confirm = Annotated[bool, Field(description=(
        "Only for clients without confirmation prompts: set true after the user approved the preview "
        "that a call without it returned. Ignored for dry runs."))]
    return [
        inspect.Parameter("confirm", inspect.Parameter.KEYWORD_ONLY, annotation=confirm, default=False),
        inspect.Parameter("approval", inspect.Parameter.KEYWORD_ONLY,
                          annotation=Annotated[ElicitationResult[Approval], Resolve(approval)]),
    ]


async def _write_gate(name: str, fn: Callable[..., Any], mark: ToolMark, runtime: Runtime,
                      kwargs: dict[str, Any], start: float, pass_confirmed: bool) -> Any:
    """Run a write tool: approval check, intent record, the call, outcome record.

    Raises:
        OpsError: declined, not confirmed (with the preview in the message), or the audit
            record could not be written (then nothing acted).
    """
    outcome = kwargs.pop("approval")
    confirmed = kwargs.pop("confirm", False)
    real = kwargs.get(mark.preview_arg) is False
    asked = dict(kwargs)  # the arguments as called (the preview cache's key), before any cap
    how = None
    if real:
        answer = outcome.data if isinstance(outcome, AcceptedElicitation) else None
        if answer == NO_ELICITATION:
            preview = runtime.cached_preview(name, mark, kwargs)
            if not confirmed or preview is None:
                # confirm=true counts only after the caller has seen a preview of these arguments
                preview = preview or await runtime.preview(name, fn, mark, kwargs)
                runtime.audit_record(name, kwargs, real=True, phase="outcome", outcome="needs_confirmation",
                                     start=start)
                raise OpsError(
                    f"Not done: {name} with {mark.preview_arg}=false makes a real change and needs the user's approval. "
                    f"Preview:\n{_summary(preview)}",
                    "show this preview to the user; if they agree, call again with the same arguments and confirm=true.",
                )
            how = "confirm_argument"
        elif isinstance(answer, Approval) and answer.approve:
            how = "elicitation"
        else:  # declined, cancelled, or accepted with approve=false
            action = "cancelled" if isinstance(outcome, CancelledElicitation) else "declined"
            runtime.audit_record(name, kwargs, real=True, phase="outcome", outcome=action, start=start)
            runtime.forget_preview(name, mark, kwargs)
            raise OpsError(f"The user {action} the change; {name} did nothing.",
                           "ask the user what to do instead, or run a dry run to show the preview again.")
        approved = runtime.cached_preview(name, mark, kwargs)
        if mark.preview_bound and approved is not None:
            arg, field_name = mark.preview_bound
            kwargs[arg] = min(kwargs[arg], getattr(approved, field_name))  # never more than was shown
    call_id = runtime.audit_record(name, kwargs, real=real, phase="intent", outcome="started", start=start,
                                   approval=how)
    call_args = dict(kwargs, confirmed=how is not None) if pass_confirmed else kwargs
    try:
        result = await fn(**call_args)
    except BaseException as exc:  # cancellation too: the trail must say how the write ended
        import anyio

        ended = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else f"error: {exc}"
        runtime.audit_record(name, kwargs, real=real, phase="outcome", outcome=ended, start=start,
                             call_id=call_id, approval=how, strict=False)
        raise
    finally:
        if real:
            runtime.forget_preview(name, mark, asked)
    if not real:
        runtime.remember_preview(name, kwargs, result)
    if not runtime.audit_record(name, kwargs, real=real, phase="outcome", outcome=_status(result), start=start,
                                call_id=call_id, approval=how, counts=_counts(result), strict=False):
        if isinstance(result, Result):
            result.notes.append("WARNING: the outcome audit record could not be written (see server log)")
    return result


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
        from opsmcp.toolsets.metrics import MetricTools

        out["metrics"] = MetricTools(settings, clients)
    if "playbooks" in enabled:
        from opsmcp.toolsets.playbooks import PlaybookTools

        out["playbooks"] = PlaybookTools(settings)
    return out


def build_audit(settings: Settings, clients: AwsClients) -> AuditSink:
    """The audit sink: the DynamoDB table when ``audit_table`` is set, else the JSON Lines file."""
    from opsmcp.audit import DynamoAudit, FileAudit

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
    level = settings.log_level.upper()
    server = MCPServer("opsmcp", instructions=INSTRUCTIONS, version=__version__,
                       log_level=level if level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "WARNING")
    for toolset_name, toolset in runtime.toolsets.items():
        check = getattr(toolset, "check", None)
        if check is not None:
            try:
                check()  # e.g. playbooks: the catalog loads and ansible-playbook is installed
            except OpsError as exc:
                runtime.disabled[toolset_name] = str(exc)
                log.error("toolset %s disabled: %s", toolset_name, exc)
                continue
        for name, fn, mark in marked_tools(toolset):
            if mark.write and not settings.allow_writes:
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
    from opsmcp.completions import register_prompts_and_resources

    register_prompts_and_resources(server, runtime)  # prompts, resources, completions of the registered tools
    return server, runtime
