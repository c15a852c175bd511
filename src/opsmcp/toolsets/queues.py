"""Queues toolset: list queues, peek, analyse a DLQ by failure signature, redrive a DLQ.

Data comes from SQS (:class:`~opsmcp.backends.sqs.SqsBackend`). The failure-signature
grouping lives in :mod:`.dlq_signatures`, the bounded read of a DLQ that concurrent callers
share in :mod:`.dlq_read`, and the redrive mover (the code that deletes data) in
:mod:`.redrive`; this module holds the tools and wires them together. DLQ
analysis can correlate messages with application logs through an optional ``correlate``
callable (trace id -> that trace's ERROR lines), which the server wires to the log store.

SQS facts every tool here respects: there is no true peek (every receive raises the
receive count, and on a queue with a redrive policy enough receives move a message to
its DLQ); a received message stays hidden for its visibility timeout unless released.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.analysis.dlq_read import MAX_READ_BYTES, SHARE_SECONDS, DlqRead, DlqReader
from opsmcp.analysis.dlq_signatures import Correlator, DlqGroup, MessageFacts, iso_ms, signatures
from opsmcp.analysis.queue_state import QueueInfo, QueueStates
from opsmcp.analysis.redrive import Mover, Progress, RedriveFailure, RedriveResult, Route
from opsmcp.backends.aws import call_budget
from opsmcp.backends.sqs import SqsBackend, queue_name, redrive_policy
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput
from opsmcp.results import OutsideText, Result, clamp, untrusted
from opsmcp.times import iso
from opsmcp.toolsets.base import tool

__all__ = ["DlqAnalysis", "DlqGroup", "PeekResult", "QueueInfo", "QueueList", "QueueTools", "RedriveFailure",
           "RedriveResult"]

DEFAULT_READ_SECONDS = 4.0  # time budget of one analyze_dlq read (OPSMCP_DLQ_READ_SECONDS)
MAX_ANALYZE = 5000  # analyze_dlq's max_messages bound
BODY_PREVIEW_BYTES = 4096
MAX_QUEUE_ARG = 1024  # a queue URL or ARN; names are at most 80 characters
MAX_PREFIX = 80  # AWS caps QueueNamePrefix at 80 characters
MAX_SIGNATURE = 1000
MAX_CURSOR = 2048

QueueArg = Annotated[str, Field(description="Name (e.g. 'order-queue-dlq') or URL.", min_length=1,
                                max_length=MAX_QUEUE_ARG)]


# ---------------------------------------------------------------- models --------------


class QueueList(Result):
    """Result of list_queues."""

    queues: list[QueueInfo]
    count: int
    unread: list[str] = Field(default_factory=list, description="Queues whose counts could not be read in time "
                                                                "(not in queues); call again for them.")


class PeekedMessage(BaseModel):
    """One message as seen by a peek."""

    message_id: str
    body: Any = Field(description="Parsed JSON when the body is JSON, else the text (cut to 4 KB).")
    body_format: str = Field(description="'json', 'text', or 'json (cut to text)' for a JSON body over 4 KB.")
    body_bytes: int
    body_truncated: bool = False
    message_attributes: dict[str, str] = Field(default_factory=dict)
    receive_count: int = Field(description="ApproximateReceiveCount, including this peek.")
    sent_time: str | None = Field(None, description="SentTimestamp, ISO-8601 UTC.")
    group_id: str | None = None
    near_dlq: bool = Field(False, description="One more receive moves it to the DLQ.")


class PeekResult(OutsideText):
    """Result of peek_messages."""

    untrusted: list[str] = untrusted("messages[].body", "messages[].message_attributes", "messages[].group_id")

    queue: str
    messages: list[PeekedMessage]


class DlqAnalysis(OutsideText):
    """Result of analyze_dlq."""

    untrusted: list[str] = untrusted("groups[]")

    queue: str
    source_queues: list[str]
    messages_read: int
    approximate_total: int = Field(description="visible + in flight + delayed, by the queue's attributes; never "
                                               "below messages_read.")
    visible: int = Field(description="ApproximateNumberOfMessages before reading.")
    in_flight: int = Field(description="ApproximateNumberOfMessagesNotVisible before reading: held by another "
                                       "reader, unseen by this read.")
    in_flight_after: int | None = Field(description="The same after this read released its messages; null for a "
                                                    "sample (not read again).")
    complete: bool = Field(description="Every message was read: counts exact, none hidden by another reader.")
    incomplete_because: list[str] = Field(description="Why not complete: in_flight, other_reader, fifo_groups, "
                                                      "delayed, max_messages, max_bytes, time_budget, read_error (see "
                                                      "notes).")
    sampled: bool = Field(description="A bound ended the read: groups' estimated_count are extrapolated.")
    sample: str | None = Field(None, description="When sampled: which messages were read and how counts scale.")
    receive_calls: int = Field(description="ReceiveMessage calls the read made.")
    read_seconds: float = Field(description="How long the read took.")
    read_at: str = Field(description="When the read ended, ISO-8601 UTC.")
    age_seconds: float = Field(description="0 when this call read the queue, else the age of the read it shares.")
    groups: list[DlqGroup]


# ---------------------------------------------------------------- toolset -------------


class QueueTools:
    """SQS queue and DLQ tools.

    Args:
        settings: ``redrive_hold_seconds`` (how long analysis and redrive keep read messages hidden).
        sqs: the SQS adapter.
        correlate: optional ``async (trace_ids) -> {trace_id: [error line dicts, oldest first]}``
            used by :meth:`analyze_dlq` to explain messages that carry no error attributes.
            Each line dict has at least ``service``, ``message`` and ``timestamp``.
        states: the queue-state reader ``list_queues`` answers from (the composition root
            shares it with the ``/events`` poller and the queue resources); default: one
            on ``sqs``.
    """

    def __init__(self, settings: Settings, sqs: SqsBackend, correlate: Correlator | None = None,
                 states: QueueStates | None = None) -> None:
        self.sqs = sqs
        self.correlate = correlate
        self.hold = settings.redrive_hold_seconds
        self.max_seconds = settings.redrive_max_seconds
        self.states = states or QueueStates(sqs, correlate, DlqReader(sqs, correlate, self.hold,
                                                                      settings.dlq_read_seconds))

    # -------------------------------------------------------------- list_queues --------
    @tool(title="List SQS queues", read_only=True, idempotent=True)
    async def list_queues(
        self,
        prefix: Annotated[str | None, Field(description="Name prefix.",
                                            max_length=MAX_PREFIX)] = None,
        limit: Annotated[int, Field(description="Most queues, 1-1000.")] = 100,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page.",
                                            max_length=MAX_CURSOR)] = None,
    ) -> QueueList:
        """SQS queues: visible / in-flight / delayed counts, each queue's DLQ and
        maxReceiveCount, and for a DLQ its source queues.

        Raises:
            InvalidInput: a cursor SQS does not accept (start over without it)."""
        notes: list[str] = []
        limit = clamp("limit", limit, 1, 1000, notes)
        page = await self.states.page(prefix, limit, cursor)
        infos, token, unread = page.queues, page.next_cursor, page.unread
        notes += page.notes
        if prefix and not infos:
            notes.append(f"no queue name starts with {prefix!r}; call list_queues without prefix to see all")
        if prefix or token or cursor:
            notes.append("is_dlq/source_queues consider only the queues listed here; analyze_dlq checks all queues")
        return QueueList(queues=infos, count=len(infos), unread=unread, truncated=bool(token or unread),
                         next_cursor=token, notes=notes)

    # -------------------------------------------------------------- peek_messages ------
    @tool(title="Peek at queue messages", read_only=False, destructive=False, idempotent=False)
    async def peek_messages(
        self,
        queue: QueueArg,
        max_messages: Annotated[int, Field(description="How many, 1-10.")] = 5,
    ) -> PeekResult:
        """Up to 10 messages of a queue: body (JSON parsed when possible), attributes,
        receive count, sent time. SQS has no true peek: this receives them and releases them
        at once, raising each receive count by 1. For a whole DLQ use analyze_dlq."""
        notes: list[str] = []
        max_messages = clamp("max_messages", max_messages, 1, 10, notes)
        url, attributes = await self.sqs.require(queue)
        policy = redrive_policy(attributes)
        received = await self.sqs.receive(url, max_messages, visibility_timeout=0)
        notes.append("SQS has no true peek: each message shown had its receive count raised by 1")
        out = []
        for m in received:
            facts = MessageFacts(m)
            raw = m.get("Body", "")
            size = len(raw.encode())
            body: Any = facts.body
            body_format = "json" if facts.is_json else "text"
            cut = size > BODY_PREVIEW_BYTES
            if cut:  # the first 4 KB as text; a cut JSON document is no longer JSON
                body = raw.encode()[:BODY_PREVIEW_BYTES].decode(errors="ignore")
                body_format = "json (cut to text)" if facts.is_json else "text"
            count = int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1))
            near = bool(policy and count >= policy.get("maxReceiveCount", 10**9))
            out.append(PeekedMessage(
                message_id=facts.id, body=body, body_format=body_format,
                body_bytes=size, body_truncated=cut, message_attributes=facts.attrs, receive_count=count,
                sent_time=iso_ms(facts.sent), group_id=m.get("Attributes", {}).get("MessageGroupId"), near_dlq=near,
            ))
        at_risk = [p.message_id for p in out if p.near_dlq]
        if at_risk and policy:
            notes.append(
                f"WARNING: {len(at_risk)} message(s) reached maxReceiveCount {policy['maxReceiveCount']}; the next "
                f"receive by anyone moves them to {queue_name(policy['deadLetterTargetArn'])}: {', '.join(at_risk[:5])}"
            )
        if not out:
            visible = int(attributes.get("ApproximateNumberOfMessages", 0))
            notes.append("no message received"
                         + (f" (queue reports {visible} visible; retry)" if visible else " (queue is empty)"))
        return PeekResult(queue=queue_name(url), messages=out, notes=notes)

    # -------------------------------------------------------------- DLQ reading ------------
    async def _dlq_context(self, queue: str) -> tuple[str, dict[str, str], list[str]]:
        """Resolve a DLQ; return ``(url, attributes, source queue names)``.

        Raises:
            InvalidInput: the queue has a redrive policy of its own (reading it could move
                messages onward).
        """
        url, attributes = await self.states.dlq(queue)
        sources = await self._sources_of(url)
        return url, attributes, sources

    async def _sources_of(self, url: str) -> list[str]:
        """Names of the queues whose RedrivePolicy targets the queue at ``url``
        (ListDeadLetterSourceQueues: one request, however many queues exist).

        Raises:
            OpsError: the list could not be read (a wrong answer here could redrive to the
                wrong queue, so a failure is not skipped).
        """
        return sorted(queue_name(u) for u in await self.sqs.dead_letter_sources(url))

    # -------------------------------------------------------------- analyze_dlq --------
    @tool(title="Analyse a DLQ by failure signature", read_only=False, destructive=False, idempotent=False)
    async def analyze_dlq(
        self,
        queue: QueueArg,
        max_messages: Annotated[int, Field(description="Read at most this many, 1-5000.")] = 1000,
        cursor: Annotated[str | None, Field(description="A group's ids_cursor: its next page of ids.",
                                            max_length=MAX_CURSOR)] = None,
    ) -> DlqAnalysis:
        """Group a DLQ's messages by failure signature (error attributes, else the trace's
        last ERROR log line, else the message type), with counts, order and trace ids.
        Totals come from queue attributes; the read stops at max_messages or
        OPSMCP_DLQ_READ_SECONDS and then answers from a sample (`sampled`, `complete`,
        `incomplete_because` say so). Nothing moves: messages are hidden while read and
        released before it returns (receive counts +1). Refuses a queue with a redrive policy
        of its own."""
        notes: list[str] = []
        page = _parse_ids_cursor(cursor) if cursor else None
        max_messages = page[3] if page else clamp("max_messages", max_messages, 1, MAX_ANALYZE, notes)
        read, shared = await self.states.read_dlq(queue, max_messages)
        url = read.url
        sources = await self._sources_of(url)
        groups: list[DlqGroup] = []
        next_cursor = None
        if page:
            found = next((g for g in read.groups if _group_key(g.signature) == page[0]), None)
            if found is None:
                raise InvalidInput("the group this cursor pages through is not among the messages read now (the DLQ "
                                   "changed since the cursor was issued).",
                                   "call analyze_dlq without cursor for the current groups.")
            shown, more = found.page(read.scale, page[1], page[2])
            next_cursor = shown.ids_cursor = _ids_cursor(found.signature, more, max_messages) if more else None
            groups = [shown]
        else:
            for g in read.groups:
                shown, more = g.page(read.scale)
                shown.ids_cursor = _ids_cursor(g.signature, more, max_messages) if more else None
                groups.append(shown)
        notes += _read_notes(read, shared)
        if not sources:
            notes.append(f"no queue's RedrivePolicy targets {queue_name(url)}: it is not wired as a DLQ")
        if any(g.basis == "message_type" for g in groups) and self.correlate is None:
            notes.append("log correlation is off (logs toolset disabled): groups without error attributes use "
                         "the message type")
        reasons = read.reasons()
        return DlqAnalysis(
            queue=queue_name(url), source_queues=sources, messages_read=read.messages_read,
            approximate_total=read.total, visible=read.before.visible, in_flight=read.before.in_flight,
            in_flight_after=read.after.in_flight if read.after else None, complete=not reasons,
            incomplete_because=reasons,
            sampled=read.sampled, sample=_sample_text(read) if read.sampled else None,
            receive_calls=read.receive_calls, read_seconds=round(read.seconds, 3),
            read_at=iso(read.read_at, "seconds"),
            age_seconds=round(time.monotonic() - read.finished, 3) if shared else 0.0, groups=groups,
            truncated=bool(reasons) or any(g.ids_cursor for g in groups), next_cursor=next_cursor, notes=notes)

    # -------------------------------------------------------------- redrive_dlq --------
    @tool(title="Redrive a DLQ", read_only=False, destructive=True, idempotent=False, write=True, preview_arg="dry_run",
          preview_bound=("max_messages", "matched"))
    async def redrive_dlq(
        self,
        queue: Annotated[str, Field(description="The DLQ: name or URL.", min_length=1, max_length=MAX_QUEUE_ARG)],
        target: Annotated[str | None, Field(description="Queue to move to; default: the DLQ's source queue.",
                                            max_length=MAX_QUEUE_ARG)] = None,
        max_messages: Annotated[int, Field(description="Move at most this many, 1-10000.")] = 1000,
        signature: Annotated[str | None, Field(description="Only messages of this analyze_dlq signature.",
                                               max_length=MAX_SIGNATURE)] = None,
        dry_run: Annotated[bool, Field(description="true: only report what would move.")] = True,
        progress: Progress | None = None,
    ) -> RedriveResult:
        """Move messages from a DLQ back to its source queue (by redrive policies) or to
        ``target``. dry_run=true (the default) moves nothing and reports what would move: its
        ``matched`` is the most the real call may move. A real move is at-least-once: batches
        of <=10 are sent (body, attributes; FIFO: group id, a stable deduplication id, each
        group in order) and only entries the target accepted are deleted from the DLQ; the
        others stay and are reported. Returns moved / failed / duplicates_possible / remaining."""
        notes: list[str] = []
        max_messages = clamp("max_messages", max_messages, 1, 10_000, notes)
        result = await self.redrive(queue, target, max_messages, signature, dry_run, progress)
        result.notes[:0] = notes
        return result

    async def redrive(self, queue: str, target: str | None, max_messages: int, signature: str | None,
                      dry_run: bool, progress: Progress | None = None) -> RedriveResult:
        """Find the route (DLQ -> target) and run the :class:`~.redrive.Mover` (semantics there).

        Raises:
            InvalidInput: no target can be found (not a DLQ, or several sources), the target
                is the DLQ, or a FIFO target for a standard DLQ.
            NotFound: unknown DLQ or target queue.
        """
        with call_budget():  # joins the tool call's; its own when previewed for an approval prompt
            return await self._redrive(queue, target, max_messages, signature, dry_run, progress)

    async def _redrive(self, queue: str, target: str | None, max_messages: int, signature: str | None,
                       dry_run: bool, progress: Progress | None) -> RedriveResult:
        url, attributes, sources = await self._dlq_context(queue)
        dlq_name = queue_name(url)
        if target:
            target_url = await self.sqs.resolve(target)
        elif len(sources) == 1:
            target_url = await self.sqs.resolve(sources[0])
        elif not sources:
            raise InvalidInput(
                f"{dlq_name} is not the DLQ of any queue (no RedrivePolicy targets it), so there is no source to "
                "return to.",
                "pass target='<queue name>' to move its messages somewhere explicitly.",
            )
        else:
            raise InvalidInput(f"{dlq_name} is the DLQ of several queues: {', '.join(sources)}.",
                               "pass target= one of them.")
        target_attrs = await self.sqs.attributes(target_url)
        route = Route(dlq_url=url, dlq_name=dlq_name, dlq_fifo=attributes.get("FifoQueue") == "true",
                      target_url=target_url, target_name=queue_name(target_url),
                      target_fifo=target_attrs.get("FifoQueue") == "true")
        route.check()

        async def classify(messages: list[dict[str, Any]]) -> dict[str, str]:
            facts = [MessageFacts(m) for m in messages]
            return {k: sig.text for k, sig in (await signatures(facts, self.correlate)).items()}

        mover = Mover(self.sqs, route, classify, self.hold, progress, self.max_seconds)
        # A read of this DLQ in flight here (analyze_dlq, the /events poller) hides its messages
        # for a moment: the dry run waits for it and holds the DLQ while it counts; a move
        # starts after it but does not block readers for its whole length.
        async with self.states.reader.exclusive(url) as waited:
            if waited:
                attributes = await self.sqs.attributes(url)
            visible = int(attributes.get("ApproximateNumberOfMessages", 0))
            if dry_run:
                result = await mover.run(max_messages, signature, dry_run, visible)
        if not dry_run:
            result = await mover.run(max_messages, signature, dry_run, visible)
        if signature and result.matched == 0:
            result.notes.append(f"no message matched signature {signature!r}; call analyze_dlq for the exact "
                                "signatures")
        return result



# ---------------------------------------------------------------- analyze_dlq helpers -----


def _group_key(signature: str) -> str:
    return hashlib.sha256(signature.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _ids_cursor(signature: str, offsets: tuple[int, int], max_messages: int) -> str:
    """The opaque cursor of a group's next id page: ``(group, message offset, id offset, max_messages)``."""
    raw = json.dumps([_group_key(signature), offsets[0], offsets[1], max_messages], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_ids_cursor(cursor: str) -> tuple[str, int, int, int]:
    """The parts of an :func:`_ids_cursor`.

    Raises:
        InvalidInput: not a cursor analyze_dlq returned.
    """
    try:
        key, m, i, n = json.loads(base64.urlsafe_b64decode(cursor.strip() + "=" * (-len(cursor.strip()) % 4)))
        if isinstance(key, str) and len(key) == 16 and all(type(v) is int and 0 <= v <= 10**7 for v in (m, i, n)) \
                and 1 <= n <= MAX_ANALYZE:
            return key, m, i, n
    except (ValueError, TypeError, UnicodeError):
        pass
    raise InvalidInput("cursor is not a group's ids_cursor from analyze_dlq.",
                       "call analyze_dlq without cursor and pass one group's ids_cursor.")


def _sample_text(read: DlqRead) -> str:
    """How a sampled read chose its messages and how its counts scale."""
    why = {"max_messages": f"max_messages={read.max_messages}",
           "max_bytes": f"{MAX_READ_BYTES // 2**20} MiB of message bodies",
           "time_budget": f"the {read.budget:g} s read budget ({read.receive_calls} receive calls in "
                          f"{read.seconds:.1f} s)",
           "read_error": "a receive failed"}.get(read.stop, read.stop)
    if not read.messages_read:
        return f"none of ~{read.population} visible messages: {why} before any message was read."
    return (f"{read.messages_read} of ~{read.population} visible messages: the first ones {read.receive_calls} receive "
            f"calls returned before {why} ended the read. SQS chooses which messages a receive returns (not a random "
            f"sample; moto returns the oldest first), so a rare failure may be missing; estimated_count = count x "
            f"{read.population}/{read.messages_read}.")


def _read_notes(read: DlqRead, shared: bool) -> list[str]:
    """Notes naming everything that kept ``read`` from seeing the whole queue, and how to see
    more (:meth:`~opsmcp.analysis.dlq_read.DlqRead.notes`), after the shared read's age."""
    notes = []
    if shared:
        notes.append(f"shared read: another call read this queue {time.monotonic() - read.finished:.1f} s ago; a read "
                     f"is reused for up to {SHARE_SECONDS:.0f} s while the queue's counts stay the same")
    return notes + read.notes(f"raise max_messages (up to {MAX_ANALYZE}) to read more")
