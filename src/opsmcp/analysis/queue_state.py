"""Queue state as the tools, the ``/events`` poller and the queue resources read it.

:class:`QueueStates` is the one reader of "what do the queues look like now", built by the
composition root on the SQS adapter and handed both to the queues toolset (``list_queues``)
and, through :class:`~opsmcp.calls.runtime.Runtime`, to the ``/events`` depth poller and the
``opsmcp://queues/{name}`` resources, so none of those reaches into a toolset:

- :meth:`QueueStates.page`: one page of queues with their counts and DLQ wiring
  (:class:`QueueInfo`), the body of ``list_queues``;
- :meth:`QueueStates.states`: every queue (up to 1,000) as dicts, for the poller;
- :meth:`QueueStates.read_dlq`: the shared read of one DLQ with its failure signatures, the
  body of ``analyze_dlq`` and of the console's failure groups (:meth:`QueueStates.dlq`
  refuses a queue that has a redrive policy of its own);
- :meth:`QueueStates.dead_letters`: a sample of a DLQ that grew, each with its failure
  signature, for ``dlq_message`` events, through the same shared read as ``analyze_dlq``
  (:class:`~opsmcp.analysis.dlq_read.DlqReader`), so in one process the poller and
  ``analyze_dlq`` never hide messages from each other;
- :meth:`QueueStates.describe` and :meth:`QueueStates.depth`: one queue's state and its
  three counts, for the queue resource and its subscriptions;
- :meth:`QueueStates.names`: every queue name, for completion.

All of them read SQS through :class:`~opsmcp.backends.sqs.SqsBackend` (bounded calls, errors
mapped to :class:`~opsmcp.errors.OpsError`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import BaseModel, Field

from opsmcp.analysis.dlq_read import Counts, DlqRead, DlqReader
from opsmcp.analysis.dlq_signatures import Correlator
from opsmcp.backends.sqs import SqsBackend, queue_name, redrive_policy
from opsmcp.errors import InvalidInput, NotFound, OpsError
from opsmcp.times import iso, utcnow

#: Messages read from a DLQ that grew, to name its failure groups (``dlq_message`` events).
DEAD_LETTER_SAMPLE = 50
#: Longest wait, seconds, of :meth:`QueueStates.dead_letters` for another read or a redrive
#: dry run of the same DLQ.
DEAD_LETTER_WAIT_SECONDS = 10.0
#: Attribute reads one page runs at once (the rest wait here, not inside the backend timeout).
LIST_CONCURRENCY = 16
#: The three counts of a queue: (visible, in flight, delayed).
Depth = tuple[int, int, int]


async def each(fn: Callable[[str], Coroutine[Any, Any, None]], items: Iterable[str]) -> None:
    """Run ``fn(item)`` for every item concurrently. When they fail only with
    :class:`~opsmcp.errors.OpsError` (a backend that is down fails them all), raise the first
    one, not the task group's ExceptionGroup, so the tool error still names the endpoint."""
    try:
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(fn, item)
    except BaseExceptionGroup as group:
        ops, rest = group.split(OpsError)
        if ops is None or rest is not None:
            raise
        first: BaseException = ops
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


class QueueInfo(BaseModel):
    """One queue with its message counts and DLQ wiring."""

    name: str
    url: str
    fifo: bool
    visible: int = Field(description="ApproximateNumberOfMessages (ready to receive).")
    in_flight: int = Field(description="ApproximateNumberOfMessagesNotVisible (received, not deleted).")
    delayed: int = Field(description="ApproximateNumberOfMessagesDelayed.")
    dlq: str | None = Field(None, description="Name of this queue's DLQ, from its RedrivePolicy.")
    max_receive_count: int | None = Field(None, description="Receives before a message moves to the DLQ.")
    is_dlq: bool = Field(False, description="True when another queue's RedrivePolicy targets this queue.")
    source_queues: list[str] = Field(default_factory=list, description="For a DLQ: the queues that feed it.")


@dataclass
class Page:
    """One page of queues: ``queues`` with their counts, ``next_cursor``, the names listed
    whose counts could not be read (``unread``, left out of ``queues``), and ``notes`` saying
    what was left out and why."""

    queues: list[QueueInfo]
    next_cursor: str | None
    unread: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _counts(attributes: dict[str, str]) -> Depth:
    counts = Counts.of(attributes)
    return counts.visible, counts.in_flight, counts.delayed


