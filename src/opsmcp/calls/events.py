"""The live event feed behind ``GET /events``: typed events with ids, a bounded history,
bounded per-listener buffers, and one SQS depth poller per process while someone listens.

Event types (``type`` field, also the SSE ``event:`` name):

- ``queue_depth``: a queue's visible / in-flight / delayed counts or its DLQ's depth changed
  (polled from SQS every ``OPSMCP_EVENTS_POLL_SECONDS``, only while at least one listener
  is connected, by a single poller however many listen);
- ``dlq_message``: a DLQ grew: how many were added, and the failure signatures of the dead
  letters not reported before (from a sample of the DLQ; see :func:`queue_sources`);
- ``alert``: an Alertmanager alert received by the webhook;
- ``write``: an audit record of a write tool (already redacted);
- ``tool_call``: one tool call (tool, ok, milliseconds, caller).

Every event gets an increasing integer id. A listener that reconnects with
``Last-Event-ID`` gets the events after that id still in the bounded history. A listener
whose buffer fills (a slow or stalled client) is dropped: its stream ends, memory never
grows with it. :meth:`EventHub.publish` must be called on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("opsmcp.calls.events")

EVENT_TYPES = ("queue_depth", "dlq_message", "alert", "write", "tool_call")


@dataclass(frozen=True)
class Event:
    """One feed event: ``id`` (increasing), ``type`` (one of :data:`EVENT_TYPES`), ``data``
    (JSON-serialisable dict, includes ``type`` and ``at``: Unix seconds)."""

    id: int
    type: str
    data: dict[str, Any]


@dataclass(eq=False)
class Listener:
    """One connected ``/events`` client: its type filter and bounded buffer.

    ``dropped`` is set when the buffer overflowed; the stream then ends after what it holds.
    """

    types: frozenset[str] | None
    buffer: asyncio.Queue[Event | None]
    dropped: bool = False

    def wants(self, event: Event) -> bool:
        """True when ``event`` passes this listener's ``?types=`` filter."""
        return self.types is None or event.type in self.types

    async def stream(self) -> AsyncIterator[Event]:
        """Events for this listener as they arrive; ends when the listener was dropped."""
        while True:
            event = await self.buffer.get()
            if event is None:
                return
            yield event


@dataclass
class EventHub:
    """Fan-out of feed events to listeners, with a bounded history for resumption.

    Args:
        history: how many recent events are kept for ``Last-Event-ID`` resumption.
        buffer: how many undelivered events one listener may hold before it is dropped.
        on_first_listener / on_last_listener: called (on the loop) when listeners go
            0 → 1 and 1 → 0; the poller starts and stops there.
    """

    history: int = 1000
    buffer: int = 256
    on_first_listener: Callable[[], None] | None = None
    on_last_listener: Callable[[], None] | None = None
    last_id: int = 0
    _recent: deque[Event] = field(init=False)
    listeners: set[Listener] = field(default_factory=set)
    dropped_total: int = 0

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=max(1, self.history))

    def publish(self, type_: str, data: dict[str, Any]) -> Event:
        """Record ``data`` as a ``type_`` event and hand it to every listener that wants it.

        A listener whose buffer is full is dropped (its stream ends) rather than stalling
        the caller. Returns the event.
        """
        self.last_id += 1
        event = Event(self.last_id, type_, {**data, "type": type_, "at": data.get("at", time.time())})
        self._recent.append(event)
        for listener in list(self.listeners):
            if listener.dropped or not listener.wants(event):
                continue
            try:
                listener.buffer.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(listener)
        return event

    def _drop(self, listener: Listener) -> None:
        listener.dropped = True
        self.dropped_total += 1
        log.warning("dropped a slow /events listener (buffer of %d events full)", self.buffer)
        # Make room for the end-of-stream marker: the listener is gone anyway.
        while not listener.buffer.empty():
            listener.buffer.get_nowait()
        listener.buffer.put_nowait(None)
        self.remove(listener)

    def add(self, types: frozenset[str] | None = None, last_event_id: int | None = None) -> Listener:
        """Register a listener; replay the kept events after ``last_event_id`` (if given).

        Args:
            types: only these event types (None: all).
            last_event_id: the ``Last-Event-ID`` the client resumes from.
        """
        listener = Listener(types=types, buffer=asyncio.Queue(maxsize=max(1, self.buffer)))
        if last_event_id is not None:
            for event in self._recent:
                if event.id > last_event_id and listener.wants(event):
                    if listener.buffer.full():
                        break
                    listener.buffer.put_nowait(event)
        first = not self.listeners
        self.listeners.add(listener)
        if first and self.on_first_listener:
            self.on_first_listener()
        return listener

    def remove(self, listener: Listener) -> None:
        """Unregister ``listener`` (idempotent)."""
        if listener in self.listeners:
            self.listeners.discard(listener)
            if not self.listeners and self.on_last_listener:
                self.on_last_listener()

    def latest(self, type_: str) -> list[Event]:
        """The kept events of ``type_``, oldest first (for snapshots)."""
        return [e for e in self._recent if e.type == type_]


