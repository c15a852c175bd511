"""DLQ failure signatures: what each dead letter says about why it failed, and groups of them.

A signature is a short, stable text naming one failure, so that a DLQ of thousands of
messages reads as a handful of causes and ``redrive_dlq(signature=...)`` can move one of
them. It is taken, in this order of preference, from:

1. the message attributes ``ErrorCode`` / ``ErrorMessage`` (basis ``error_attributes``);
2. the last ERROR log line of the message's trace that is not DLQ bookkeeping ("moving
   to DLQ", "max retries exceeded"), through a ``correlate`` callable (basis ``logs``);
3. the message type found in a JSON body (basis ``message_type``), or ``unparseable``.

Ids and numbers are collapsed (:func:`normalize`), so messages of one failure share a
signature, and a signature is at most :data:`MAX_SIGNATURE_CHARS` long (``redrive_dlq``
takes it back as an argument). :func:`collect` keeps every id of a group; :meth:`SignatureGroup.page`
shows one page of them with its total and a cursor for the rest. Nothing here talks to
SQS: it works on received message dicts (boto3's shape).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from opsmcp.errors import OpsError
from opsmcp.times import ms_iso

#: ``async (trace_ids) -> {trace_id: [error line dicts, oldest first]}``; each line dict has
#: at least ``service``, ``message`` and ``timestamp``.
Correlator = Callable[[list[str]], Awaitable[dict[str, list[dict[str, Any]]]]]

MAX_SAMPLE_IDS = 5  # message ids a group shows on the first page
MAX_IDS_PER_GROUP = 25  # order ids and trace ids a group shows on the first page
PAGE_IDS = 100  # ids of each kind on a follow-up page (a group's ids_cursor)
MAX_SIGNATURE_CHARS = 500  # a signature is an argument of redrive_dlq (at most 1,000 characters)
MAX_ERROR_CHARS = 1000  # a group's concrete error message

_UUID = re.compile(r"\b[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}\b", re.I)
_HEX = re.compile(r"\b[0-9a-f]{12,}\b", re.I)
_NUM = re.compile(r"\d+(?:\.\d+)?")
_DLQ_BOOKKEEPING = re.compile(r"(moving .*\bdlq\b|to (the )?dlq|max(imum)? retries exceeded|dead[- ]letter)", re.I)
_TRACE_KEYS = ("traceId", "trace_id", "traceID", "TraceId", "x-trace-id", "X-Amzn-Trace-Id")
_ORDER_KEYS = ("orderId", "order_id", "OrderId")
_TYPE_KEYS = ("type", "eventType", "event", "detail-type", "eventName")


def normalize(text: str) -> str:
    """Collapse UUIDs, long hex ids and numbers in ``text`` so messages of one failure share a signature."""
    text = _UUID.sub("<id>", text)
    text = _HEX.sub("<id>", text)
    return _NUM.sub("<n>", text).strip()


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def iso_ms(ms: str | None) -> str | None:
    """An SQS epoch-milliseconds timestamp (``SentTimestamp``) as ISO-8601 UTC, or None."""
    return ms_iso(int(ms)) if ms else None


def find_key(doc: Any, keys: tuple[str, ...], depth: int = 0) -> str | None:
    """First non-empty string value under any of ``keys`` in ``doc`` (nested dicts, 3 deep)."""
    if not isinstance(doc, dict) or depth > 3:
        return None
    for key in keys:
        value = doc.get(key)
        if isinstance(value, str) and value:
            return value
    for value in doc.values():
        if isinstance(value, dict):
            found = find_key(value, keys, depth + 1)
            if found:
                return found
    return None


def flat_attributes(message: dict[str, Any]) -> dict[str, str]:
    """A received message's attributes flattened to ``{name: value}`` (binary values base64)."""
    out = {}
    for name, attr in (message.get("MessageAttributes") or {}).items():
        if "StringValue" in attr:
            out[name] = attr["StringValue"]
        elif "BinaryValue" in attr:
            out[name] = base64.b64encode(attr["BinaryValue"]).decode()
    return out


