"""Queues toolset: list queues, peek, analyse a DLQ by failure signature, redrive a DLQ.

Data comes from SQS (:class:`~opsmcp.backends.sqs.SqsBackend`); DLQ analysis can
correlate messages with application logs through an optional ``correlate`` callable
(trace id -> that trace's ERROR lines), which the server wires to the log store.

SQS facts every tool here respects: there is no true peek (every receive raises the
receive count, and on a queue with a redrive policy enough receives move a message to
its DLQ); a received message stays hidden for its visibility timeout unless released.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, UTC
from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.backends.sqs import SqsBackend, queue_name, redrive_policy
from opsmcp.errors import InvalidInput, NotFound, OpsError
from opsmcp.toolsets.base import Result, tool

Correlator = Callable[[list[str]], Awaitable[dict[str, list[dict[str, Any]]]]]

HOLD_SECONDS = 120  # how long analysis/redrive keeps read messages hidden before releasing them
BODY_PREVIEW_BYTES = 4096
MAX_SAMPLE_IDS = 5
MAX_IDS_PER_GROUP = 25
# Total payload of one SendMessageBatch: SQS allows 1 MiB today, 256 KiB before 2025 (and on
# older emulators); the smaller bound works everywhere. A bigger single message goes alone.
MAX_BATCH_BYTES = 256 * 1024

QueueArg = Annotated[str, Field(description="Queue name (e.g. 'order-queue-dlq') or queue URL.", min_length=1)]


# ---------------------------------------------------------------- models --------------


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


class PeekResult(Result):
    """Result of peek_messages."""

    queue: str
    messages: list[PeekedMessage]


class DlqGroup(BaseModel):
    """DLQ messages that share one failure signature."""

    signature: str = Field(description="Stable text naming the failure; pass to redrive_dlq(signature=...).")
    basis: str = Field(description="'error_attributes', 'logs', 'message_type' or 'unparseable'.")
    service: str | None = Field(None, description="Service whose error explains the failure (from logs).")
    error_message: str | None = Field(None, description="A concrete error message of this group.")
    count: int
    first_sent: str | None = Field(None, description="Earliest SentTimestamp in the group, ISO-8601.")
    last_sent: str | None = Field(None, description="Latest SentTimestamp in the group, ISO-8601.")
    first_event_time: str | None = Field(None, description="Earliest event time found in bodies, if any.")
    sample_message_ids: list[str]
    order_ids: list[str]
    trace_ids: list[str]


class DlqAnalysis(Result):
    """Result of analyze_dlq."""

    queue: str
    source_queues: list[str]
    messages_read: int
    approximate_total: int = Field(description="ApproximateNumberOfMessages before reading.")
    groups: list[DlqGroup]


class RedriveFailure(BaseModel):
    """A message that did not move, and why."""

    message_id: str
    error: str


class RedriveResult(Result):
    """Result of redrive_dlq (a dry run or a real move)."""

    queue: str
    target: str
    dry_run: bool
    matched: int = Field(description="Messages that match the filter and were (or would be) moved.")
    moved: int = Field(description="Messages sent to the target and deleted from the DLQ.")
    failed: list[RedriveFailure] = Field(default_factory=list, description="Stayed in the DLQ.")
    duplicates_possible: list[str] = Field(
        default_factory=list, description="Sent but not deleted: they will be sent again on the next redrive."
    )
    remaining: int | None = Field(description="ApproximateNumberOfMessages left in the DLQ afterwards (None: unknown).")
    status: str = Field("complete", description="'dry_run', 'complete', 'partial' (some failed or may be "
                        "duplicated) or 'stopped' (an error ended it early; the counts say what happened before).")
    by_signature: dict[str, int] = Field(default_factory=dict)
    sample_message_ids: list[str] = Field(default_factory=list)

    def preview_text(self) -> str:
        """What this dry run says would happen, for the user's approval prompt (deterministic)."""
        lines = [f"Move {self.matched} message(s) from DLQ {self.queue} to {self.target}."]
        lines += [f"  {count} x {sig}" for sig, count in sorted(self.by_signature.items(), key=lambda kv: (-kv[1], kv[0]))]
        return "\n".join(lines)


