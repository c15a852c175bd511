"""One read of a DLQ for every caller in this process, bounded in messages and time, that
says what it did not see.

Receiving is the only way to see an SQS message's contents, and it hides what it receives
from every other reader until released (visibility timeout); moto and other emulators
also scan the whole queue for every receive. So:

- **One read at a time per queue, shared.** A caller that arrives while a read of the same
  queue runs waits for it and gets its answer; a finished read is reused for
  :data:`SHARE_SECONDS` by callers that find the queue's counts (visible, in flight,
  delayed) unchanged. At most :data:`MAX_SHARED` reads are kept (oldest dropped first),
  as ids and signatures only, never message bodies.
- **Bounded.** A read stops at ``max_messages`` or :data:`MAX_READ_BYTES` of bodies, or
  when another receive would take it past its time budget (counted from the caller's
  start, so the queue's attributes are inside it), or at a receive error; it then holds a
  *sample*: the messages receive returned first. SQS chooses which messages a receive returns: that is not a random
  sample, and moto returns the oldest first.
- **Honest.** The queue's counts are read before, and again after a read that drained the
  queue (after releasing what it held), to tell "saw everything" from "someone else hid
  some"; a sample is not read again (on emulators that costs as much as a receive, and a
  sample is incomplete anyway). :meth:`DlqRead.reasons` names everything that kept the
  read from seeing the whole queue: messages in flight before it began, another reader
  during it, a bound, an error, FIFO message groups.

Messages are released as soon as the receiving ends, before their signatures are worked
out (which may ask the log store).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from opsmcp.analysis.dlq_signatures import Correlator, MessageFacts, SignatureGroup, collect, signatures
from opsmcp.backends.sqs import SqsBackend
from opsmcp.errors import OpsError

SHARE_SECONDS = 30.0  # a finished read is reused this long while the queue's counts stay the same
MAX_SHARED = 32  # finished reads kept (one per queue)
MAX_LOCKS = 256  # per-queue locks kept while unused
STALE_RECEIVES = 3  # empty receives in a row after which the queue counts as drained
MIN_HOLD_SECONDS = 30  # visibility timeout of the messages held while reading (released at once)
RELEASE_CHUNKS = 8  # concurrent parts the held messages are released in
MAX_READ_BYTES = 64 * 2**20  # message bodies one read holds in memory at most (SQS allows 1 MiB per message)


@dataclass(frozen=True)
class Counts:
    """A queue's message counts from its attributes."""

    visible: int = 0
    in_flight: int = 0
    delayed: int = 0

    @classmethod
    def of(cls, attributes: dict[str, str]) -> Counts:
        """``ApproximateNumberOfMessages`` / ``...NotVisible`` / ``...Delayed`` of ``attributes``."""
        return cls(int(attributes.get("ApproximateNumberOfMessages", 0)),
                   int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                   int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)))

    @property
    def total(self) -> int:
        """Every message in the queue."""
        return self.visible + self.in_flight + self.delayed


