"""MCP prompts: the investigations a person starts from Claude Desktop's slash-command menu.

Each prompt expands to one user message that names the shortest tool path with the
arguments filled in, and says what evidence a good answer cites. Steps that need a tool
this server does not have (a disabled toolset, writes off) are left out, and a prompt whose
first tool is missing is not listed at all:

* ``triage_dlq(queue)``: needs ``analyze_dlq`` (queues toolset);
* ``explain_order(order_id)``: needs ``get_order`` (orders toolset);
* ``investigate_alert(fingerprint)``: needs ``get_alert`` (alerts toolset);
* ``health_check()``: needs ``list_queues``, ``log_stats`` or ``query_metrics``.

The SDK answers an unknown prompt name or a missing argument with ``-32603 Internal
error``; :func:`prompt_params_guard` (a server middleware) answers them with ``-32602
Invalid params`` instead, as the MCP spec asks, and names what is allowed.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver.prompts.base import Message, Prompt, PromptArgument, UserMessage
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import Field

from opsmcp.errors import did_you_mean

#: Longest value any prompt argument may have (queue names are at most 80 characters,
#: order ids and alert fingerprints far less).
MAX_ARG_CHARS = 200

QueueArg = Annotated[str, Field(description="Name of the dead-letter queue to triage, e.g. 'order-queue-dlq'.")]
OrderArg = Annotated[str, Field(description="The order's orderId, e.g. a UUID from a dead letter or a ticket.")]
FingerprintArg = Annotated[str, Field(description="The alert's fingerprint, as list_alerts shows it.")]


@dataclass(frozen=True)
class PromptSpec:
    """One prompt: its function (arguments annotated with descriptions), title, and the
    tools of which at least one must be registered for it to be listed."""

    name: str
    title: str
    needs_any: tuple[str, ...]
    build: Callable[[Collection[str], Callable[[str], list[str]]], Callable[..., list[Message]]]


def _steps(tools: Collection[str], steps: list[tuple[str | None, str]]) -> str:
    """Number the steps whose tool is registered (``None``: always shown)."""
    kept = [text for tool, text in steps if tool is None or tool in tools]
    return "\n".join(f"{i}. {text}" for i, text in enumerate(kept, 1))


def _q(value: str) -> str:
    """``value`` as a JSON string literal, for arguments written into a tool call."""
    import json

    return json.dumps(value)


def _triage_dlq(tools: Collection[str], runbooks: Callable[[str], list[str]]) -> Callable[..., list[Message]]:
    def triage_dlq(queue: QueueArg) -> list[Message]:
        """Triage a dead-letter queue: what failed, since when, whether it still fails, and
        which failures are safe to redrive."""
        q = _q(queue)
        path = _steps(tools, [
            ("analyze_dlq", f"analyze_dlq(queue={q}) — the dead letters grouped by failure signature, with "
                            "counts, first/last sent time, order ids and trace ids (a deep DLQ: a stated sample; "
                            "check complete). Nothing is moved."),
            ("get_trace", "get_trace(trace_id=<a trace id of the largest group>) — the request across services; "
                          "the first ERROR line explains the failure."),
            ("search_logs", 'search_logs(query=<the group\'s error message in double quotes>, level="ERROR", '
                            'start="-2h") — is it still happening? Compare the newest hit with now.'),
            ("get_order", "get_order(order_id=<an order id of the group>) — what the customer sees now."),
            ("query_metrics", f'query_metrics(namespace="AWS/SQS", metric_name="ApproximateNumberOfMessagesVisible", '
                              f'dimensions={{"QueueName": {q}}}, stat="Maximum", period_seconds=300, start="-6h") '
                              "— when the DLQ started to grow."),
            ("redrive_dlq", f"Only for a group whose cause is fixed: redrive_dlq(queue={q}, signature=<that "
                            "group's signature>, dry_run=true); show the preview to the user. A real move needs "
                            "their approval; when it answers status pending_approval, a person approves it "
                            "outside this conversation: tell the user, do not repeat the call, and poll "
                            "get_approval(approval_id) for the decision."),
        ])
        books = runbooks(queue)
        text = (
            f"Triage the dead-letter queue {q}: what failed, since when, whether it is still failing, and what "
            f"to do.\n\nShortest tool path:\n{path}\n\n"
            "A good answer cites: each failure signature with its count and time range; for the largest group "
            "one trace id and its explaining error line (service and message); one or two affected order ids "
            "with their status; when the DLQ started to grow; whether the cause is still active; and which "
            "groups are safe to redrive and which are not (business-rule rejections, card declines and poison "
            "messages never are)."
        )
        if books:
            text += "\n\nRunbooks for this queue (read them as resources): " + ", ".join(books)
        return [UserMessage(text)]

    return triage_dlq


def _explain_order(tools: Collection[str], runbooks: Callable[[str], list[str]]) -> Callable[..., list[Message]]:
    def explain_order(order_id: OrderArg) -> list[Message]:
        """Explain what happened to one order: its status, its trace across services, and
        whether a message about it is stuck in a dead-letter queue."""
        o = _q(order_id)
        path = _steps(tools, [
            ("get_order", f"get_order(order_id={o}) — status, date, customer, total and its traceId."),
            ("get_trace", "get_trace(trace_id=<the order's traceId>) — every log line of the order's request, "
                          "oldest first; the first ERROR is the failure."),
            ("search_logs", f"search_logs(query={_q(chr(34) + order_id + chr(34))}, start=\"-2d\") — lines that "
                            "name the order outside its trace (retries, later events)."),
            ("list_queues", "list_queues() — DLQs that hold messages now; the failing service's DLQ is the "
                            "place to look."),
            ("analyze_dlq", "analyze_dlq(queue=<that DLQ>) — the order id appears in a group's order_ids (a "
                            "page; ids_cursor gives the rest) if a message about it is dead-lettered; the group "
                            "names the cause."),
        ])
        text = (
            f"Explain what happened to order {o}.\n\nShortest tool path:\n{path}\n\n"
            "A good answer cites: the order's status and date; the services its trace passed through, with "
            "the first ERROR line (time, service, message); whether a dead letter about it exists (queue and "
            "failure signature); and what the customer sees and what would fix it. Say so plainly when the "
            "order is fine."
        )
        return [UserMessage(text)]

    return explain_order


def _investigate_alert(tools: Collection[str], runbooks: Callable[[str], list[str]]) -> Callable[..., list[Message]]:
    def investigate_alert(fingerprint: FingerprintArg) -> list[Message]:
        """Investigate one alert: what fired, the evidence behind it in queues, logs and
        metrics, and the next step."""
        f = _q(fingerprint)
        path = _steps(tools, [
            ("get_alert", f"get_alert(fingerprint={f}) — labels (service, queue, severity), annotations and "
                          "when it started."),
            ("query_metrics", "query_metrics(...) with the alert's metric and labels, start 1 h before it "
                              "started — the onset and whether it is still firing."),
            ("search_logs", 'search_logs(service=<the alert\'s service>, level="ERROR", start=<1 h before the '
                            "alert>) — the errors around the onset."),
            ("analyze_dlq", "analyze_dlq(queue=<the alert's queue or that queue's DLQ>) — when the alert is "
                            "about a queue: the failure signatures of its dead letters."),
            ("get_trace", "get_trace(trace_id=<a trace id from the errors or the dead letters>) — one failing "
                          "request end to end."),
        ])
        text = (
            f"Investigate alert {f}: is it real, what caused it, and what should happen next.\n\n"
            f"Shortest tool path:\n{path}\n\n"
            "A good answer cites: the alert's labels and start time; the metric values at onset and now; "
            "2-3 error lines or failure signatures with counts; one trace id; and a next step (a runbook, a "
            "playbook preview, or a redrive preview) — or why the alert is noise."
        )
        return [UserMessage(text)]

    return investigate_alert


def _health_check(tools: Collection[str], runbooks: Callable[[str], list[str]]) -> Callable[..., list[Message]]:
    def health_check() -> list[Message]:
        """A quick health check of the order-processing system: queues and DLQs, error
        rates and latency, and anything that needs attention."""
        path = _steps(tools, [
            ("list_queues", "list_queues() — every queue's visible / in-flight counts; any DLQ with visible > 0 "
                            "and any source queue whose visible count keeps growing needs attention."),
            ("analyze_dlq", "analyze_dlq(queue=<each non-empty DLQ>) — the failure signatures and counts."),
            ("log_stats", 'log_stats(start="-6h", group_by="level") — ERROR counts per interval; a step up '
                          "marks the onset."),
            ("log_stats", 'log_stats(start="-1h", group_by="service", level="ERROR") — which services fail now.'),
            ("query_metrics", 'query_metrics(namespace="OpsMCP/Services", metric_name="LatencyP95", '
                              'dimensions={"Service": <a failing service>}, start="-6h") — latency since the onset.'),
            ("list_alerts", "list_alerts() — alerts firing now."),
        ])
        text = (
            f"Check the health of the order-processing system.\n\nShortest tool path:\n{path}\n\n"
            "A good answer is short: a one-line verdict (healthy / degraded / incident), then per problem the "
            "queue or service, the count or rate, since when, and one piece of evidence (a failure signature, "
            "an error line or a metric value). End with the single most useful next step."
        )
        return [UserMessage(text)]

    return health_check


PROMPTS: tuple[PromptSpec, ...] = (
    PromptSpec("triage_dlq", "Triage a DLQ", ("analyze_dlq",), _triage_dlq),
    PromptSpec("investigate_alert", "Investigate an alert", ("get_alert",), _investigate_alert),
    PromptSpec("explain_order", "Explain an order", ("get_order",), _explain_order),
    PromptSpec("health_check", "Health check", ("list_queues", "log_stats", "query_metrics"), _health_check),
)


def register_prompts(server: MCPServer, tools: Collection[str], runbooks: Callable[[str], list[str]]) -> list[str]:
    """Register the prompts whose tools are registered; return their names.

    Args:
        server: the MCP server (its tools are already registered).
        tools: names of the registered tools.
        runbooks: ``queue name -> runbook resource URIs`` that mention it (for triage_dlq).
    """
    names = []
    for spec in PROMPTS:
        if not any(t in tools for t in spec.needs_any):
            continue
        fn = spec.build(tools, runbooks)
        server.add_prompt(Prompt(name=spec.name, title=spec.title, description=inspect.getdoc(fn),
                                 arguments=_arguments(fn), fn=fn))
        names.append(spec.name)
    server.middleware.append(prompt_params_guard(server))
    return names


def _arguments(fn: Callable[..., Any]) -> list[PromptArgument]:
    """The prompt arguments of ``fn``: its parameters, described by their ``Field`` (all
    strings, required unless they have a default). Built directly rather than through
    ``Prompt.from_function``, which spends ~6 ms per prompt building pydantic validators
    that :func:`prompt_params_guard` makes unnecessary."""
    hints = typing.get_type_hints(fn, include_extras=True)
    out = []
    for name, param in inspect.signature(fn).parameters.items():
        meta = next((m for m in getattr(hints.get(name), "__metadata__", ()) if hasattr(m, "description")), None)
        out.append(PromptArgument(name=name, description=getattr(meta, "description", None),
                                  required=param.default is inspect.Parameter.empty))
    return out


def prompt_params_guard(server: MCPServer) -> ServerMiddleware[Any]:
    """A server middleware that answers a ``prompts/get`` for an unknown prompt, with a
    missing or unknown argument, or with an argument over ``MAX_ARG_CHARS`` characters,
    with JSON-RPC ``-32602 Invalid params`` naming what is allowed (the SDK would answer
    ``-32603``). Every other message passes unchanged."""

    async def guard(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "prompts/get" or ctx.request_id is None:
            return await call_next(ctx)
        params = ctx.params or {}
        name = params.get("name")
        arguments = params.get("arguments") or {}
        prompts = {p.name: p for p in await server.list_prompts()}
        if not isinstance(name, str) or name not in prompts:
            hint = did_you_mean(str(name), list(prompts), 3, sentence=True)
            hint = f" {hint}" if hint else ""
            raise MCPError(INVALID_PARAMS, f"Unknown prompt {name!r}.{hint} prompts/list names: "
                           + ", ".join(sorted(prompts)), {"name": name})
        if not isinstance(arguments, dict):
            raise MCPError(INVALID_PARAMS, f"Arguments of prompt {name!r} must be an object of strings.")
        declared = {a.name: a for a in prompts[name].arguments or []}
        unknown = sorted(set(arguments) - set(declared))
        missing = sorted(a for a, spec in declared.items() if spec.required and not arguments.get(a))
        if unknown or missing:
            wants = ", ".join(f"{a} ({'required' if s.required else 'optional'})" for a, s in declared.items())
            what = f"unknown argument(s) {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"
            raise MCPError(INVALID_PARAMS, f"Prompt {name!r}: {what}. It takes: {wants or 'no arguments'}.",
                           {"name": name})
        for arg, value in arguments.items():
            if not isinstance(value, str) or len(value) > MAX_ARG_CHARS:
                raise MCPError(INVALID_PARAMS, f"Prompt {name!r}: argument {arg!r} must be a string of at most "
                               f"{MAX_ARG_CHARS} characters.", {"name": name})
        return await call_next(ctx)

    return guard
