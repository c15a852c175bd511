"""Where opsmcp reaches past the mcp SDK's public API, in one place.

mcp 2.3.0 has no public way to do four things opsmcp needs; each is done here, and nowhere
else, and ``tests/test_sdk_seams.py`` fails naming the attribute as soon as an SDK release
moves it:

- :func:`lowlevel`: the low-level server behind :class:`~mcp.server.MCPServer`
  (``_lowlevel_server``), whose ``add_request_handler`` registers ``resources/subscribe``
  and ``resources/unsubscribe`` (MCPServer has no hook for them);
- :func:`connection_of`: the per-client connection of a request (``ServerSession._connection``):
  the same object for every request of one client (``ctx.session`` is a new proxy per
  request), whose ``exit_stack`` runs when the client disconnects;
- :func:`registered_tool`: the SDK's ``Tool`` that ``MCPServer.add_tool`` built
  (``MCPServer._tool_manager``), whose argument model and published schemas the
  registration replaces (strict arguments, compact schemas);
- :func:`logging_configured`: ``MCPServer()`` calls the SDK's ``configure_logging``
  (``mcp.server.mcpserver.server.configure_logging``), which imports rich and builds a
  handler (~25 ms of a cold start) for ``logging.basicConfig``, a no-op once the root logger
  has a handler (``opsmcp serve`` installs its own first); this skips the call then.

The subscription bus (``subscriptions/listen``) needs no seam: the composition root builds
it and hands it to ``MCPServer(subscriptions=...)``.

Each accessor raises :class:`SdkChanged` (naming the attribute and the SDK version) rather
than falling back silently: a silent fallback would keep serving while subscriptions leak.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from mcp.server import MCPServer

#: The SDK release these seams were written against.
SDK_VERSION = "2.3.0"


class SdkChanged(RuntimeError):
    """The mcp SDK no longer has an internal attribute opsmcp relies on."""


def _sdk_version() -> str:
    from importlib.metadata import version

    return version("mcp")


def _require(obj: Any, attribute: str, what: str) -> Any:
    found = getattr(obj, attribute, None)
    if found is None:
        raise SdkChanged(f"mcp {_sdk_version()} has no {type(obj).__name__}.{attribute} ({what}); opsmcp was written "
                         f"against mcp {SDK_VERSION}: update opsmcp.surface.sdk_seams.")
    return found


def registered_tool(server: MCPServer, name: str) -> Any:
    """The ``mcp.server.mcpserver.tools.Tool`` registered on ``server`` as ``name`` (its
    ``parameters``, ``fn_metadata.arg_model`` and ``fn_metadata.output_schema`` are read
    live by the SDK), or None.

    Raises:
        SdkChanged: the SDK moved it.
    """
    return _require(server, "_tool_manager", "the tool registry behind MCPServer").get_tool(name)


def lowlevel(server: MCPServer) -> Any:
    """The low-level :class:`mcp.server.lowlevel.Server` of ``server`` (for
    ``add_request_handler``).

    Raises:
        SdkChanged: the SDK moved it.
    """
    return _require(server, "_lowlevel_server", "the low-level server behind MCPServer")


def connection_of(session: Any) -> Any:
    """The per-client connection of ``session`` (a request's ``ctx.session``): one object
    per client for the connection's lifetime, with ``exit_stack`` and ``notify(method,
    params)``.

    Raises:
        SdkChanged: the SDK moved it.
    """
    return _require(session, "_connection", "the per-client connection of a request's session")


@contextlib.contextmanager
def logging_configured() -> Iterator[None]:
    """Construct an ``MCPServer`` inside this block: when the root logger already has a
    handler, the SDK's ``configure_logging`` (rich's import, then a ``basicConfig`` that
    would do nothing) is skipped; otherwise it runs as usual. Not for concurrent use from
    several threads (it swaps a module attribute for the block).

    Raises:
        SdkChanged: the SDK no longer calls ``configure_logging`` from that module.
    """
    import mcp.server.mcpserver.server as sdk_server

    _require(sdk_server, "configure_logging", "the SDK's logging set-up called by MCPServer()")
    if not logging.getLogger().handlers:
        yield
        return
    original = sdk_server.configure_logging
    sdk_server.configure_logging = lambda *args, **kwargs: None
    try:
        yield
    finally:
        sdk_server.configure_logging = original