@dataclass
class DlqRead:
    """What one read of a DLQ saw, and how.

    ``stop`` is why receiving ended: ``drained`` (receives brought nothing new),
    ``max_messages``, ``max_bytes`` (:data:`MAX_READ_BYTES` of bodies held), ``time_budget``
    or ``read_error`` (``error`` says which).
    ``groups`` hold every id of each signature; ``records`` hold ``(message id, signature,
    order id, trace id)`` per message read (no bodies: a kept read stays small).
    """

    url: str
    fifo: bool
    before: Counts
    after: Counts | None  # None: not read again (a sample, or the read failed: after_error)
    max_messages: int
    stop: str
    receive_calls: int
    seconds: float
    budget: float
    groups: list[SignatureGroup]
    records: list[tuple[str, str, str | None, str | None]]
    error: str | None = None
    hold: int = 0  # the visibility timeout the read used, seconds
    release_failed: int = 0
    after_error: str | None = None
    read_at: float = field(default_factory=time.time)
    finished: float = field(default_factory=time.monotonic)

    @property
    def messages_read(self) -> int:
        """Distinct messages this read received."""
        return len(self.records)

    @property
    def total(self) -> int:
        """Messages in the queue after reading (visible + in flight + delayed), never fewer than were read."""
        return max(self.now.total, self.messages_read)

    @property
    def now(self) -> Counts:
        """The counts after reading when they were read again, else before."""
        return self.after or self.before

    @property
    def population(self) -> int:
        """Messages the read could have received (visible before or after it; at least those read)."""
        return max(self.before.visible, self.now.visible, self.messages_read)

    @property
    def sampled(self) -> bool:
        """True when a bound or an error ended the read with messages left unread."""
        return self.stop != "drained" and self.population > self.messages_read

    @property
    def scale(self) -> float:
        """population / messages read when sampled (for group estimates), else 1."""
        return self.population / self.messages_read if self.sampled and self.messages_read else 1.0

    @property
    def missed(self) -> int:
        """Messages visible when the read began that it did not receive although it ran until
        receives brought nothing new: someone else hid or deleted them meanwhile (or, in a
        FIFO queue, they wait behind a message of their group that this read held)."""
        return max(0, self.before.visible - self.messages_read) if self.stop == "drained" else 0

    def reasons(self) -> list[str]:
        """Why this read did not see the whole queue (empty when it did): ``in_flight``
        (received by someone else before it began), ``other_reader`` (hidden or deleted by
        someone else while it read), ``fifo_groups``, ``delayed``, and the bound that ended
        it (``max_messages``, ``max_bytes``, ``time_budget``) or ``read_error``."""
        out = []
        if self.before.in_flight:
            out.append("in_flight")
        if self.missed:
            out.append("fifo_groups" if self.fifo else "other_reader")
        if self.before.delayed or self.now.delayed:
            out.append("delayed")
        if self.sampled:
            out.append(self.stop)
        return out

    def notes(self, read_more: str) -> list[str]:
        """Notes naming everything that kept this read from seeing the whole queue, and how to
        see more (``read_more``: what the caller can do when ``max_messages`` ended the read;
        ``analyze_dlq`` and the console say it differently). Empty when it saw everything."""
        notes = []
        if self.before.in_flight:
            notes.append(f"{self.before.in_flight} message(s) were in flight when the read began (received by another "
                         "reader, neither deleted nor released): their contents could not be read; call again after "
                         "their visibility timeout")
        if self.missed and self.fifo:
            notes.append(f"FIFO: {self.missed} message(s) queued behind the first message of their group cannot be "
                         "read without moving them")
        elif self.missed:
            notes.append(f"{self.missed} message(s) visible when the read began were not received: another reader (a "
                         "consumer, another opsmcp replica, a redrive) hid or deleted them while this read ran; call "
                         "again")
        delayed = max(self.before.delayed, self.now.delayed)
        if delayed:
            notes.append(f"{delayed} message(s) are delayed and cannot be received yet")
        if self.stop == "read_error":
            notes.append(f"a receive failed ({(self.error or '').rstrip('.')}); it may have hidden up to 10 messages "
                         f"for {self.hold} s without this call learning which")
        if self.sampled and not self.messages_read:
            notes.append(f"no message was read: only the counts (~{self.population} visible) are known")
        elif self.sampled:
            more = {"max_messages": read_more,
                    "max_bytes": f"the read holds at most {MAX_READ_BYTES // 2**20} MiB of message bodies",
                    "time_budget": "OPSMCP_DLQ_READ_SECONDS sets the budget"}.get(self.stop, "call again")
            notes.append(f"sampled: read {self.messages_read} of ~{self.population} visible messages; group counts "
                         f"are extrapolated (estimated_count); {more}")
        if self.after and self.before.total != self.after.total:
            notes.append(f"the queue changed while it was read: {self.before.total} messages before, "
                         f"{self.after.total} after")
        if self.after_error:
            notes.append(f"the queue's counts after reading could not be read ({self.after_error}); the counts before "
                         "are shown")
        if self.release_failed:
            notes.append(f"{self.release_failed} message(s) could not be released and stay hidden for up to "
                         f"{self.hold} s")
        return notes

    def serves(self, max_messages: int) -> bool:
        """True when this read answers a request for at most ``max_messages`` as a new one would."""
        if max_messages < self.messages_read:
            return False
        return not (self.stop == "max_messages" and max_messages > self.max_messages)


