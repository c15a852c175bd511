"""Queues toolset: list queues, peek, analyse a DLQ by failure signature, redrive a DLQ.

Data comes from SQS (:class:`~opsmcp.backends.sqs.SqsBackend`). The failure-signature
grouping lives in :mod:`.dlq_signatures` and the redrive mover (the code that deletes
data) in :mod:`.redrive`; this module holds the tools and wires them together. DLQ
analysis can correlate messages with application logs through an optional ``correlate``
callable (trace id -> that trace's ERROR lines), which the server wires to the log store.

SQS facts every tool here respects: there is no true peek (every receive raises the
receive count, and on a queue with a redrive policy enough receives move a message to
its DLQ); a received message stays hidden for its visibility timeout unless released.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.analysis.dlq_signatures import Correlator, DlqGroup, MessageFacts, group, iso_ms, signatures
from opsmcp.analysis.queue_state import QueueInfo, QueueStates, each
from opsmcp.analysis.redrive import Mover, Progress, RedriveFailure, RedriveResult, Route
from opsmcp.backends.aws import call_budget
from opsmcp.backends.sqs import SqsBackend, queue_name, redrive_policy
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound
from opsmcp.results import OutsideText, Result, clamp, untrusted
from opsmcp.toolsets.base import tool

__all__ = ["DlqAnalysis", "DlqGroup", "PeekResult", "QueueInfo", "QueueList", "QueueTools", "RedriveFailure",
           "RedriveResult"]

BODY_PREVIEW_BYTES = 4096
MAX_QUEUE_ARG = 1024  # a queue URL or ARN; names are at most 80 characters
MAX_PREFIX = 80  # AWS caps QueueNamePrefix at 80 characters
MAX_SIGNATURE = 1000
MAX_CURSOR = 2048

QueueArg = Annotated[str, Field(description="Queue name (e.g. 'order-queue-dlq') or queue URL.", min_length=1,
                                max_length=MAX_QUEUE_ARG)]


# ---------------------------------------------------------------- models --------------


class QueueList(Result):
    """Result of list_queues."""

    queues: list[QueueInfo]
    count: int


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
    approximate_total: int = Field(description="ApproximateNumberOfMessages before reading.")
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
        self.states = states or QueueStates(sqs, correlate)
        self.hold = settings.redrive_hold_seconds
        self.max_seconds = settings.redrive_max_seconds

    # -------------------------------------------------------------- list_queues --------
    @tool(title="List SQS queues", read_only=True, idempotent=True)
    async def list_queues(
        self,
        prefix: Annotated[str | None, Field(description="Only queues whose name starts with this (at most 80 "
                                            "characters, AWS's limit).", max_length=MAX_PREFIX)] = None,
        limit: Annotated[int, Field(description="Max queues to return, 1-1000 (others are clamped).")] = 100,
        cursor: Annotated[str | None, Field(description="next_cursor from a previous call.",
                                            max_length=MAX_CURSOR)] = None,
    ) -> QueueList:
        """List SQS queues with visible / in-flight / delayed message counts, each queue's DLQ
        and maxReceiveCount, and for a DLQ the source queues that feed it. Bounded by `limit`;
        pass `next_cursor` back as `cursor` for more.

        Raises:
            InvalidInput: a cursor SQS does not accept (start over without it)."""
        notes: list[str] = []
        limit = clamp("limit", limit, 1, 1000, notes)
        infos, token = await self.states.page(prefix, limit, cursor)
        if prefix and not infos:
            notes.append(f"no queue name starts with {prefix!r}; call list_queues without prefix to see all")
        if prefix or token or cursor:
            notes.append("is_dlq/source_queues consider only the queues listed here; analyze_dlq checks all queues")
        return QueueList(queues=infos, count=len(infos), truncated=bool(token), next_cursor=token, notes=notes)

    # -------------------------------------------------------------- peek_messages ------
    @tool(title="Peek at queue messages", read_only=False, destructive=False, idempotent=False)
    async def peek_messages(
        self,
        queue: QueueArg,
        max_messages: Annotated[int, Field(description="How many messages, 1-10 (others are clamped).")] = 5,
    ) -> PeekResult:
        """Show up to 10 messages of a queue: body (JSON parsed when possible), message
        attributes, receive count, sent time. SQS has no true peek: this receives the messages
        and gives them back at once (visibility 0), which raises each one's receive count; on a
        queue with a redrive policy the result warns about messages now one receive from
        moving to the DLQ. Prefer analyze_dlq for a whole DLQ."""
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
        sources = await self._sources_of(attributes.get("QueueArn", ""))
        return url, attributes, sources

    async def _sources_of(self, arn: str) -> list[str]:
        """Names of queues whose RedrivePolicy targets ``arn`` (every queue is read).

        Raises:
            OpsError: a queue could not be read (a wrong answer here could redrive to the
                wrong queue, so failures are not skipped); a queue deleted meanwhile is.
        """
        found: list[str] = []

        async def check(url: str) -> None:
            try:
                policy = redrive_policy(await self.sqs.attributes(url))
            except NotFound:
                return
            if policy and policy.get("deadLetterTargetArn") == arn:
                found.append(queue_name(url))

        await each(check, await self.sqs.all_urls())
        return sorted(found)

    async def _read_all(self, url: str, limit: int, expected: int, seen: dict[str, dict[str, Any]]) -> None:
        """Receive up to ``limit`` distinct messages into ``seen`` (message id -> message),
        keeping them hidden; the caller releases them, even when this raises.

        Stops when the queue is drained, when ``expected`` messages were read, or when
        receives bring back only messages already seen (whose receipt handle is refreshed, so
        the release works even after a visibility timeout ran out).
        """
        empty = 0
        while len(seen) < limit:
            batch = await self.sqs.receive(url, min(10, limit - len(seen)), visibility_timeout=self.hold)
            fresh = [m for m in batch if m["MessageId"] not in seen]
            for m in batch:
                seen[m["MessageId"]] = m
            if not fresh:
                empty += 1
                if len(seen) >= expected or empty >= 3:
                    break
            else:
                empty = 0

    # -------------------------------------------------------------- analyze_dlq --------
    @tool(title="Analyse a DLQ by failure signature", read_only=False, destructive=False, idempotent=False)
    async def analyze_dlq(
        self,
        queue: QueueArg,
        max_messages: Annotated[int, Field(description="Read at most this many messages, 1-5000 (others are "
                                                     "clamped).")] = 1000,
    ) -> DlqAnalysis:
        """Read a DLQ (all of it, up to max_messages) and group its messages by failure
        signature: the ErrorCode/ErrorMessage attributes where present, else the last ERROR
        log line of the message's trace id, else the message type. Each group: count, first/last
        sent time, sample message ids, order ids and trace ids. Nothing is moved: messages are
        hidden while being read and made visible again before this returns (receive counts
        rise by 1). Refuses a queue that has a redrive policy of its own."""
        notes: list[str] = []
        max_messages = clamp("max_messages", max_messages, 1, 5000, notes)
        url, attributes, sources = await self._dlq_context(queue)
        expected = int(attributes.get("ApproximateNumberOfMessages", 0))
        seen: dict[str, dict[str, Any]] = {}
        messages: list[dict[str, Any]] = []
        try:
            await self._read_all(url, max_messages, expected, seen)
            messages = list(seen.values())
            facts = [MessageFacts(m) for m in messages]
            groups = group(facts, await signatures(facts, self.correlate))
        finally:
            failed = await self.sqs.release(url, [m["ReceiptHandle"] for m in seen.values()])
        if failed:
            notes.append(f"{len(failed)} message(s) could not be released and stay hidden for up to {self.hold} s")
        if not sources:
            notes.append(f"no queue's RedrivePolicy targets {queue_name(url)}: it is not wired as a DLQ")
        truncated = len(messages) >= max_messages and expected > len(messages)
        if truncated:
            notes.append(f"read {len(messages)} of ~{expected} messages; raise max_messages to read more")
        elif attributes.get("FifoQueue") == "true" and len(messages) < expected:
            notes.append("FIFO: messages queued behind the first batch of their message group cannot be read "
                         "without moving them")
        if any(g.basis == "message_type" for g in groups) and self.correlate is None:
            notes.append("log correlation is off (logs toolset disabled): groups without error attributes use "
                         "the message type")
        return DlqAnalysis(queue=queue_name(url), source_queues=sources, messages_read=len(messages),
                           approximate_total=expected, groups=groups, truncated=truncated, notes=notes)

    # -------------------------------------------------------------- redrive_dlq --------
    @tool(title="Redrive a DLQ", read_only=False, destructive=True, idempotent=False, write=True, preview_arg="dry_run",
          preview_bound=("max_messages", "matched"))
    async def redrive_dlq(
        self,
        queue: Annotated[str, Field(description="The DLQ: name or URL.", min_length=1, max_length=MAX_QUEUE_ARG)],
        target: Annotated[str | None, Field(description="Queue to move messages to; default: the DLQ's source queue.",
                                            max_length=MAX_QUEUE_ARG)] = None,
        max_messages: Annotated[int, Field(description="Move at most this many, 1-10000 (others are clamped).")] = 1000,
        signature: Annotated[str | None, Field(description="Only messages of this analyze_dlq signature.",
                                               max_length=MAX_SIGNATURE)] = None,
        dry_run: Annotated[bool, Field(description="true (default): only report what would move.")] = True,
        progress: Progress | None = None,
    ) -> RedriveResult:
        """Move messages from a DLQ back to its source queue (found through redrive policies) or
        to `target`. dry_run=true (the default) reports what would move and moves nothing; its
        `matched` is the most the real call may move. A real move is at-least-once: each batch
        of <=10 is sent (body, message attributes; FIFO: group id, a stable deduplication id,
        each group in order), every entry is checked, and only the sent ones are deleted from
        the DLQ; failed ones stay there and are reported. Returns moved / failed /
        duplicates_possible / remaining."""
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
        visible = int(attributes.get("ApproximateNumberOfMessages", 0))
        result = await mover.run(max_messages, signature, dry_run, visible)
        if signature and result.matched == 0:
            result.notes.append(f"no message matched signature {signature!r}; call analyze_dlq for the exact "
                                "signatures")
        return result

