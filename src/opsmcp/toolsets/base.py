"""The shape every toolset shares: the ``@tool`` marker and the parameters the server injects.

A toolset is a plain class whose public ``async`` methods marked with :func:`tool` are
MCP tools. Each method takes ``Annotated[..., Field(description=...)]`` arguments and
returns a pydantic model (a :class:`opsmcp.results.Result`), so the SDK derives the input schema, the output schema and
``structuredContent``. Toolsets know nothing of MCP: the server (:mod:`opsmcp.server`)
reads the marks, wraps every method in its single choke point, and registers it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from opsmcp.results import WriteResult

F = TypeVar("F", bound=Callable[..., Any])

#: Parameters the server fills itself; never part of a tool's input schema. ``progress``:
#: an async (progress, total, message) reporter; ``confirmed``: true only for a real write
#: the user approved (elicitation, a token or confirm=true).
INJECTED = ("progress", "confirmed")


@dataclass(frozen=True)
class ToolMark:
    """What the server needs to know about a tool beyond its signature.

    Attributes:
        read_only: the tool never changes state anywhere (MCP ``readOnlyHint``).
        destructive: a real call may delete or overwrite data (``destructiveHint``).
        idempotent: repeating the same call has no further effect (``idempotentHint``).
        open_world: the tool talks to systems outside opsmcp (``openWorldHint``).
        write: registered only when writes are enabled; audited on every call.
        title: a short human title for the tool list.
        preview_arg: for a write tool, the boolean argument that selects the preview (dry
            run / check mode) when true; a call with it false is the real change and needs
            the user's approval.
        preview_bound: ``(argument, preview field)``: a real call's ``argument`` is capped at
            that field of the preview the user approved (redrive: ``max_messages`` at the
            previewed ``matched``), so a real write never does more than was shown.
    """

    read_only: bool
    destructive: bool
    idempotent: bool
    open_world: bool
    write: bool
    title: str
    preview_arg: str | None = None
    preview_bound: tuple[str, str] | None = None


def tool(
    *,
    title: str,
    read_only: bool = True,
    destructive: bool = False,
    idempotent: bool = True,
    open_world: bool = True,
    write: bool = False,
    preview_arg: str | None = None,
    preview_bound: tuple[str, str] | None = None,
) -> Callable[[F], F]:
    """Mark a toolset method as an MCP tool with the four annotations set explicitly.

    A write tool (``write=True``) must not claim ``read_only`` and must name its
    ``preview_arg``; this is checked here so a wrong mark fails at import time.
    """
    if write and read_only:
        raise ValueError("a write tool cannot be read_only")
    if write and not preview_arg:
        raise ValueError("a write tool needs a preview_arg (its dry-run / check-mode flag)")

    def mark(fn: F) -> F:
        fn.__opsmcp_tool__ = ToolMark(  # type: ignore[attr-defined]
            read_only=read_only,
            destructive=destructive,
            idempotent=idempotent,
            open_world=open_world,
            write=write,
            title=title,
            preview_arg=preview_arg,
            preview_bound=preview_bound,
        )
        return fn

    return mark


def marked_tools(toolset: object) -> list[tuple[str, Callable[..., Any], ToolMark]]:
    """Return ``(name, bound method, mark)`` for every ``@tool`` method of ``toolset``.

    Raises:
        TypeError: a write tool whose return annotation is not a
            :class:`~opsmcp.results.WriteResult` (its preview's approval offer, the
            ``approval`` field, would have nowhere to go): a programming error, at start-up.
    """
    found = []
    for name in dir(type(toolset)):
        if name.startswith("_"):
            continue
        member = getattr(type(toolset), name)
        mark = getattr(member, "__opsmcp_tool__", None)
        if isinstance(mark, ToolMark):
            returns = inspect.signature(member, eval_str=True).return_annotation if mark.write else None
            if mark.write and not (isinstance(returns, type) and issubclass(returns, WriteResult)):
                raise TypeError(f"write tool {name} must return a WriteResult (it returns {returns!r})")
            found.append((name, getattr(toolset, name), mark))
    return found
