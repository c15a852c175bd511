"""The MCP server: builds toolsets, registers their tools, and owns the one choke point.

Every tool call passes through :func:`_choke` (the wrapper around each toolset method):

    validation (the SDK, from the signature) → timing → confirmation + audit (writes)
    → the toolset method → error mapping → size budget

so no toolset repeats error handling, and a failure anywhere becomes a tool error
(``isError: true``) with a message the model can act on, never a stack trace.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import logging
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel

from opsmcp import __version__
from opsmcp.backends.aws import AwsClients
from opsmcp.config import Settings
from opsmcp.errors import OpsError
from opsmcp.toolsets.base import Result, ToolMark, marked_tools

log = logging.getLogger("opsmcp")

#: Who is calling: the authenticated HTTP subject (set by :mod:`opsmcp.http`), else "stdio".
caller: contextvars.ContextVar[str] = contextvars.ContextVar("opsmcp_caller", default="stdio")

INSTRUCTIONS = """\
opsmcp operates an order-processing system: SQS queues and DLQs, the orders table, \
application logs, metrics and approved playbooks. Triage path: list_queues → \
analyze_dlq on a growing DLQ (groups by failure signature with order and trace ids) → \
get_trace / search_logs for the explaining errors → get_order for affected orders → \
query_metrics for onset and scale. Writes (redrive_dlq, run_playbook) exist only when \
the operator enabled them; always dry-run first and show the preview."""


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


def bound_result(result: Any, budget: int) -> Any:
    """Cut a :class:`Result` to at most ``budget`` bytes of JSON by dropping list items.

    Trims the longest top-level list field from the end until the JSON fits, sets
    ``truncated`` and adds a note naming what was cut. Non-Result values pass unchanged.
    """
    if not isinstance(result, Result):
        return result
    size = len(result.model_dump_json())
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
        size = len(result.model_dump_json())
    cut = [f"{name}: {len(lists[name])} of {n}" for name, n in original.items() if len(lists[name]) < n]
    result.truncated = True
    result.notes.append(
        f"result cut to the {budget}-byte budget ({'; '.join(cut) or 'nothing to cut'}); narrow the query or lower the limit"
    )
    return result


def _choke(name: str, fn: Callable[..., Any], mark: ToolMark, runtime: Runtime) -> Callable[..., Any]:
    """Wrap toolset method ``fn`` as the MCP tool ``name``: the single choke point.

    The wrapper keeps ``fn``'s signature (so the SDK derives the same input and output
    schemas) and maps failures: :class:`OpsError` → tool error with its hint; anything
    unexpected → tool error naming the exception type, with the traceback logged to stderr.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()]
    budget = runtime.settings.max_result_bytes

    async def tool_call(**kwargs: Any) -> Any:
        start = time.perf_counter()
        ok = False
        try:
            await runtime.wait_ready()
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

    tool_call.__name__ = name
    tool_call.__qualname__ = name
    tool_call.__doc__ = inspect.cleandoc(fn.__doc__ or name)
    tool_call.__signature__ = signature.replace(parameters=params, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
    tool_call.__annotations__ = {p.name: p.annotation for p in params} | {"return": hints.get("return")}
    return tool_call


def build_toolsets(settings: Settings, clients: AwsClients) -> dict[str, object]:
    """Instantiate the enabled toolsets (``settings.toolsets``) with their backends."""
    from opsmcp.backends.dynamodb import DynamoBackend
    from opsmcp.backends.sqs import SqsBackend
    from opsmcp.toolsets.orders import OrderTools
    from opsmcp.toolsets.queues import QueueTools

    enabled = set(settings.toolsets)
    out: dict[str, object] = {}
    if "queues" in enabled:
        out["queues"] = QueueTools(SqsBackend(clients))
    if "orders" in enabled:
        out["orders"] = OrderTools(settings, DynamoBackend(clients))
    return out


def build_server(settings: Settings | None = None) -> tuple[MCPServer, Runtime]:
    """Build the MCP server for ``settings`` (default: read from the environment).

    Registers every ``@tool`` method of every enabled toolset through :func:`_choke`;
    write tools only when ``settings.allow_writes``. Returns ``(server, runtime)``.
    """
    settings = settings or Settings()
    clients = AwsClients(settings)
    runtime = Runtime(settings=settings, clients=clients, toolsets=build_toolsets(settings, clients),
                      stats=ToolStats(), tools={})
    server = MCPServer("opsmcp", instructions=INSTRUCTIONS, version=__version__)
    for toolset in runtime.toolsets.values():
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
    return server, runtime
