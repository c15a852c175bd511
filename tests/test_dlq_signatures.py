"""The failure-signature grouping alone: no SQS, no server, received-message dicts in boto3's shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opsmcp.analysis.dlq_signatures import MessageFacts, group, normalize, signatures
from opsmcp.errors import BackendUnavailable

pytestmark = pytest.mark.anyio


def msg(i: int, body: Any, attrs: dict[str, str] | None = None, sent: int = 1_700_000_000_000) -> dict[str, Any]:
    return {"MessageId": f"m{i}", "Body": body if isinstance(body, str) else json.dumps(body),
            "Attributes": {"SentTimestamp": str(sent + i)},
            "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in (attrs or {}).items()}}


def test_normalize_collapses_ids_and_numbers():
    a = normalize("timeout after 3000 ms for order 123e4567-e89b-12d3-a456-426614174000")
    b = normalize("timeout after 2500 ms for order 00000000-0000-0000-0000-000000000001")
    assert a == b == "timeout after <n> ms for order <id>"


async def test_signature_preference_attributes_then_logs_then_type():
    messages = [
        msg(1, {"traceId": "t1", "orderId": "o1"}, {"ErrorCode": "Timeout", "ErrorMessage": "gateway 504 after 30s"}),
        msg(2, {"traceId": "t2", "orderId": "o2", "type": "OrderCreated"}),
        msg(3, {"traceId": "t3", "type": "OrderCreated"}),
        msg(4, "not json"),
    ]
    asked: list[list[str]] = []

    async def correlate(trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        asked.append(trace_ids)
        return {"t2": [{"service": "orders", "message": "DB timeout after 5000 ms", "timestamp": "x"},
                       {"service": "orders", "message": "moving message to DLQ", "timestamp": "y"}]}

    facts = [MessageFacts(m) for m in messages]
    sigs = await signatures(facts, correlate)
    assert asked == [["t2", "t3"]]  # one question, only for messages without error attributes
    assert sigs["m1"].text == "Timeout: gateway <n> after <n>s" and sigs["m1"].basis == "error_attributes"
    assert sigs["m2"].text == "orders: DB timeout after <n> ms" and sigs["m2"].basis == "logs"  # bookkeeping skipped
    assert sigs["m3"].text == "type=OrderCreated" and sigs["m4"].basis == "unparseable"
    groups = group(facts, sigs)
    assert [g.count for g in groups] == [1, 1, 1, 1] and {g.basis for g in groups} == {
        "error_attributes", "logs", "message_type", "unparseable"}
    assert next(g for g in groups if g.basis == "error_attributes").order_ids == ["o1"]


async def test_a_failing_correlator_falls_back_to_the_type():
    async def down(trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        raise BackendUnavailable("log store is down")

    facts = [MessageFacts(msg(i, {"traceId": f"t{i}", "type": "PaymentRequested"})) for i in range(3)]
    groups = group(facts, await signatures(facts, down))
    assert len(groups) == 1 and groups[0].count == 3 and groups[0].signature == "type=PaymentRequested"
    assert groups[0].first_sent == "2023-11-14T22:13:20.000Z" and groups[0].last_sent == "2023-11-14T22:13:20.002Z"