class MessageFacts:
    """What the analyser extracts from one received message (boto3 ``ReceiveMessage`` shape)."""

    __slots__ = ("attrs", "body", "event_time", "is_json", "message", "order_id", "sent", "trace_id")

    def __init__(self, message: dict[str, Any]) -> None:
        self.message = message
        raw = message.get("Body", "")
        try:
            self.body: Any = json.loads(raw)
            self.is_json = True
        except ValueError:
            self.body, self.is_json = raw, False
        self.attrs = flat_attributes(message)
        self.trace_id = find_key(self.body, _TRACE_KEYS) if self.is_json else None
        if not self.trace_id:
            self.trace_id = next((v for k, v in self.attrs.items() if "trace" in k.lower()), None)
        self.order_id = find_key(self.body, _ORDER_KEYS) if self.is_json else None
        self.sent = message.get("Attributes", {}).get("SentTimestamp")
        self.event_time = find_key(self.body, ("eventTime", "timestamp", "@timestamp")) if self.is_json else None

    @property
    def id(self) -> str:
        """The SQS message id."""
        return str(self.message["MessageId"])

    @property
    def has_error_attributes(self) -> bool:
        """True when the producer attached ``ErrorCode`` or ``ErrorMessage``."""
        return "ErrorCode" in self.attrs or "ErrorMessage" in self.attrs


class Signature(NamedTuple):
    """One message's failure signature and where it came from."""

    text: str
    basis: str
    service: str | None
    error_message: str | None


async def signatures(facts: list[MessageFacts], correlate: Correlator | None) -> dict[str, Signature]:
    """Map each message id in ``facts`` to its :class:`Signature`.

    ``correlate`` is asked once, for the trace ids of messages without error attributes;
    when it is None or fails (an :class:`OpsError`), those messages fall back to their type.
    """
    need_logs = sorted({f.trace_id for f in facts if f.trace_id and not f.has_error_attributes})
    errors: dict[str, list[dict[str, Any]]] = {}
    if need_logs and correlate is not None:
        try:
            errors = await correlate(need_logs)
        except OpsError:
            errors = {}
    out = {}
    for f in facts:
        if f.has_error_attributes:
            code = f.attrs.get("ErrorCode", "error")
            message = f.attrs.get("ErrorMessage", "")
            out[f.id] = Signature(_cap(f"{code}: {normalize(message)}".strip(": "), MAX_SIGNATURE_CHARS),
                                  "error_attributes", None, _cap(message, MAX_ERROR_CHARS) or None)
            continue
        lines = errors.get(f.trace_id or "", [])
        if lines:
            explaining = [line for line in lines if not _DLQ_BOOKKEEPING.search(str(line.get("message", "")))]
            line = (explaining or lines)[-1]
            service, message = line.get("service"), str(line.get("message", ""))
            out[f.id] = Signature(_cap(f"{service}: {normalize(message)}", MAX_SIGNATURE_CHARS), "logs", service,
                                  _cap(message, MAX_ERROR_CHARS))
        elif not f.is_json:
            out[f.id] = Signature("unparseable body (not JSON)", "unparseable", None, None)
        else:
            kind = find_key(f.body, _TYPE_KEYS) or "unknown type"
            out[f.id] = Signature(_cap(f"type={kind}", MAX_SIGNATURE_CHARS), "message_type", None, None)
    return out


class DlqGroup(BaseModel):
    """DLQ messages that share one failure signature (one page of its ids)."""

    signature: str = Field(description="Stable text naming the failure; pass to redrive_dlq(signature=...).")
    basis: str = Field(description="'error_attributes', 'logs', 'message_type' or 'unparseable'.")
    service: str | None = Field(None, description="Service whose error explains the failure (from logs).")
    error_message: str | None = Field(None, description="A concrete error message of this group.")
    count: int = Field(description="Messages read with this signature.")
    estimated_count: int = Field(description="count scaled to the whole queue when the read was a sample (see "
                                             "`sample`), else count.")
    first_sent: str | None = Field(None, description="Earliest SentTimestamp in the group, ISO-8601.")
    last_sent: str | None = Field(None, description="Latest SentTimestamp in the group, ISO-8601.")
    first_event_time: str | None = Field(None, description="Earliest event time found in bodies, if any.")
    sample_message_ids: list[str] = Field(description="SQS message ids of this group: 5 on the first page.")
    order_ids: list[str] = Field(description="Distinct order ids found in the bodies: 25 on the first page.")
    order_ids_total: int = Field(description="Distinct order ids among the messages read.")
    trace_ids: list[str] = Field(description="Distinct trace ids found in bodies or attributes: 25 on the first "
                                             "page.")
    trace_ids_total: int = Field(description="Distinct trace ids among the messages read.")
    ids_cursor: str | None = Field(None, description="Set when ids were left out: analyze_dlq(cursor=...) pages "
                                                     "them.")