# ---------------------------------------------------------------- helpers -------------

_UUID = re.compile(r"\b[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}\b", re.I)
_HEX = re.compile(r"\b[0-9a-f]{12,}\b", re.I)
_NUM = re.compile(r"\d+(?:\.\d+)?")
_DLQ_BOOKKEEPING = re.compile(r"(moving .*\bdlq\b|to (the )?dlq|max(imum)? retries exceeded|dead[- ]letter)", re.I)
_TRACE_KEYS = ("traceId", "trace_id", "traceID", "TraceId", "x-trace-id", "X-Amzn-Trace-Id")
_ORDER_KEYS = ("orderId", "order_id", "OrderId")


def normalize(text: str) -> str:
    """Collapse ids and numbers so messages of one failure share a signature."""
    text = _UUID.sub("<id>", text)
    text = _HEX.sub("<id>", text)
    return _NUM.sub("<n>", text).strip()


def _ts(ms: str | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _find_key(doc: Any, keys: tuple[str, ...], depth: int = 0) -> str | None:
    """First string value under any of ``keys`` in ``doc`` (searching nested dicts, 3 deep)."""
    if not isinstance(doc, dict) or depth > 3:
        return None
    for key in keys:
        value = doc.get(key)
        if isinstance(value, str) and value:
            return value
    for value in doc.values():
        if isinstance(value, dict):
            found = _find_key(value, keys, depth + 1)
            if found:
                return found
    return None


def _parse_body(body: str) -> tuple[Any, bool]:
    try:
        return json.loads(body), True
    except ValueError:
        return body, False


def _attrs(message: dict[str, Any]) -> dict[str, str]:
    """Message attributes flattened to ``{name: value}`` (binary values base64)."""
    out = {}
    for name, attr in (message.get("MessageAttributes") or {}).items():
        if "StringValue" in attr:
            out[name] = attr["StringValue"]
        elif "BinaryValue" in attr:
            out[name] = base64.b64encode(attr["BinaryValue"]).decode()
    return out


def _payload_bytes(message: dict[str, Any]) -> int:
    """Bytes a message counts against SQS's batch payload limit (body + attribute names/values)."""
    size = len(message.get("Body", "").encode())
    for name, attr in (message.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(attr.get("DataType", "").encode())
        size += len(attr.get("StringValue", "").encode()) + len(attr.get("BinaryValue", b""))
    return size


def _by_size(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split up to 10 messages into batches whose payloads fit ``MAX_BATCH_BYTES``."""
    batches: list[list[dict[str, Any]]] = [[]]
    total = 0
    for m in messages:
        size = _payload_bytes(m)
        if batches[-1] and total + size > MAX_BATCH_BYTES:
            batches.append([])
            total = 0
        batches[-1].append(m)
        total += size
    return [b for b in batches if b]


def _copyable_attributes(message: dict[str, Any]) -> dict[str, Any]:
    """Message attributes in the shape SendMessage accepts (reserved list fields dropped)."""
    out = {}
    for name, attr in (message.get("MessageAttributes") or {}).items():
        out[name] = {k: v for k, v in attr.items() if k in ("DataType", "StringValue", "BinaryValue")}
    return out


class _Facts:
    """What the analyser extracts from one received message."""

    __slots__ = ("attrs", "body", "event_time", "is_json", "message", "order_id", "sent", "trace_id")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        self.body, self.is_json = _parse_body(message.get("Body", ""))
        self.attrs = _attrs(message)
        self.trace_id = _find_key(self.body, _TRACE_KEYS) if self.is_json else None
        if not self.trace_id:
            self.trace_id = next((v for k, v in self.attrs.items() if "trace" in k.lower()), None)
        self.order_id = _find_key(self.body, _ORDER_KEYS) if self.is_json else None
        self.sent = message.get("Attributes", {}).get("SentTimestamp")
        self.event_time = _find_key(self.body, ("eventTime", "timestamp", "@timestamp")) if self.is_json else None

    @property
    def id(self) -> str:
        return self.message["MessageId"]


# ---------------------------------------------------------------- toolset -------------


class QueueTools:
    """SQS queue and DLQ tools.

    Args:
        sqs: the SQS adapter.
        correlate: optional ``async (trace_ids) -> {trace_id: [error line dicts, oldest first]}``
            used by :meth:`analyze_dlq` to explain messages that carry no error attributes.
            Each line dict has at least ``service``, ``message`` and ``timestamp``.
    """

    def __init__(self, sqs: SqsBackend, correlate: Correlator | None = None) -> None:
        self.sqs = sqs
        self.correlate = correlate

    # -------------------------------------------------------------- list_queues --------
    @tool(title="List SQS queues", read_only=True, idempotent=True)
    async def list_queues(
        self,
        prefix: Annotated[str | None, Field(description="Only queues whose name starts with this.")] = None,
        limit: Annotated[int, Field(description="Max queues to return, 1-1000.", ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Field(description="next_cursor from a previous call.")] = None,
    ) -> QueueList:
        """List SQS queues with visible / in-flight / delayed message counts, each queue's DLQ
        and maxReceiveCount, and for a DLQ the source queues that feed it. Bounded by `limit`;
        pass `next_cursor` back as `cursor` for more."""
        urls, token = await self.sqs.list_urls(prefix, limit, cursor)
        import anyio

        attrs: dict[str, dict[str, str]] = {}

        async def fetch(url: str) -> None:
            try:
                attrs[url] = await self.sqs.attributes(url)
            except NotFound:
                pass  # deleted between list and read: left out

        async with anyio.create_task_group() as tg:
            for url in urls:
                tg.start_soon(fetch, url)
        sources: dict[str, list[str]] = {}
        infos = []
        urls = [u for u in urls if u in attrs]
        for url in urls:
            a = attrs[url]
            policy = redrive_policy(a)
            dlq = queue_name(policy["deadLetterTargetArn"]) if policy and policy.get("deadLetterTargetArn") else None
            if dlq:
                sources.setdefault(dlq, []).append(queue_name(url))
            infos.append(QueueInfo(
                name=queue_name(url), url=url, fifo=a.get("FifoQueue") == "true",
                visible=int(a.get("ApproximateNumberOfMessages", 0)),
                in_flight=int(a.get("ApproximateNumberOfMessagesNotVisible", 0)),
                delayed=int(a.get("ApproximateNumberOfMessagesDelayed", 0)),
                dlq=dlq, max_receive_count=policy.get("maxReceiveCount") if policy else None,
            ))
        for info in infos:
            if info.name in sources:
                info.is_dlq = True
                info.source_queues = sorted(sources[info.name])
        notes = []
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
        max_messages: Annotated[int, Field(description="How many messages, 1-10.", ge=1, le=10)] = 5,
    ) -> PeekResult:
        """Show up to 10 messages of a queue: body (JSON parsed when possible), message
        attributes, receive count, sent time. SQS has no true peek: this receives the messages
        and gives them back at once (visibility 0), which raises each one's receive count; on a
        queue with a redrive policy the result warns about messages now one receive from
        moving to the DLQ. Prefer analyze_dlq for a whole DLQ."""
        url, attributes = await self.sqs.require(queue)
        policy = redrive_policy(attributes)
        received = await self.sqs.receive(url, max_messages, visibility_timeout=0)
        notes = ["SQS has no true peek: each message shown had its receive count raised by 1"]
        out = []
        for m in received:
            facts = _Facts(m)
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
                sent_time=_ts(facts.sent), group_id=m.get("Attributes", {}).get("MessageGroupId"), near_dlq=near,
            ))
        at_risk = [p.message_id for p in out if p.near_dlq]
        if at_risk and policy:
            notes.append(
                f"WARNING: {len(at_risk)} message(s) reached maxReceiveCount {policy['maxReceiveCount']}; the next "
                f"receive by anyone moves them to {queue_name(policy['deadLetterTargetArn'])}: {', '.join(at_risk[:5])}"
            )
        if not out:
            visible = int(attributes.get("ApproximateNumberOfMessages", 0))
            notes.append("no message received" + (f" (queue reports {visible} visible; retry)" if visible else " (queue is empty)"))
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
                f"analyse its DLQ {queue_name(policy['deadLetterTargetArn'])!r} instead, or use peek_messages for a sample.",
            )
        sources = await self._sources_of(attributes.get("QueueArn", ""))
        return url, attributes, sources

    async def _sources_of(self, arn: str) -> list[str]:
        """Names of queues whose RedrivePolicy targets ``arn`` (every queue is read).

        Raises:
            OpsError: a queue could not be read (a wrong answer here could redrive to the
                wrong queue, so failures are not skipped); a queue deleted meanwhile is.
        """
        import anyio

        found: list[str] = []

        async def check(url: str) -> None:
            try:
                policy = redrive_policy(await self.sqs.attributes(url))
            except NotFound:
                return
            if policy and policy.get("deadLetterTargetArn") == arn:
                found.append(queue_name(url))

        async with anyio.create_task_group() as tg:
            for url in await self.sqs.all_urls():
                tg.start_soon(check, url)
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
            batch = await self.sqs.receive(url, min(10, limit - len(seen)), visibility_timeout=HOLD_SECONDS)
            fresh = [m for m in batch if m["MessageId"] not in seen]
            for m in batch:
                seen[m["MessageId"]] = m
            if not fresh:
                empty += 1
                if len(seen) >= expected or empty >= 3:
                    break
            else:
                empty = 0

    async def _signatures(self, facts: list[_Facts]) -> dict[str, tuple[str, str, str | None, str | None]]:
        """Map message id -> (signature, basis, service, error message)."""
        need_logs = [f.trace_id for f in facts if f.trace_id and not ("ErrorCode" in f.attrs or "ErrorMessage" in f.attrs)]
        errors: dict[str, list[dict[str, Any]]] = {}
        if need_logs and self.correlate is not None:
            try:
                errors = await self.correlate(sorted(set(need_logs)))
            except OpsError:
                errors = {}
        out = {}
        for f in facts:
            if "ErrorCode" in f.attrs or "ErrorMessage" in f.attrs:
                code = f.attrs.get("ErrorCode", "error")
                message = f.attrs.get("ErrorMessage", "")
                out[f.id] = (f"{code}: {normalize(message)}".strip(": "), "error_attributes", None, message or None)
                continue
            lines = errors.get(f.trace_id or "", [])
            if lines:
                explaining = [line for line in lines if not _DLQ_BOOKKEEPING.search(str(line.get("message", "")))]
                line = (explaining or lines)[-1]
                service, message = line.get("service"), str(line.get("message", ""))
                out[f.id] = (f"{service}: {normalize(message)}", "logs", service, message)
                continue
            if not f.is_json:
                out[f.id] = ("unparseable body (not JSON)", "unparseable", None, None)
                continue
            kind = _find_key(f.body, ("type", "eventType", "event", "detail-type", "eventName")) or "unknown type"
            out[f.id] = (f"type={kind}", "message_type", None, None)
        return out

    def _group(self, facts: list[_Facts], sigs: dict[str, tuple[str, str, str | None, str | None]]) -> list[DlqGroup]:
        groups: dict[str, DlqGroup] = {}
        for f in facts:
            signature, basis, service, message = sigs[f.id]
            g = groups.get(signature)
            if g is None:
                g = groups[signature] = DlqGroup(signature=signature, basis=basis, service=service, error_message=message,
                                                 count=0, sample_message_ids=[], order_ids=[], trace_ids=[])
            g.count += 1
            sent = _ts(f.sent)
            if sent:
                g.first_sent = min(g.first_sent or sent, sent)
                g.last_sent = max(g.last_sent or sent, sent)
            if f.event_time:
                g.first_event_time = min(g.first_event_time or f.event_time, f.event_time)
            if len(g.sample_message_ids) < MAX_SAMPLE_IDS:
                g.sample_message_ids.append(f.id)
            if f.order_id and f.order_id not in g.order_ids and len(g.order_ids) < MAX_IDS_PER_GROUP:
                g.order_ids.append(f.order_id)
            if f.trace_id and f.trace_id not in g.trace_ids and len(g.trace_ids) < MAX_IDS_PER_GROUP:
                g.trace_ids.append(f.trace_id)
        return sorted(groups.values(), key=lambda g: (-g.count, g.signature))

    # -------------------------------------------------------------- analyze_dlq --------
    @tool(title="Analyse a DLQ by failure signature", read_only=False, destructive=False, idempotent=False)
    async def analyze_dlq(
        self,
        queue: QueueArg,
        max_messages: Annotated[int, Field(description="Read at most this many messages, 1-5000.", ge=1, le=5000)] = 1000,
    ) -> DlqAnalysis:
        """Read a DLQ (all of it, up to max_messages) and group its messages by failure
        signature: the ErrorCode/ErrorMessage attributes where present, else the last ERROR
        log line of the message's trace id, else the message type. Each group: count, first/last
        sent time, sample message ids, order ids and trace ids. Nothing is moved: messages are
        hidden while being read and made visible again before this returns (receive counts
        rise by 1). Refuses a queue that has a redrive policy of its own."""
        url, attributes, sources = await self._dlq_context(queue)
        expected = int(attributes.get("ApproximateNumberOfMessages", 0))
        seen: dict[str, dict[str, Any]] = {}
        notes: list[str] = []
        try:
            await self._read_all(url, max_messages, expected, seen)
            messages = list(seen.values())
            facts = [_Facts(m) for m in messages]
            sigs = await self._signatures(facts)
            groups = self._group(facts, sigs)
        finally:
            failed = await self.sqs.release(url, [m["ReceiptHandle"] for m in seen.values()])
        if failed:
            notes.append(f"{len(failed)} message(s) could not be released and stay hidden for up to {HOLD_SECONDS} s")
        if not sources:
            notes.append(f"no queue's RedrivePolicy targets {queue_name(url)}: it is not wired as a DLQ")
        truncated = len(messages) >= max_messages and expected > len(messages)
        if truncated:
            notes.append(f"read {len(messages)} of ~{expected} messages; raise max_messages to read more")
        elif attributes.get("FifoQueue") == "true" and len(messages) < expected:
            notes.append("FIFO: messages queued behind the first batch of their message group cannot be read without moving them")
        if any(g.basis == "message_type" for g in groups) and self.correlate is None:
            notes.append("log correlation is off (logs toolset disabled): groups without error attributes use the message type")
        return DlqAnalysis(queue=queue_name(url), source_queues=sources, messages_read=len(messages),
                           approximate_total=expected, groups=groups, truncated=truncated, notes=notes)

    # -------------------------------------------------------------- redrive_dlq --------
    @tool(title="Redrive a DLQ", read_only=False, destructive=True, idempotent=False, write=True, preview_arg="dry_run",
          preview_bound=("max_messages", "matched"))
    async def redrive_dlq(
        self,
        queue: Annotated[str, Field(description="The DLQ: name or URL.", min_length=1)],
        target: Annotated[str | None, Field(description="Queue to move messages to; default: the DLQ's source queue.")] = None,
        max_messages: Annotated[int, Field(description="Move at most this many, 1-10000.", ge=1, le=10000)] = 1000,
        signature: Annotated[str | None, Field(description="Only messages of this analyze_dlq signature.")] = None,
        dry_run: Annotated[bool, Field(description="true (default): only report what would move.")] = True,
    ) -> RedriveResult:
        """Move messages from a DLQ back to its source queue (found through redrive policies) or
        to `target`. dry_run=true (the default) reports exactly what would move and moves nothing.
        A real move is at-least-once: each batch of <=10 is sent (body, message attributes, FIFO
        group id with a fresh deduplication id), every entry is checked, and only the sent ones
        are deleted from the DLQ; failed ones stay there and are reported. Returns moved /
        failed / remaining."""
        return await self.redrive(queue, target, max_messages, signature, dry_run)

    async def redrive(self, queue: str, target: str | None, max_messages: int, signature: str | None,
                      dry_run: bool) -> RedriveResult:
        """The redrive mover behind :meth:`redrive_dlq` (see there for semantics).

        Raises:
            InvalidInput: no target can be found (not a DLQ, or several sources), FIFO mismatch.
            NotFound: unknown DLQ or target queue.
        """
        url, attributes, sources = await self._dlq_context(queue)
        dlq_name = queue_name(url)
        if target:
            target_url = await self.sqs.resolve(target)
        elif len(sources) == 1:
            target_url = await self.sqs.resolve(sources[0])
        elif not sources:
            raise InvalidInput(
                f"{dlq_name} is not the DLQ of any queue (no RedrivePolicy targets it), so there is no source to return to.",
                "pass target='<queue name>' to move its messages somewhere explicitly.",
            )
        else:
            raise InvalidInput(f"{dlq_name} is the DLQ of several queues: {', '.join(sources)}.",
                               "pass target= one of them.")
        target_attrs = await self.sqs.attributes(target_url)
        target_fifo = target_attrs.get("FifoQueue") == "true"
        if queue_name(target_url) == dlq_name:
            raise InvalidInput("target is the DLQ itself.", "pick the source queue as target.")
        if target_fifo and attributes.get("FifoQueue") != "true":
            raise InvalidInput(f"target {queue_name(target_url)} is FIFO but the DLQ {dlq_name} is not: "
                               "messages have no group id to keep.", "redrive into a standard queue.")

        result = RedriveResult(queue=dlq_name, target=queue_name(target_url), dry_run=dry_run,
                               matched=0, moved=0, remaining=0)
        visible_before = int(attributes.get("ApproximateNumberOfMessages", 0))
        held: list[str] = []  # receipt handles to release at the end (non-matching, dry run, failed)
        seen: set[str] = set()
        stale_rounds = 0
        stopped = False
        try:
            while result.matched < max_messages:
                batch = await self.sqs.receive(url, 10, visibility_timeout=HOLD_SECONDS)
                fresh = [m for m in batch if m["MessageId"] not in seen]
                held += [m["ReceiptHandle"] for m in batch if m["MessageId"] in seen]
                if not fresh:
                    stale_rounds += 1
                    if stale_rounds >= 3:
                        break
                    continue
                stale_rounds = 0
                seen.update(m["MessageId"] for m in fresh)
                facts = [_Facts(m) for m in fresh]
                sigs = await self._signatures(facts)
                chosen = []
                for f in facts:
                    sig = sigs[f.id][0]
                    if (signature is None or sig == signature) and result.matched + len(chosen) < max_messages:
                        chosen.append((f, sig))
                    else:
                        held.append(f.message["ReceiptHandle"])
                result.matched += len(chosen)
                for f, sig in chosen:
                    result.by_signature[sig] = result.by_signature.get(sig, 0) + 1
                    if len(result.sample_message_ids) < 10:
                        result.sample_message_ids.append(f.id)
                if dry_run:
                    held += [f.message["ReceiptHandle"] for f, _ in chosen]
                    continue
                for chunk in _by_size([f.message for f, _ in chosen]):
                    if not await self._move(url, target_url, target_fifo, chunk, result, held):
                        stopped = True
                        break
                if stopped:
                    break
        except OpsError as exc:
            stopped = True
            result.notes.append(f"stopped early: {exc} The counts say what happened before that; the rest stays "
                                "in the DLQ.")
        finally:
            try:
                await self.sqs.release(url, held)
            except OpsError as exc:
                result.notes.append(f"could not release {len(held)} held message(s) ({exc}); they become "
                                    f"visible again by themselves within {HOLD_SECONDS} s")
        try:
            result.remaining = int((await self.sqs.attributes(url)).get("ApproximateNumberOfMessages", 0))
        except OpsError:
            result.remaining = None
        if dry_run:
            result.status = "dry_run"
            result.notes.append(f"dry run: nothing moved; {result.matched} message(s) would move to {result.target}. "
                                "Call again with dry_run=false to move them.")
            if attributes.get("FifoQueue") == "true" and result.matched < min(max_messages, visible_before):
                result.notes.append(
                    f"FIFO: a dry run cannot see messages queued behind the first ones of each message group "
                    f"(~{visible_before} visible); a real redrive moves at most {result.matched} (what this preview "
                    "showed); run it again for the rest")
        elif stopped:
            result.status = "stopped"
        elif result.failed or result.duplicates_possible:
            result.status = "partial"
        if signature and result.matched == 0:
            result.notes.append(f"no message matched signature {signature!r}; call analyze_dlq for the exact signatures")
        if result.failed:
            result.notes.append(f"{len(result.failed)} message(s) failed to send and stay in the DLQ")
        return result

    async def _move(self, url: str, target_url: str, target_fifo: bool, messages: list[dict[str, Any]],
                    result: RedriveResult, held: list[str]) -> bool:
        """Send one batch (<=10 messages, <= ``MAX_BATCH_BYTES``) to the target, then delete exactly the sent
        ones from the DLQ.

        Returns False when the redrive must stop (the send's outcome is unknown, or the DLQ
        refused deletes)."""
        entries = []
        by_id = {}
        for i, m in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"]}
            attrs = _copyable_attributes(m)
            if attrs:
                entry["MessageAttributes"] = attrs
            if target_fifo:
                entry["MessageGroupId"] = m.get("Attributes", {}).get("MessageGroupId") or "redrive"
                # Stable across retries of this same DLQ message, and never the producer's own id
                # (which the target may still remember and would silently drop as a duplicate).
                entry["MessageDeduplicationId"] = "redrive-" + str(uuid.uuid5(uuid.NAMESPACE_URL, m["MessageId"]))
            entries.append(entry)
            by_id[str(i)] = m
        try:
            ok, failed = await self.sqs.send_batch(target_url, entries)
        except OpsError as exc:
            # Outcome unknown (a timeout may come after SQS accepted the batch): keep them in
            # the DLQ, report them as possible duplicates, and stop.
            result.duplicates_possible += [m["MessageId"] for m in messages]
            held += [m["ReceiptHandle"] for m in messages]
            result.notes.append(f"stopped: sending a batch to {queue_name(target_url)} failed ({exc}); those "
                                f"{len(messages)} message(s) stay in the DLQ and may also have reached the target")
            return False
        for i, error in failed.items():
            result.failed.append(RedriveFailure(message_id=by_id[i]["MessageId"], error=error))
            held.append(by_id[i]["ReceiptHandle"])
        sent = {i: by_id[i]["ReceiptHandle"] for i in ok}
        try:
            delete_failed = await self.sqs.delete_batch(url, sent)
        except OpsError as exc:
            # Sent but not deleted: still in the DLQ (released below), so a retry sends them
            # again (at-least-once). Stop here rather than pile up more duplicates.
            result.duplicates_possible += [by_id[i]["MessageId"] for i in ok]
            held += list(sent.values())
            result.notes.append(f"stopped: deleting sent messages from the DLQ failed ({exc}); they are in both "
                                "queues now and a retry sends them again")
            return False
        for i in ok:
            if i in delete_failed:
                result.duplicates_possible.append(by_id[i]["MessageId"])
            else:
                result.moved += 1
        return True