def _dlq_of(attributes: dict[str, str]) -> tuple[str | None, int | None]:
    """``(DLQ name, maxReceiveCount)`` from a queue's RedrivePolicy, or ``(None, None)``."""
    policy = redrive_policy(attributes)
    if not policy or not policy.get("deadLetterTargetArn"):
        return None, None
    return queue_name(policy["deadLetterTargetArn"]), policy.get("maxReceiveCount")


class QueueStates:
    """Reads queue state from SQS (see the module docstring).

    Args:
        sqs: the SQS adapter.
        correlate: optional trace-id -> ERROR lines reader (the logs toolset's), used to name
            the failure signature of sampled dead letters without error attributes.
        reader: the shared DLQ read (the composition root hands the same one to the queues
            toolset); default: one on ``sqs``.
    """

    def __init__(self, sqs: SqsBackend, correlate: Correlator | None = None, reader: DlqReader | None = None) -> None:
        self.sqs = sqs
        self.correlate = correlate
        self.reader = reader or DlqReader(sqs, correlate)
        self._urls: dict[str, str] = {}

    async def page(self, prefix: str | None, limit: int, cursor: str | None) -> Page:
        """One page of queues (at most ``limit``, 1..1000) whose names start with ``prefix``,
        with their counts and DLQ wiring; ``is_dlq``/``source_queues`` consider this page only.
        At most :data:`LIST_CONCURRENCY` attribute reads run at once. A queue deleted between
        the list and the read is left out and named in ``notes``; one whose counts could not
        be read is named in ``unread``.

        Raises:
            InvalidInput: a cursor SQS does not accept. OpsError: SQS failed for every queue
                (the backend is down: the error names it).
        """
        urls, token = await self.sqs.list_urls(prefix, limit, cursor)
        attrs: dict[str, dict[str, str]] = {}
        failed: dict[str, OpsError] = {}
        limiter = anyio.CapacityLimiter(LIST_CONCURRENCY)

        async def fetch(url: str) -> None:
            async with limiter:
                try:
                    attrs[url] = await self.sqs.attributes(url)
                except NotFound:  # deleted between list and read: named below
                    pass
                except OpsError as exc:
                    failed[url] = exc

        async with anyio.create_task_group() as tg:
            for url in urls:
                tg.start_soon(fetch, url)
        if failed and not attrs:  # nothing could be read: the backend is down, say so
            raise next(iter(failed.values()))
        notes: list[str] = []
        gone = [queue_name(u) for u in urls if u not in attrs and u not in failed]
        if gone:
            notes.append(f"{len(gone)} queue(s) were deleted between listing and reading their counts and are left "
                         f"out: {', '.join(gone[:10])}")
        unread = [queue_name(u) for u in urls if u in failed]
        if unread:
            notes.append(f"the counts of {len(unread)} queue(s) could not be read ({next(iter(failed.values()))}); "
                         "they are left out (see unread): call again, or with a prefix or a smaller limit")
        sources: dict[str, list[str]] = {}
        infos = []
        for url in (u for u in urls if u in attrs):
            a = attrs[url]
            dlq, max_receive = _dlq_of(a)
            if dlq:
                sources.setdefault(dlq, []).append(queue_name(url))
            visible, in_flight, delayed = _counts(a)
            infos.append(QueueInfo(name=queue_name(url), url=url, fifo=a.get("FifoQueue") == "true", visible=visible,
                                   in_flight=in_flight, delayed=delayed, dlq=dlq, max_receive_count=max_receive))
        for info in infos:
            if info.name in sources:
                info.is_dlq = True
                info.source_queues = sorted(sources[info.name])
        return Page(infos, token, unread, notes)

    async def names(self) -> list[str]:
        """Every queue name (at most 10,000), for name completion and "did you mean"."""
        return await self.sqs.all_names()

    async def states(self) -> list[dict[str, Any]]:
        """Every queue (up to 1,000) as a dict with ``name``, ``visible``, ``in_flight``,
        ``delayed``, ``dlq`` and ``is_dlq`` (the ``/events`` poller's reader)."""
        page = await self.page(None, 1000, None)
        return [q.model_dump() for q in page.queues]

    async def dlq(self, queue: str) -> tuple[str, dict[str, str]]:
        """DLQ ``queue`` (name or URL): its URL and attributes.

        Raises:
            NotFound: no such queue. InvalidInput: the queue has a redrive policy of its own
                (reading all of it would raise receive counts and can move messages onward).
        """
        url, attributes = await self.sqs.require(queue)
        policy = redrive_policy(attributes)
        if policy:
            raise InvalidInput(
                f"{queue_name(url)} has a redrive policy (it feeds {queue_name(policy['deadLetterTargetArn'])} after "
                f"{policy['maxReceiveCount']} receives), so reading all of it would raise receive counts and can move "
                "messages to that DLQ.",
                f"analyse its DLQ {queue_name(policy['deadLetterTargetArn'])!r} instead, or use peek_messages "
                "for a sample.",
            )
        return url, attributes

    async def read_dlq(self, queue: str, max_messages: int) -> tuple[DlqRead, bool]:
        """The read of DLQ ``queue`` (name or URL) for a caller wanting at most
        ``max_messages``, through the shared read (:meth:`DlqReader.read
        <opsmcp.analysis.dlq_read.DlqReader.read>`: one at a time per queue, reused while the
        queue's counts stay the same, messages released before it returns). Its time budget
        counts from after the queue's URL is known (a first call also makes the client).

        Returns ``(read, shared)``: ``shared`` is true when another call did the reading.

        Raises:
            NotFound / InvalidInput: as :meth:`dlq`. OpsError: SQS failed before reading.
        """
        url = await self.sqs.resolve(queue)
        started = time.monotonic()
        url, attributes = await self.dlq(url)
        return await self.reader.read(url, attributes, max_messages, started)

    async def dead_letters(self, dlq: str, n: int = DEAD_LETTER_SAMPLE) -> list[dict[str, Any]]:
        """Up to ``n`` dead letters of DLQ ``dlq`` (more when a shared read already holds
        more), each ``{"signature", "message_id", "order_id", "trace_id"}``, named the way
        ``analyze_dlq`` names them and read through the same shared read
        (:class:`~opsmcp.analysis.dlq_read.DlqReader`). A queue with a redrive policy of its
        own is not read (``[]``): reading raises receive counts. It waits at most
        :data:`DEAD_LETTER_WAIT_SECONDS` for another read or a redrive dry run of the DLQ (the
        ``/events`` poller that calls it must not stall behind a long one).

        Raises:
            NotFound: no such queue. OpsError: its attributes could not be read, or the DLQ
                stayed held by another reader.
        """
        url, attrs = await self.sqs.require(dlq)
        if redrive_policy(attrs):
            return []
        read, _ = await self.reader.read(url, attrs, n, wait=DEAD_LETTER_WAIT_SECONDS)
        return [{"signature": sig, "message_id": mid, "order_id": order, "trace_id": trace}
                for mid, sig, order, trace in read.records]

    async def describe(self, name: str) -> dict[str, Any]:
        """Queue ``name``'s state as a JSON-ready dict: counts, FIFO, its DLQ and
        maxReceiveCount, the queues it is the DLQ of, visibility timeout, retention and
        ``read_at`` (ISO-8601 UTC).

        Raises:
            NotFound: no such queue (the closest names in the hint). OpsError: SQS failed.
        """
        url, attrs = await self.sqs.require(name)
        sources = sorted(queue_name(u) for u in await self.sqs.dead_letter_sources(url))
        dlq, max_receive = _dlq_of(attrs)
        visible, in_flight, delayed = _counts(attrs)
        return {
            "name": name, "url": url, "fifo": attrs.get("FifoQueue") == "true",
            "visible": visible, "in_flight": in_flight, "delayed": delayed,
            "dlq": dlq, "max_receive_count": max_receive, "is_dlq": bool(sources), "source_queues": sources,
            "visibility_timeout_seconds": int(attrs.get("VisibilityTimeout", 30)),
            "retention_seconds": int(attrs.get("MessageRetentionPeriod", 345600)),
            "read_at": iso(utcnow(), "seconds"),
        }

    async def depth(self, name: str) -> Depth:
        """Queue ``name``'s ``(visible, in_flight, delayed)``: two SQS calls the first time
        (GetQueueUrl, GetQueueAttributes), one after that (the URL is remembered; a queue
        that disappears is resolved again next time).

        Raises:
            NotFound: no such queue. OpsError: SQS failed.
        """
        if name not in self._urls:
            if len(self._urls) >= 1_000:  # bounded: subscriptions name at most a few queues
                self._urls.clear()
            self._urls[name] = await self.sqs.resolve(name)
        try:
            return _counts(await self.sqs.attributes(self._urls[name]))
        except NotFound:
            self._urls.pop(name, None)  # deleted (or recreated under a new URL): resolve again next time
            raise
