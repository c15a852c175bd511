"""DLQ failure signatures: what each dead letter says about why it failed, and groups of them.

A signature is a short, stable text naming one failure, so that a DLQ of thousands of
messages reads as a handful of causes and ``redrive_dlq(signature=...)`` can move one of
them. It is taken, in this order of preference, from:

1. the message attributes ``ErrorCode`` / ``ErrorMessage`` (basis ``error_attributes``);
2. the last ERROR log line of the message's trace that is not DLQ bookkeeping ("moving
   to DLQ", "max retries exceeded"), through a ``correlate`` callable (basis ``logs``);
3. the message type found in a JSON body (basis ``message_type``), or ``unparseable``.

Ids and numbers are collapsed (:func:`normalize`), so messages of one failure share a
signature. Nothing here talks to SQS: it works on received message dicts (boto3's shape).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from pydantic import BaseModel, Field

from opsmcp.errors import OpsError
from opsmcp.times import ms_iso

#: ``async (trace_ids) -> {trace_id: [error line dicts, oldest first]}``; each line dict has
#: at least ``service``, ``message`` and ``timestamp``.
Correlator = Callable[[list[str]], Awaitable[dict[str, list[dict[str, Any]]]]]

MAX_SAMPLE_IDS = 5
MAX_IDS_PER_GROUP = 25

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
            out[f.id] = Signature(f"{code}: {normalize(message)}".strip(": "), "error_attributes", None,
                                  message or None)
            continue
        lines = errors.get(f.trace_id or "", [])
        if lines:
            explaining = [line for line in lines if not _DLQ_BOOKKEEPING.search(str(line.get("message", "")))]
            line = (explaining or lines)[-1]
            service, message = line.get("service"), str(line.get("message", ""))
            out[f.id] = Signature(f"{service}: {normalize(message)}", "logs", service, message)
        elif not f.is_json:
            out[f.id] = Signature("unparseable body (not JSON)", "unparseable", None, None)
        else:
            kind = find_key(f.body, _TYPE_KEYS) or "unknown type"
            out[f.id] = Signature(f"type={kind}", "message_type", None, None)
    return out


class DlqGroup(BaseModel):
    """DLQ messages that share one failure signature."""

    signature: str = Field(description="Stable text naming the failure; pass to redrive_dlq(signature=...).")
    basis: str = Field(description="'error_attributes', 'logs', 'message_type' or 'unparseable'.")
    service: str | None = Field(None, description="Service whose error explains the failure (from logs).")
    error_message: str | None = Field(None, description="A concrete error message of this group.")
    count: int = Field(description="Messages read with this signature.")
    first_sent: str | None = Field(None, description="Earliest SentTimestamp in the group, ISO-8601.")
    last_sent: str | None = Field(None, description="Latest SentTimestamp in the group, ISO-8601.")
    first_event_time: str | None = Field(None, description="Earliest event time found in bodies, if any.")
    sample_message_ids: list[str] = Field(description="Up to 5 SQS message ids of this group.")
    order_ids: list[str] = Field(description="Up to 25 distinct order ids found in the bodies.")
    trace_ids: list[str] = Field(description="Up to 25 distinct trace ids found in bodies or attributes.")


def group(facts: list[MessageFacts], sigs: dict[str, Signature]) -> list[DlqGroup]:
    """Group ``facts`` by signature (``sigs`` from :func:`signatures`), biggest group first."""
    groups: dict[str, DlqGroup] = {}
    for f in facts:
        sig = sigs[f.id]
        g = groups.get(sig.text)
        if g is None:
            g = groups[sig.text] = DlqGroup(signature=sig.text, basis=sig.basis, service=sig.service,
                                            error_message=sig.error_message, count=0, sample_message_ids=[],
                                            order_ids=[], trace_ids=[])
        g.count += 1
        sent = iso_ms(f.sent)
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
