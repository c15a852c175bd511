"""Queue state as the tools, the ``/events`` poller and the queue resources read it.

:class:`QueueStates` is the one reader of "what do the queues look like now", built by the
composition root on the SQS adapter and handed both to the queues toolset (``list_queues``)
and, through :class:`~opsmcp.calls.runtime.Runtime`, to the ``/events`` depth poller and the
``opsmcp://queues/{name}`` resources, so none of those reaches into a toolset:

- :meth:`QueueStates.page`: one page of queues with their counts and DLQ wiring
  (:class:`QueueInfo`), the body of ``list_queues``;
- :meth:`QueueStates.states`: every queue (up to 1,000) as dicts, for the poller;
- :meth:`QueueStates.dead_letters`: a small sample of a DLQ that grew, each with its failure
  signature, for ``dlq_message`` events;
- :meth:`QueueStates.describe` and :meth:`QueueStates.depth`: one queue's state and its
  three counts, for the queue resource and its subscriptions;
- :meth:`QueueStates.names`: every queue name, for completion.

All of them read SQS through :class:`~opsmcp.backends.sqs.SqsBackend` (bounded calls, errors
mapped to :class:`~opsmcp.errors.OpsError`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import anyio
from pydantic import BaseModel, Field

from opsmcp.analysis.dlq_signatures import Correlator, MessageFacts, signatures
from opsmcp.backends.sqs import SqsBackend, queue_name, redrive_policy
from opsmcp.errors import NotFound, OpsError
from opsmcp.times import iso, utcnow

#: Messages read from a DLQ that grew, to name its failure groups (``dlq_message`` events).
DEAD_LETTER_SAMPLE = 50
#: Visibility timeout (s) of the sampled dead letters; released as soon as they are read.
SAMPLE_HIDE_SECONDS = 10
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


def _counts(attributes: dict[str, str]) -> Depth:
    return (int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)))


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
    """

    def __init__(self, sqs: SqsBackend, correlate: Correlator | None = None) -> None:
        self.sqs = sqs
        self.correlate = correlate
        self._urls: dict[str, str] = {}

    async def page(self, prefix: str | None, limit: int, cursor: str | None) -> tuple[list[QueueInfo], str | None]:
        """One page of queues (at most ``limit``, 1..1000) whose names start with ``prefix``,
        with their counts and DLQ wiring; ``is_dlq``/``source_queues`` consider this page only.
        Returns ``(queues, next cursor or None)``. A queue deleted between the list and the
        read is left out.

        Raises:
            InvalidInput: a cursor SQS does not accept. OpsError: SQS failed.
        """
        urls, token = await self.sqs.list_urls(prefix, limit, cursor)
        attrs: dict[str, dict[str, str]] = {}

        async def fetch(url: str) -> None:
            with contextlib.suppress(NotFound):  # deleted between list and read: left out
                attrs[url] = await self.sqs.attributes(url)

        await each(fetch, urls)
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
        return infos, token

    async def names(self) -> list[str]:
        """Every queue name (at most 10,000), for name completion and "did you mean"."""
        return await self.sqs.all_names()

    async def states(self) -> list[dict[str, Any]]:
        """Every queue (up to 1,000) as a dict with ``name``, ``visible``, ``in_flight``,
        ``delayed``, ``dlq`` and ``is_dlq`` (the ``/events`` poller's reader)."""
        infos, _ = await self.page(None, 1000, None)
        return [q.model_dump() for q in infos]

    async def dead_letters(self, dlq: str, n: int = DEAD_LETTER_SAMPLE) -> list[dict[str, Any]]:
        """Up to ``n`` messages of DLQ ``dlq``, each as ``{"signature", "message_id",
        "order_id", "trace_id"}``, named the way ``analyze_dlq`` names them.

        The messages are hidden for at most :data:`SAMPLE_HIDE_SECONDS` and released as soon
        as they are read. Reading raises their receive counts, harmless in a DLQ without a
        redrive policy of its own; a DLQ that has one is not read ([] is returned).
        """
        url, attrs = await self.sqs.require(dlq)
        if redrive_policy(attrs):
            return []
        messages: dict[str, dict[str, Any]] = {}
        try:
            while len(messages) < n:
                batch = await self.sqs.receive(url, min(10, n - len(messages)), SAMPLE_HIDE_SECONDS)
                fresh = [m for m in batch if m["MessageId"] not in messages]
                if not fresh:
                    break
                messages.update((m["MessageId"], m) for m in fresh)
        finally:
            if messages:
                await self.sqs.release(url, [m["ReceiptHandle"] for m in messages.values()])
        facts = [MessageFacts(m) for m in messages.values()]
        sigs = await signatures(facts, self.correlate)
        return [{"signature": sigs[f.id][0], "message_id": f.id, "order_id": f.order_id, "trace_id": f.trace_id}
                for f in facts]

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
