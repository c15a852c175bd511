"""The single choke point every tool call crosses (:func:`choke`).

    validation (the SDK, from the signature; errors rewritten by
    :class:`opsmcp.server.OpsServer` with :mod:`opsmcp.surface.arg_errors`)
    → scope check → readiness → approval + audit for writes (:mod:`opsmcp.calls.approval`)
    → the toolset method → error mapping → size budget (:mod:`opsmcp.result_size`)
    → compact text + ``structuredContent`` → one INFO log line (:mod:`opsmcp.logsetup`)

so no toolset repeats error handling, and a failure anywhere becomes a tool error
(``isError: true``) with a message the model can act on, never a stack trace.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
import typing
from collections.abc import Callable
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel

from opsmcp.backends.aws import call_budget
from opsmcp.calls.approval import asked_for_progress
from opsmcp.calls.identity import caller, require_scope
from opsmcp.result_size import fit_result, json_size
from opsmcp.calls.runtime import Runtime
from opsmcp.errors import OpsError
from opsmcp.logsetup import calls_log, tool_call_line
from opsmcp.telemetry import outcome_of
from opsmcp.results import UNTRUSTED_NOTE, OutsideText
from opsmcp.toolsets.base import INJECTED, ToolMark

log = logging.getLogger("opsmcp")
#: Parameters left out of a call's logged argument size: filled by the server (injected, or by
#: the approval flow's resolvers), not sent by the client.
UNCOUNTED = frozenset(INJECTED) | {"approval", "shown"}


def choke(name: str, fn: Callable[..., Any], mark: ToolMark, runtime: Runtime) -> Callable[..., Any]:
    """Wrap toolset method ``fn`` as the MCP tool ``name``: the single choke point.

    The wrapper keeps ``fn``'s signature (so the SDK derives the same input and output
    schemas), fills server-injected parameters (``progress``; ``confirmed`` for writes), and
    maps failures:
    :class:`OpsError` → tool error with its hint; anything unexpected → tool error naming
    the exception type, with the traceback logged to stderr. Write tools also get the
    approval flow and the audit trail (:meth:`ApprovalFlow.gate`). The result is cut to the
    size budget (:func:`~opsmcp.result_size.fit_result`) and sent as ``structuredContent`` plus
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
        extra += runtime.approvals.params(name, fn, mark, [p.name for p in params])

    async def tool_call(ctx: Context, **kwargs: Any) -> Any:
        start = time.perf_counter()
        ok = False
        logged = calls_log.isEnabledFor(logging.INFO)
        argument_bytes = json_size({k: v for k, v in kwargs.items() if k not in UNCOUNTED}) if logged else None
        result_bytes: int | None = None
        try:
            require_scope(name, mark.write)
            await runtime.wait_ready()
            if "progress" in wants:
                kwargs["progress"] = _progress_reporter(ctx)
            with call_budget():  # the AWS calls of this tool call share one budget (backends.aws)
                if mark.write:
                    waiting = _progress_reporter(ctx) if asked_for_progress(ctx) else None
                    result = await runtime.approvals.gate(name, fn, mark, kwargs, start, "confirmed" in wants,
                                                          waiting)
                else:
                    result = await fn(**kwargs)
            out = _tool_result(result, budget)
            ok = True
            if logged and isinstance(out, CallToolResult) and out.content:
                result_bytes = len(getattr(out.content[0], "text", "").encode("utf-8", "surrogatepass"))
            return out
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
            error = sys.exc_info()[1]
            runtime.stats.record(name, elapsed, ok, error)
            if logged:
                tool_call_line(name, caller=caller.get(), seconds=elapsed, outcome=outcome_of(ok, error),
                               request_id=_request_id(ctx), argument_bytes=argument_bytes, result_bytes=result_bytes,
                               error=type(_cause(error)).__name__ if error is not None else None)
            if runtime.events.listeners:
                runtime.publish({"type": "tool_call", "tool": name, "ok": ok, "ms": round(elapsed * 1000, 2),
                                 "caller": caller.get(), "at": time.time()})

    all_params = params + extra
    tool_call.__name__ = name
    tool_call.__qualname__ = name
    tool_call.__doc__ = description(fn.__doc__ or name)
    returns = hints.get("return")
    if isinstance(returns, type) and issubclass(returns, OutsideText):  # one line, the same for every such tool
        tool_call.__doc__ += "\n" + UNTRUSTED_NOTE
    tool_call.__signature__ = signature.replace(parameters=all_params, return_annotation=hints.get("return"))  # type: ignore[attr-defined]
    tool_call.__annotations__ = {p.name: p.annotation for p in all_params} | {"return": hints.get("return")}
    return tool_call


#: Docstring sections that document the Python method, not the tool: left out of its description.
SECTIONS = ("Args:", "Arguments:", "Returns:", "Raises:", "Yields:", "Examples:")


def description(doc: str) -> str:
    """The tool description a docstring gives: its text before the first section
    (:data:`SECTIONS`: ``Raises:`` and the like, which the tool's errors say themselves)."""
    lines = inspect.cleandoc(doc).splitlines()
    cut = next((i for i, line in enumerate(lines) if line.strip() in SECTIONS), len(lines))
    return "\n".join(lines[:cut]).rstrip()


def _request_id(ctx: Context) -> str | None:
    """The JSON-RPC id of the request (None outside a request, e.g. a direct call in a test)."""
    try:
        return ctx.request_id
    except Exception:  # no request context
        return None


def _cause(error: BaseException) -> BaseException:
    """The error the choke point mapped: a ToolError's cause when it has one."""
    return error.__cause__ if isinstance(error, ToolError) and error.__cause__ is not None else error


def _tool_result(result: Any, budget: int) -> Any:
    """A pydantic result cut to ``budget`` bytes (:func:`~opsmcp.result_size.fit_result`) as a
    ``CallToolResult``: ``structuredContent`` and, as the text that many clients hand to the
    model, the same JSON without indentation (the SDK's default text is indented JSON,
    1.3-1.6x larger). The JSON is made once for a result within budget (most are): its size
    is the budget check. Other values pass to the SDK unchanged."""
    if not isinstance(result, BaseModel):
        return result
    text = result.model_dump_json(by_alias=True)
    if len(text.encode("utf-8", "surrogatepass")) > budget:
        result = fit_result(result, budget)
        text = result.model_dump_json(by_alias=True)
    return CallToolResult(content=[TextContent(type="text", text=text)],
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
