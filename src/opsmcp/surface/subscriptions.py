"""Subscriptions to ``opsmcp://queues/{name}``: who listens, and the one poller that tells them.

Two protocol eras, one watcher:

* 2025-11-25 clients send ``resources/subscribe`` / ``unsubscribe`` and get
  ``notifications/resources/updated``; a connection's subscriptions end when it closes;
* 2026-07-28 clients open a ``subscriptions/listen`` stream naming the resources; a
  middleware counts the stream's queue URIs while it is open, and updates go out on the
  SDK's subscription bus.

:class:`QueueWatch` polls only while someone is subscribed (one task per process, at most
``MAX_WATCHED`` queues, one read per queue per interval) and notifies only when a queue's
(visible, in-flight, delayed) counts change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from opsmcp.errors import NotFound
from opsmcp.surface.sdk_seams import connection_of, lowlevel

log = logging.getLogger(__name__)

QUEUE_PREFIX = "opsmcp://queues/"
MAX_WATCHED = 50
_WATCHES: weakref.WeakKeyDictionary[MCPServer, QueueWatch] = weakref.WeakKeyDictionary()


def queue_watch(server: MCPServer) -> QueueWatch | None:
    """The queue watcher :func:`register_subscriptions` installed on ``server``, if any."""
    return _WATCHES.get(server)


Depth = tuple[int, int, int]


class QueueWatch:
    """Subscriptions to ``opsmcp://queues/{name}`` and the one poller that serves them.

    Args:
        read_depth: ``async (queue name) -> (visible, in_flight, delayed)``; may raise.
        publish: ``async (uri)`` that tells 2026-07-28 listen streams the resource changed.
        poll_seconds: time between two reads of each watched queue.

    Legacy (2025-11-25) subscribers are the connections that sent ``resources/subscribe``;
    they are notified with ``notifications/resources/updated`` and dropped when the
    connection closes or sending fails. Listen streams are counted per URI while open.
    """

    def __init__(self, read_depth: Callable[[str], Awaitable[Depth]], publish: Callable[[str], Awaitable[None]],
                 poll_seconds: float) -> None:
        self.read_depth = read_depth
        self.publish = publish
        self.poll_seconds = poll_seconds
        self.sessions: dict[str, set[Any]] = {}
        self.streams: dict[str, int] = {}
        self.last: dict[str, Depth] = {}
        self._task: asyncio.Task[None] | None = None

    def watched(self) -> list[str]:
        """URIs with at least one subscriber."""
        return sorted({u for u, s in self.sessions.items() if s} | {u for u, n in self.streams.items() if n > 0})

    def _room_for(self, uri: str) -> None:
        if uri not in self.watched() and len(self.watched()) >= MAX_WATCHED:
            raise MCPError(INVALID_PARAMS, f"At most {MAX_WATCHED} queues can be watched at once; unsubscribe first.")

    async def subscribe(self, uri: str, connection: Any) -> None:
        """Add a ``resources/subscribe`` subscriber: a connection with ``notify(method,
        params)`` (or a session with ``send_resource_updated(uri)``).

        Raises:
            MCPError: -32602 when the queue does not exist or too many queues are watched.
        """
        self._room_for(uri)
        await self._baseline(uri)
        self.sessions.setdefault(uri, set()).add(connection)
        self._ensure_running()

    def unsubscribe(self, uri: str, connection: Any) -> None:
        """Remove a ``resources/subscribe`` subscriber (no error when it was not subscribed)."""
        self.sessions.get(uri, set()).discard(connection)
        self._forget_unwatched()

    def drop(self, connection: Any) -> None:
        """Forget every subscription of ``connection`` (it closed)."""
        for subscribers in self.sessions.values():
            subscribers.discard(connection)
        self._forget_unwatched()

    async def stream_opened(self, uris: list[str]) -> None:
        """A ``subscriptions/listen`` stream asks for these queue URIs."""
        for uri in uris:
            self._room_for(uri)
        for uri in uris:
            try:
                await self._baseline(uri)
            except MCPError:
                log.info("listen stream names unknown queue resource %s", uri)
            self.streams[uri] = self.streams.get(uri, 0) + 1
        if uris:
            self._ensure_running()

    def stream_closed(self, uris: list[str]) -> None:
        """The ``subscriptions/listen`` stream for these URIs ended."""
        for uri in uris:
            self.streams[uri] = max(0, self.streams.get(uri, 0) - 1)
        self._forget_unwatched()

    async def _baseline(self, uri: str) -> None:
        try:
            self.last[uri] = await self.read_depth(uri.removeprefix(QUEUE_PREFIX))
        except (ResourceNotFoundError, NotFound) as exc:
            raise MCPError(INVALID_PARAMS, str(exc), {"uri": uri}) from None
        except Exception as exc:  # the backend is down: watch anyway, report on the next change
            log.info("cannot read %s yet: %s", uri, exc)

    def _forget_unwatched(self) -> None:
        keep = set(self.watched())
        self.last = {u: d for u, d in self.last.items() if u in keep}

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="opsmcp-queue-watch")

    async def close(self) -> None:
        """Stop the poller and forget every subscription."""
        self.sessions.clear()
        self.streams.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self.watched():
            await asyncio.sleep(self.poll_seconds)
            for uri in self.watched():
                try:
                    depth = await self.read_depth(uri.removeprefix(QUEUE_PREFIX))
                except Exception as exc:  # keep polling: the backend may come back
                    log.info("queue watch: cannot read %s: %s", uri, exc)
                    continue
                if self.last.get(uri) != depth:
                    changed = uri in self.last
                    self.last[uri] = depth
                    if changed:
                        await self._notify(uri)

    async def _notify(self, uri: str) -> None:
        for sub in list(self.sessions.get(uri, ())):
            try:
                if hasattr(sub, "notify"):
                    await sub.notify("notifications/resources/updated", {"uri": uri})
                else:
                    await sub.send_resource_updated(uri)
            except Exception:  # the client went away: drop its subscription
                self.sessions[uri].discard(sub)
        if self.streams.get(uri):
            await self.publish(uri)


def _queue_uris(uris: Any) -> list[str]:
    return [u for u in uris or [] if isinstance(u, str) and u.startswith(QUEUE_PREFIX)]


def _connection(ctx: ServerRequestContext[Any, Any]) -> Any:
    """The client connection a request came on: the same object for every request of one
    client (``ctx.session`` is a new proxy per request); see :func:`~.sdk_seams.connection_of`."""
    return connection_of(ctx.session)


def register_subscriptions(server: MCPServer, watch: QueueWatch) -> None:
    """``resources/subscribe`` and ``unsubscribe`` (2025-11-25) and a ``subscriptions/listen``
    middleware (2026-07-28) that tell ``watch`` which queue resources are wanted."""

    async def subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        uri = str(params.uri)
        if not uri.startswith(QUEUE_PREFIX):
            raise MCPError(INVALID_PARAMS, f"Only queue resources ({QUEUE_PREFIX}{{name}}) change; {uri} does not.",
                           {"uri": uri})
        connection = _connection(ctx)
        first = connection not in {c for subs in watch.sessions.values() for c in subs}
        await watch.subscribe(uri, connection)
        if first and hasattr(connection, "exit_stack"):
            connection.exit_stack.callback(watch.drop, connection)  # runs when the client disconnects
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        watch.unsubscribe(str(params.uri), _connection(ctx))
        return EmptyResult()

    # MCPServer has no public hook for these two methods in mcp 2.3.0; the low-level
    # server's add_request_handler is the registration point (see sdk_seams).
    low = lowlevel(server)
    low.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    low.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    async def listen_middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "subscriptions/listen" or ctx.request_id is None:
            return await call_next(ctx)
        wanted = ((ctx.params or {}).get("notifications") or {}).get("resourceSubscriptions")
        uris = _queue_uris(wanted)
        await watch.stream_opened(uris)
        try:
            return await call_next(ctx)
        finally:
            watch.stream_closed(uris)

    server.middleware.append(listen_middleware)
    _WATCHES[server] = watch