#: ``async () -> [queue state dict]``: each dict has ``name``, ``visible``, ``in_flight``,
#: ``delayed``, ``dlq`` (name or None) and ``is_dlq``.
QueueLister = Callable[[], Awaitable[list[dict[str, Any]]]]
#: ``async (dlq name, how many) -> [{"signature", "message_id", "order_id", "trace_id"}]``.
DeadLetterReader = Callable[[str, int], Awaitable[list[dict[str, Any]]]]


@dataclass
class DepthPoller:
    """Polls queue depths while the hub has listeners and publishes what changed.

    One per process: the hub starts it on its first listener and stops it on its last.

    Args:
        hub: where events go.
        list_queues: reads every queue's counts (the queues toolset's backend).
        read_dead_letters: reads a few new dead letters of a DLQ without hiding them, for
            ``dlq_message`` events (None: ``dlq_message`` events carry counts only).
        interval: seconds between polls (> 0).
    """

    hub: EventHub
    list_queues: QueueLister
    read_dead_letters: DeadLetterReader | None = None
    interval: float = 5.0
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: dict[str, set[str]] = field(default_factory=dict)  # DLQ -> message ids already reported
    polls: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling on the running loop (no-op when already running)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="opsmcp-events-poller")

    def stop(self) -> None:
        """Stop polling; the last known state is kept for the next listener's snapshot."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def running(self) -> bool:
        """True while the polling task is alive."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a backend outage must not kill the feed
                log.warning("events poller: %s", exc)
            await asyncio.sleep(self.interval)

    async def poll_once(self) -> None:
        """Read every queue once and publish ``queue_depth`` / ``dlq_message`` for changes."""
        self.polls += 1
        queues = await self.list_queues()
        by_name = {q["name"]: q for q in queues}
        for q in queues:
            dlq = by_name.get(q["dlq"]) if q.get("dlq") else None
            current = {"queue": q["name"], "visible": q["visible"], "in_flight": q["in_flight"],
                       "delayed": q["delayed"], "is_dlq": bool(q.get("is_dlq")), "dlq": q.get("dlq"),
                       "dlq_depth": (dlq["visible"] + dlq["in_flight"]) if dlq else None}
            before = self.state.get(q["name"])
            if before == current:
                continue
            self.state[q["name"]] = current
            self.hub.publish("queue_depth", dict(current))
            depth, was = q["visible"] + q["in_flight"], (before["visible"] + before["in_flight"]) if before else None
            if current["is_dlq"] and was is None and depth > 0:
                await self._baseline(q["name"])
            elif current["is_dlq"] and was is not None and depth > was:
                await self._new_dead_letters(q["name"], depth - was, depth)
        for gone in set(self.state) - set(by_name):
            del self.state[gone]

    async def _sample(self, dlq: str) -> list[dict[str, Any]]:
        if self.read_dead_letters is None:
            return []
        try:
            return await self.read_dead_letters(dlq, DEAD_LETTER_SAMPLE)
        except Exception as exc:
            log.warning("events poller: reading dead letters of %s: %s", dlq, exc)
            return []

    async def _baseline(self, dlq: str) -> None:
        """Remember the dead letters a DLQ already holds, so only later ones count as new
        (letters arriving while this reads count as old)."""
        self.seen[dlq] = {s["message_id"] for s in (await self._sample(dlq))[:10_000]}

    async def _new_dead_letters(self, dlq: str, added: int, depth: int) -> None:
        samples = await self._sample(dlq)
        seen = self.seen.setdefault(dlq, set())
        new = [s for s in samples if s["message_id"] not in seen]
        if len(seen) < 10_000:
            seen.update(s["message_id"] for s in new)
        signatures: dict[str, int] = {}
        for s in new:
            signatures[s["signature"]] = signatures.get(s["signature"], 0) + 1
        self.hub.publish("dlq_message", {
            "queue": dlq, "added": added, "depth": depth, "sampled": len(samples),
            "signatures": [{"signature": k, "count": v} for k, v in sorted(signatures.items(), key=lambda kv: -kv[1])],
            "samples": new[:10]})

    def snapshot(self) -> list[dict[str, Any]]:
        """The last known state of every queue (what a new listener is shown first)."""
        return [dict(v) for v in self.state.values()]


DEAD_LETTER_SAMPLE = 50  # messages read from a DLQ that grew, to name its failure groups


def queue_sources(queue_tools: Any) -> tuple[QueueLister, DeadLetterReader]:
    """The poller's two readers, built on the queues toolset (``QueueTools``).

    The lister reads every queue (up to 1,000) with ``list_queues``. The dead-letter reader
    reads up to :data:`DEAD_LETTER_SAMPLE` messages of a DLQ that grew through
    ``QueueTools.dead_letters``: the same one-at-a-time, shared read as ``analyze_dlq``
    (messages hidden only while read, released at once), so in one process the poller and
    ``analyze_dlq`` never hide messages from each other; the poller may get a read an
    ``analyze_dlq`` call just made. Reading raises the messages' receive counts, harmless
    in a DLQ without a redrive policy of its own; a DLQ that has one is not read. SQS keeps
    a dead letter's original sent time, so "new" is judged by message id.
    """

    async def list_states() -> list[dict[str, Any]]:
        result = await queue_tools.list_queues(limit=1000)
        return [q.model_dump() for q in result.queues]

    async def read(dlq: str, n: int) -> list[dict[str, Any]]:
        return list(await queue_tools.dead_letters(dlq, n))

    return list_states, read