@dataclass
class DlqReader:
    """Reads DLQs for the queue tools and the ``/events`` poller (see the module docstring).

    Args:
        sqs: the SQS adapter.
        correlate: passed to :func:`~.dlq_signatures.signatures` (None: no log correlation).
        hold: the longest visibility timeout a read may use, seconds; it uses the budget
            plus 10 s, at least :data:`MIN_HOLD_SECONDS` (releasing the messages at once).
        budget: seconds a read may take, attribute reads included (one receive always runs).
    """

    sqs: SqsBackend
    correlate: Correlator | None = None
    hold: int = 120
    budget: float = 4.0
    _shared: OrderedDict[str, DlqRead] = field(default_factory=OrderedDict)
    _locks: dict[str, anyio.Lock] = field(default_factory=dict)

    async def read(self, url: str, attributes: dict[str, str], max_messages: int,
                   started: float | None = None, wait: float | None = None) -> tuple[DlqRead, bool]:
        """The read of the DLQ at ``url`` for a caller wanting at most ``max_messages``:
        a shared one when it serves (see the module docstring), else a new one.

        Args:
            attributes: the queue's attributes, just read by the caller (its counts key the
                shared reads; a new read takes them as "before").
            started: ``time.monotonic()`` when the caller began (default: now): the time
                budget counts from there.
            wait: the longest time, seconds, to wait while another read or a redrive dry run
                (:meth:`exclusive`) holds this DLQ here; None: as long as that takes.

        Returns ``(read, shared)``; ``shared`` is true when another call did the reading.
        Never raises for a failed receive (the read ends with ``stop="read_error"``).

        Raises:
            OpsError: the DLQ was still held after ``wait`` seconds (nothing was read).
        """
        started = time.monotonic() if started is None else started
        arrived = time.monotonic()
        async with self.exclusive(url, wait) as waited:
            found = self._shared.get(url)
            if found is not None and time.monotonic() - found.finished <= SHARE_SECONDS and found.serves(max_messages) \
                    and ((waited and found.finished >= arrived) or found.now == Counts.of(attributes)):
                return found, True
            if waited:  # the attributes were read while another read held messages
                started = time.monotonic()
                attributes = await self.sqs.attributes(url)
            result = await self._read(url, attributes, max_messages, started)
            self._keep(result)
            return result, False

    @asynccontextmanager
    async def exclusive(self, url: str, wait: float | None = None) -> AsyncIterator[bool]:
        """Hold the DLQ at ``url`` for one reader in this process. Every read takes it, and a
        redrive's dry run (and the start of its move) too, so a dry run never counts a DLQ
        while a read of it (``analyze_dlq``, the ``/events`` poller) hides its messages, and
        such a read waits for the dry run instead of hiding messages from it.

        Args:
            wait: the longest time, seconds, to wait while another holds it; None: as long
                as that takes.

        Yields True when it had to wait (the caller's attributes predate the other one's
        read: read them again).

        Raises:
            OpsError: it was still held after ``wait`` seconds.
        """
        lock = self._lock(url)
        waited = lock.locked()
        acquired = False
        with anyio.move_on_after(math.inf if wait is None else wait):
            await lock.acquire()
            acquired = True
        if not acquired:
            raise OpsError(f"another read or a redrive dry run of this DLQ held it for over {wait:g} s; nothing was "
                           "read", "try again in a moment.")
        try:
            yield waited
        finally:
            lock.release()

    def _lock(self, url: str) -> anyio.Lock:
        lock = self._locks.get(url)
        if lock is None:
            if len(self._locks) >= MAX_LOCKS:
                for key in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[key]
            lock = self._locks[url] = anyio.Lock()
        return lock

    def _keep(self, result: DlqRead) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._shared.items() if now - v.finished > SHARE_SECONDS]:
            del self._shared[key]
        self._shared.pop(result.url, None)
        self._shared[result.url] = result
        while len(self._shared) > MAX_SHARED:
            self._shared.popitem(last=False)

    async def _read(self, url: str, attributes: dict[str, str], max_messages: int, started: float) -> DlqRead:
        before = Counts.of(attributes)
        reading = time.monotonic()
        deadline = started + self.budget
        hold = min(self.hold, max(MIN_HOLD_SECONDS, math.ceil(self.budget) + 10))
        seen: dict[str, dict[str, Any]] = {}
        calls, empty, stop, error, held = 0, 0, "drained", None, 0
        failed: list[str] = []
        try:
            while True:
                if len(seen) >= max_messages:
                    stop = "max_messages"
                    break
                if held >= MAX_READ_BYTES:
                    stop = "max_bytes"
                    break
                now = time.monotonic()
                if calls and now + (now - reading) / calls > deadline:
                    stop = "time_budget"  # the next receive, as long as the average so far, would end too late
                    break
                try:
                    batch = await self.sqs.receive(url, min(10, max_messages - len(seen)), visibility_timeout=hold)
                except OpsError as exc:
                    stop, error = "read_error", str(exc)
                    break
                calls += 1
                fresh = [m for m in batch if m["MessageId"] not in seen]
                held += sum(len(m.get("Body", "")) for m in fresh)
                for m in batch:  # a message seen again gets its newest receipt handle, so the release works
                    seen[m["MessageId"]] = m
                if fresh:
                    empty = 0
                elif len(seen) >= before.visible or (empty := empty + 1) >= STALE_RECEIVES:
                    break
        finally:
            if seen:
                with anyio.CancelScope(shield=True):
                    failed = await self._release(url, [m["ReceiptHandle"] for m in seen.values()])
        seconds = time.monotonic() - started
        after: Counts | None = None
        after_error = None
        if stop == "drained" or len(seen) >= before.visible:
            try:
                after = Counts.of(await self.sqs.attributes(url))
            except OpsError as exc:
                after_error = str(exc)
        if after and failed:  # ours, still hidden: not another reader's
            after = Counts(after.visible + len(failed), max(0, after.in_flight - len(failed)), after.delayed)
        facts = [MessageFacts(m) for m in seen.values()]
        sigs = await signatures(facts, self.correlate)
        return DlqRead(
            url=url, fifo=attributes.get("FifoQueue") == "true", before=before, after=after,
            max_messages=max_messages, stop=stop, receive_calls=calls, seconds=seconds, budget=self.budget,
            groups=collect(facts, sigs), records=[(f.id, sigs[f.id].text, f.order_id, f.trace_id) for f in facts],
            error=error, hold=hold, release_failed=len(failed), after_error=after_error)

    async def _release(self, url: str, handles: list[str]) -> list[str]:
        """Release ``handles`` in :data:`RELEASE_CHUNKS` concurrent parts; return those that failed."""
        failed: list[str] = []
        size = math.ceil(len(handles) / RELEASE_CHUNKS / 10) * 10  # whole batches of 10

        async def part(chunk: list[str]) -> None:
            try:
                failed.extend(await self.sqs.release(url, chunk))
            except OpsError:
                failed.extend(chunk)

        async with anyio.create_task_group() as tg:
            for i in range(0, len(handles), size):
                tg.start_soon(part, handles[i:i + size])
        return failed