@dataclass
class SignatureGroup:
    """Every message of one signature among those read: the whole lists, which
    :meth:`page` shows a page at a time."""

    signature: str
    basis: str
    service: str | None
    error_message: str | None
    message_ids: list[str] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)  # distinct, sorted
    trace_ids: list[str] = field(default_factory=list)  # distinct, sorted
    first_sent: str | None = None
    last_sent: str | None = None
    first_event_time: str | None = None

    @property
    def count(self) -> int:
        """Messages read with this signature."""
        return len(self.message_ids)

    def page(self, scale: float = 1.0, message_from: int = 0,
             id_from: int = 0) -> tuple[DlqGroup, tuple[int, int] | None]:
        """This group as a :class:`DlqGroup` showing the ids from the given offsets.

        Args:
            scale: queue size / messages read, for ``estimated_count`` (1.0: all were read).
            message_from / id_from: offsets into the message ids and into the order and
                trace ids (0, 0: the first page: 5 message ids, 25 of each other kind;
                else :data:`PAGE_IDS` of each).

        Returns ``(group, next offsets or None when nothing is left)``; the caller turns
        the offsets into the group's ``ids_cursor``.
        """
        first = message_from == 0 and id_from == 0
        m_end = message_from + (MAX_SAMPLE_IDS if first else PAGE_IDS)
        i_end = id_from + (MAX_IDS_PER_GROUP if first else PAGE_IDS)
        more = m_end < self.count or i_end < max(len(self.order_ids), len(self.trace_ids))
        shown = DlqGroup(
            signature=self.signature, basis=self.basis, service=self.service, error_message=self.error_message,
            count=self.count, estimated_count=max(self.count, round(self.count * scale)), first_sent=self.first_sent,
            last_sent=self.last_sent, first_event_time=self.first_event_time,
            sample_message_ids=self.message_ids[message_from:m_end], order_ids=self.order_ids[id_from:i_end],
            order_ids_total=len(self.order_ids), trace_ids=self.trace_ids[id_from:i_end],
            trace_ids_total=len(self.trace_ids))
        return shown, ((m_end, i_end) if more else None)


def collect(facts: list[MessageFacts], sigs: dict[str, Signature]) -> list[SignatureGroup]:
    """Group ``facts`` by signature (``sigs`` from :func:`signatures`), biggest group first,
    keeping every message, order and trace id (order and trace ids distinct and sorted, so
    pages stay stable when the same messages are read again)."""
    groups: dict[str, SignatureGroup] = {}
    orders: dict[str, set[str]] = {}
    traces: dict[str, set[str]] = {}
    for f in facts:
        sig = sigs[f.id]
        g = groups.get(sig.text)
        if g is None:
            g = groups[sig.text] = SignatureGroup(sig.text, sig.basis, sig.service, sig.error_message)
            orders[sig.text], traces[sig.text] = set(), set()
        g.message_ids.append(f.id)
        sent = iso_ms(f.sent)
        if sent:
            g.first_sent = min(g.first_sent or sent, sent)
            g.last_sent = max(g.last_sent or sent, sent)
        if f.event_time:
            g.first_event_time = min(g.first_event_time or f.event_time, f.event_time)
        if f.order_id:
            orders[sig.text].add(f.order_id)
        if f.trace_id:
            traces[sig.text].add(f.trace_id)
    for text, g in groups.items():
        g.order_ids, g.trace_ids = sorted(orders[text]), sorted(traces[text])
    return sorted(groups.values(), key=lambda g: (-g.count, g.signature))


def group(facts: list[MessageFacts], sigs: dict[str, Signature]) -> list[DlqGroup]:
    """The first page of every group of ``facts`` (see :func:`collect`), biggest group first."""
    return [g.page()[0] for g in collect(facts, sigs)]
