"""One persistent MCP session to opsmcp, its tools as LangChain tools, and confirmations.

:func:`open_toolbox` spawns ``opsmcp serve`` over stdio (or connects to its streamable
HTTP endpoint) through ``langchain-mcp-adapters``' ``MultiServerMCPClient``, initialises
ONE session for the whole run and loads the tools bound to that session, so every tool
call reuses the same server process. When the server asks for confirmation of a write
(MCP elicitation), the :class:`Confirmer` shows the preview and asks y/N.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.callbacks import CallbackContext, Callbacks
from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp import ClientSession
from mcp.types import ElicitResult

from .config import ALL_TOOLSETS, AgentConfig
from .errors import AgentError, ServerConnectionError

SERVER_NAME = "opsmcp"
log = logging.getLogger("opsmcp_agent")

#: Which toolset each known opsmcp tool belongs to. Used to narrow the tools of a server
#: we did not start (HTTP); a stdio server is started with ``--toolsets`` instead.
TOOLSET_OF: dict[str, str] = {
    "list_queues": "queues",
    "peek_messages": "queues",
    "analyze_dlq": "queues",
    "redrive_dlq": "queues",
    "get_order": "orders",
    "find_orders": "orders",
    "search_logs": "logs",
    "get_trace": "logs",
    "log_stats": "logs",
    "query_metrics": "metrics",
    "list_metrics": "metrics",
    "list_playbooks": "playbooks",
    "run_playbook": "playbooks",
}

#: Seconds to wait for the server to start and answer ``initialize`` + ``tools/list``.
STARTUP_TIMEOUT = 60.0


@dataclass
class Confirmation:
    """One confirmation the server asked for, and the operator's answer.

    Attributes:
        tool: the tool whose call asked (``None`` if the SDK did not say).
        message: the server's preview text, shown verbatim.
        approved: what was answered.
        how: ``"terminal"``, ``"--yes"`` or ``"no input"`` (stdin closed: declined).
    """

    tool: str | None
    message: str
    approved: bool
    how: str


@dataclass
class Confirmer:
    """Asks the operator to approve a write the server previews (MCP elicitation).

    Args:
        assume_yes: approve everything without asking (the ``--yes`` flag).
        stdin: where answers are read from (default ``sys.stdin``); end of input means no.
        prompt_out: where the preview and the ``[y/N]`` prompt are written (default
            ``sys.stderr``, so ``--json`` stdout stays machine-readable).
        on_confirmation: called with each :class:`Confirmation` after it is answered.
        current_tool: the tool call in progress, set by the caller (the SDK does not
            say which call a confirmation belongs to); shown in the prompt.
    """

    assume_yes: bool = False
    stdin: TextIO | None = None
    prompt_out: TextIO | None = None
    on_confirmation: Callable[[Confirmation], None] | None = None
    history: list[Confirmation] = field(default_factory=list)
    current_tool: str | None = None

    async def __call__(self, mcp_context: Any, params: Any, context: CallbackContext) -> ElicitResult:
        """Answer one ``elicitation/create`` request.

        Args:
            mcp_context: the SDK's request context (unused).
            params: ``ElicitRequestFormParams`` (``message`` + ``requestedSchema``) or
                ``ElicitRequestURLParams`` (declined: there is no browser here).
            context: which server and tool asked.

        Returns:
            ``accept`` with content filled from the requested schema (booleans set true,
            defaults and consts copied), or ``decline``.
        """
        message = str(getattr(params, "message", "") or "")
        tool = context.tool_name or self.current_tool
        if getattr(params, "mode", "form") == "url":
            self._record(tool, f"{message} ({getattr(params, 'url', '')})", False, "url mode")
            return ElicitResult(action="decline")
        if self.assume_yes:
            self._record(tool, message, True, "--yes")
            return ElicitResult(action="accept", content=fill_schema(getattr(params, "requestedSchema", None)))
        answer = await anyio.to_thread.run_sync(self._ask, tool, message)
        if answer is None:
            self._record(tool, message, False, "no input")
            return ElicitResult(action="decline")
        self._record(tool, message, answer, "terminal")
        if not answer:
            return ElicitResult(action="decline")
        return ElicitResult(action="accept", content=fill_schema(getattr(params, "requestedSchema", None)))

    def _ask(self, tool: str | None, message: str) -> bool | None:
        out = self.prompt_out or sys.stderr
        inp = self.stdin or sys.stdin
        out.write(f"\n── {tool or 'the server'} asks for confirmation ──\n{message}\n")
        out.write("Proceed? [y/N] ")
        out.flush()
        line = inp.readline()
        if not line:
            out.write("\n(no input: declined)\n")
            out.flush()
            return None
        return line.strip().lower() in {"y", "yes"}

    def _record(self, tool: str | None, message: str, approved: bool, how: str) -> None:
        item = Confirmation(tool=tool, message=message, approved=approved, how=how)
        self.history.append(item)
        if self.on_confirmation:
            self.on_confirmation(item)


def fill_schema(schema: Any) -> dict[str, Any]:
    """Build the ``content`` of an accepted elicitation from its requested schema.

    Args:
        schema: the flat JSON Schema object the server sent (``{"properties": {...}}``).

    Returns:
        For each property: its ``const`` or ``default`` if given, ``True`` for a boolean,
        the first value of an ``enum``; properties with none of these are left out.
    """
    content: dict[str, Any] = {}
    props = (schema or {}).get("properties", {}) if isinstance(schema, dict) else {}
    for name, prop in props.items():
        if not isinstance(prop, dict):
            continue
        if "const" in prop:
            content[name] = prop["const"]
        elif prop.get("type") == "boolean":
            content[name] = True
        elif "default" in prop:
            content[name] = prop["default"]
        elif isinstance(prop.get("enum"), list) and prop["enum"]:
            content[name] = prop["enum"][0]
    return content


def server_connection(config: AgentConfig) -> dict[str, Any]:
    """Build the ``langchain-mcp-adapters`` connection dict for ``config``.

    Args:
        config: ``server_url`` (streamable HTTP, with ``token`` as a bearer header) wins
            over ``server_command`` (stdio; ``--toolsets`` and ``--allow-writes`` are
            appended when set).

    Returns:
        A ``StreamableHttpConnection`` or ``StdioConnection`` dict. The stdio server
        inherits this process's environment (``OPSMCP_*``, ``AWS_*``).

    Raises:
        ServerConnectionError: the server command is empty or not found on PATH.
    """
    if config.server_url:
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else None
        conn: dict[str, Any] = {"transport": "streamable_http", "url": config.server_url}
        if headers:
            conn["headers"] = headers
        return conn
    argv = shlex.split(config.server_command)
    if not argv:
        raise ServerConnectionError("The opsmcp server command is empty; pass --server-command 'opsmcp serve'.")
    exe = argv[0]
    found = exe if os.sep in exe else shutil.which(exe)
    if not found or not os.access(found, os.X_OK):
        raise ServerConnectionError(
            f"Cannot start the opsmcp server: {exe!r} was not found or is not executable. Install opsmcp "
            "(`pip install -e .` at the repository root), or pass --server-command '/path/to/opsmcp serve' "
            "(env OPSMCP_AGENT_SERVER_COMMAND), or --server-url http://HOST:PORT/mcp."
        )
    args = argv[1:]
    if config.toolsets:
        args += ["--toolsets", ",".join(config.toolsets)]
    if config.allow_writes:
        args.append("--allow-writes")
    return {"transport": "stdio", "command": found, "args": args, "env": dict(os.environ)}


def narrow_tools(tools: list[BaseTool], toolsets: tuple[str, ...] | None) -> list[BaseTool]:
    """Keep only the tools of ``toolsets``.

    Args:
        tools: tools loaded from the server.
        toolsets: wanted toolset names, or ``None`` for all.

    Returns:
        The tools whose toolset (from the tool's ``_meta.toolset`` when the server sends
        one, else :data:`TOOLSET_OF`) is wanted. Tools of unknown toolset are dropped
        when narrowing.
    """
    if not toolsets:
        return list(tools)
    wanted = set(toolsets) & set(ALL_TOOLSETS)
    kept = []
    for t in tools:
        meta = (t.metadata or {}).get("_meta") or {}
        ts = meta.get("toolset") if isinstance(meta, dict) else None
        if (ts or TOOLSET_OF.get(t.name)) in wanted:
            kept.append(t)
    return kept


@dataclass
class Toolbox:
    """The live connection: the MCP session and the LangChain tools bound to it."""

    session: ClientSession
    tools: list[BaseTool]
    confirmer: Confirmer
    server: str


@asynccontextmanager
async def open_toolbox(config: AgentConfig, confirmer: Confirmer | None = None) -> AsyncIterator[Toolbox]:
    """Start (or connect to) opsmcp and keep one MCP session open for the whole block.

    Args:
        config: where the server is (``server_url`` or ``server_command``) and which
            toolsets to expose.
        confirmer: answers the server's confirmation requests; default asks on the
            terminal unless ``config.assume_yes``.

    Yields:
        A :class:`Toolbox` whose tools all call through the one session.

    Raises:
        ServerConnectionError: the server could not be started, did not answer
            ``initialize``/``tools/list`` within :data:`STARTUP_TIMEOUT` seconds, or
            offers no tools after narrowing.
    """
    confirmer = confirmer or Confirmer(assume_yes=config.assume_yes)
    conn = server_connection(config)
    where = conn.get("url") or " ".join([conn["command"], *conn["args"]])
    callbacks = Callbacks(on_elicitation=confirmer)
    client = MultiServerMCPClient({SERVER_NAME: conn}, callbacks=callbacks)  # type: ignore[dict-item]
    ready = False
    finished = False  # the caller's block ended without an exception
    try:
        async with client.session(SERVER_NAME, auto_initialize=False) as session:
            try:
                with anyio.fail_after(STARTUP_TIMEOUT):
                    await session.initialize()
                    tools = await load_mcp_tools(session, callbacks=callbacks, server_name=SERVER_NAME)
            except TimeoutError as exc:
                raise ServerConnectionError(
                    f"The opsmcp server at {where} did not answer within {STARTUP_TIMEOUT:.0f}s."
                ) from exc
            except AgentError:
                raise
            except Exception as exc:
                if conn.get("url"):
                    raise _connect_error(where, exc) from exc
                raise ServerConnectionError(
                    f"Could not start a session with the opsmcp server ({where}): {_leaf(exc)}. "
                    "Run that command yourself to see its error."
                ) from exc
            tools = narrow_tools(tools, config.toolsets)
            if not tools:
                raise ServerConnectionError(
                    f"The opsmcp server ({where}) offers no tools for toolsets {','.join(config.toolsets or ())}."
                )
            ready = True
            yield Toolbox(session=session, tools=tools, confirmer=confirmer, server=where)
            finished = True
    except BaseExceptionGroup as group:
        if finished and _only_teardown_races(group):
            log.debug("ignored a transport error while closing the session", exc_info=group)
            return
        leaf = _first_leaf(group)
        if isinstance(leaf, AgentError) or ready:
            raise leaf from group
        raise _connect_error(where, leaf) from group
    except Exception as exc:
        if finished and _only_teardown_races(exc):
            log.debug("ignored a transport error while closing the session", exc_info=exc)
            return
        if isinstance(exc, AgentError) or ready:
            raise
        raise _connect_error(where, exc) from exc


def _only_teardown_races(exc: BaseException) -> bool:
    """True when ``exc`` (or every leaf of the group) is a closed/broken stream error.

    After the work is done, closing the session can race with a message the server still
    sends: a call the time limit abandoned answers (or reports its cancellation) while the
    SDK's stdio reader hands it to a session that has already closed, and ``mcp`` 1.x
    raises ``anyio.BrokenResourceError`` from the transport's task group. Nothing is lost
    (the run's result exists), so that error is not the run's outcome.
    """
    if isinstance(exc, BaseExceptionGroup):
        return bool(exc.exceptions) and all(_only_teardown_races(e) for e in exc.exceptions)
    return isinstance(exc, (anyio.BrokenResourceError, anyio.ClosedResourceError))


def _connect_error(where: str, exc: BaseException) -> ServerConnectionError:
    """The failure to reach opsmcp at ``where`` (a URL or a command line), with the next step."""
    text = _leaf(exc)
    if "401" in text or "403" in text:
        hint = " The server wants a valid bearer token: pass --token (env OPSMCP_AGENT_TOKEN)."
    elif "404" in text:
        hint = " Is the path right? opsmcp serves streamable HTTP at /mcp."
    elif where.startswith(("http://", "https://")):
        hint = (
            " Is opsmcp running there? Start it with `opsmcp serve --transport http` (port 3001 by default) and "
            "check the URL, or leave out --server-url and the agent starts `opsmcp serve` itself over stdio."
        )
    else:
        hint = f" Run `{where}` in a terminal to see why it stops; `opsmcp doctor` checks its configuration."
    return ServerConnectionError(f"Could not connect to the opsmcp server ({where}): {text.splitlines()[0]}.{hint}")


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _leaf(exc: BaseException) -> str:
    exc = _first_leaf(exc)
    return str(exc) or type(exc).__name__
