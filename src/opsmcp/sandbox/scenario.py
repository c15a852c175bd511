"""The sandbox's order-processing incident: one deterministic story, told by every data source.

Nothing here talks to AWS. :func:`build_scenario` returns plain data (queues, DLQ
messages, orders, traces, log lines, metric series) from a fixed seed; the seeders in
:mod:`opsmcp.sandbox.seed` write it to SQS, DynamoDB, the log store and CloudWatch.
Times are relative to ``now`` so the incident is always "the last few hours"; every id
(order, trace, event, customer) depends only on the seed.

The story (``INCIDENT_MINUTES_AGO`` minutes ago the incident began):

* order-processor loses its database: ``ORDER_CREATED`` events time out on the DB write
  and land in ``order-queue-dlq`` (trace id in the body only, as in the ops_agent data);
  a smaller group fails validation earlier (an unknown SKU) and lands there too;
* payment-service's gateway starts timing out: ``PAYMENT_REQUESTED`` events land in the
  FIFO ``payment-queue-dlq.fifo`` with the ``ErrorCode``/``ErrorMessage`` attributes a
  Lambda/SNS dead letter carries; a few are plain card declines;
* order-cancellation rejects cancellations of orders that already shipped
  (``order-cancellation-queue-dlq``);
* one poison message (not JSON) sits in ``order-queue-dlq``.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC
from typing import Any
from collections.abc import Iterator

from opsmcp.times import iso

SEED = 20231027
INCIDENT_MINUTES_AGO = 95
HISTORY_HOURS = 6
MAX_RECEIVE_COUNT = 3

SERVICES = ("api-gateway", "order-processor", "payment-service", "inventory-service",
            "order-cancellation", "notification-service")
PRODUCTS = (("Premium Widget", 49.90), ("Basic Widget", 9.90), ("Deluxe Package", 129.00),
            ("Ultimate Bundle", 249.00), ("Complete Set", 89.50), ("Mega Pack", 19.99),
            ("Starter Kit", 34.00), ("Refill Pack", 12.50))
GATEWAY_HOST = "gw.paynet.internal"


#: One CloudWatch series: (namespace, metric name, dimensions, unit, [(time, value)]).
Series = tuple[str, str, dict[str, str], str, list[tuple[datetime, float]]]


@dataclass(frozen=True)
class QueueSpec:
    """A source queue and its DLQ (created with RedrivePolicy maxReceiveCount 3)."""

    name: str
    dlq: str | None
    fifo: bool = False


@dataclass
class DeadLetter:
    """One message to put in a DLQ: body text, SQS message attributes, FIFO group id."""

    queue: str
    body: str
    attributes: dict[str, dict[str, str]] = field(default_factory=dict)
    group_id: str | None = None
    cause: str = ""  # which failure story this message belongs to (for tests)
    order_id: str | None = None
    trace_id: str | None = None


@dataclass
class LogLine:
    """One application log line (the shape `opsmcp logs load` ingests)."""

    timestamp: datetime
    service: str
    level: str
    message: str
    trace_id: str | None = None
    event_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """JSON Lines form: ``@timestamp`` ISO-8601 UTC with milliseconds, fields flat."""
        doc: dict[str, Any] = {
            "@timestamp": iso(self.timestamp),
            "level": self.level,
            "service": self.service,
            "message": self.message,
        }
        if self.trace_id:
            doc["trace_id"] = self.trace_id
        if self.event_id:
            doc["event_id"] = self.event_id
        doc.update(self.extra)
        return json.dumps(doc, separators=(",", ":"))


@dataclass
class Scenario:
    """Everything the sandbox seeds, all derived from ``SEED`` and ``now``."""

    now: datetime
    queues: list[QueueSpec]
    dead_letters: list[DeadLetter]
    backlog: dict[str, list[str]]  # queue name -> bodies waiting in the source queue
    orders: list[dict[str, Any]]
    incident_start: datetime
    failing_traces: dict[str, list[LogLine]]  # trace id -> that trace's lines

    def log_lines(self, target: int = 12_000) -> Iterator[LogLine]:
        """Yield ~``target`` log lines over the last ``HISTORY_HOURS`` hours, oldest first.

        The failing traces (same trace ids as the DLQ messages) are mixed into normal
        background traffic from every service: order flows, health checks, cache stats,
        slow-query warnings that grow once the incident starts.
        """
        rng = random.Random(SEED + 1)
        start = self.now - timedelta(hours=HISTORY_HOURS)
        lines: list[LogLine] = [line for trace in self.failing_traces.values() for line in trace]
        span = (self.now - start).total_seconds()
        while len(lines) < target:
            t = start + timedelta(seconds=rng.uniform(0, span - 5))
            trace = _uuid(rng)
            event = _uuid(rng)
            order = _uuid(rng)
            in_incident = t >= self.incident_start
            flow = rng.random()
            if flow < 0.55:
                ms = rng.randint(20, 180) if not in_incident else rng.randint(300, 4800)
                lines += [
                    LogLine(t, "api-gateway", "INFO", f"POST /orders 201 {ms}ms", trace, None,
                            {"http.status": 201, "duration_ms": ms}),
                    LogLine(t + timedelta(milliseconds=40), "order-processor", "INFO",
                            "Received ORDER_CREATED event", trace, event),
                    LogLine(t + timedelta(milliseconds=90), "order-processor", "INFO",
                            f"Processing order {order}", trace, event, {"order_id": order}),
                    LogLine(t + timedelta(milliseconds=400), "inventory-service", "INFO",
                            f"Reserved stock for order {order}", trace, event, {"order_id": order}),
                    LogLine(t + timedelta(milliseconds=900), "payment-service", "INFO",
                            f"Payment authorised for order {order}", trace, event, {"order_id": order}),
                    LogLine(t + timedelta(milliseconds=1300), "notification-service", "INFO",
                            f"Sent confirmation email for order {order}", trace, event, {"order_id": order}),
                ]
            elif flow < 0.75:
                svc = rng.choice(SERVICES)
                lines.append(LogLine(t, svc, "DEBUG", f"GET /healthz 200 {rng.randint(1, 4)}ms"))
            elif flow < 0.85:
                svc = rng.choice(SERVICES)
                lines.append(LogLine(t, svc, "INFO",
                                     f"cache stats hits={rng.randint(900, 5000)} misses={rng.randint(5, 300)}"))
            elif flow < 0.93:
                ms = rng.randint(250, 900) if not in_incident else rng.randint(2500, 9000)
                lines.append(LogLine(t, "order-processor", "WARN",
                                     f"Slow query on orders table took {ms}ms", trace, None, {"duration_ms": ms}))
            else:
                lines.append(LogLine(t, "inventory-service", "INFO",
                                     f"Stock level for SKU-{rng.randint(1000, 1099)} is {rng.randint(0, 500)}"))
        lines.sort(key=lambda line: line.timestamp)
        yield from lines

    def metric_series(self, period_seconds: int = 60) -> list[Series]:
        """CloudWatch series for the last ``HISTORY_HOURS`` hours, one point a period.

        Returns ``(namespace, metric name, dimensions, unit, [(time, value)])`` tuples:
        SQS visible messages and age of oldest message per queue (the DLQs grow from the
        incident on), and per service an error count and a p95 latency in milliseconds
        that jump at the incident start.
        """
        rng = random.Random(SEED + 2)
        start = self.now - timedelta(hours=HISTORY_HOURS)
        steps = int(HISTORY_HOURS * 3600 // period_seconds)
        times = [start + timedelta(seconds=i * period_seconds) for i in range(steps)]
        series = []
        dlq_final: dict[str, int] = {}
        for letter in self.dead_letters:
            dlq_final[letter.queue] = dlq_final.get(letter.queue, 0) + 1
        for q in self.queues:
            for name in [q.name] + ([q.dlq] if q.dlq else []):
                final = dlq_final.get(name, 0) if name != q.name else len(self.backlog.get(name, []))
                depth, age = [], []
                for t in times:
                    frac = max(0.0, (t - self.incident_start).total_seconds()) / max(
                        1.0, (self.now - self.incident_start).total_seconds())
                    if name == q.name:
                        base = rng.randint(0, 4)
                        depth.append((t, float(base + round(final * frac))))
                        age.append((t, float(rng.randint(1, 20) + (900 * frac if final else 0))))
                    else:
                        depth.append((t, float(round(final * min(1.0, frac)))))
                        age.append((t, float((t - self.incident_start).total_seconds()) if frac > 0 else 0.0))
                dims = {"QueueName": name}
                series.append(("AWS/SQS", "ApproximateNumberOfMessagesVisible", dims, "Count", depth))
                series.append(("AWS/SQS", "ApproximateAgeOfOldestMessage", dims, "Seconds", age))
        for svc in SERVICES:
            hit = svc in ("order-processor", "payment-service", "api-gateway")
            errors, p95 = [], []
            for t in times:
                bad = hit and t >= self.incident_start
                errors.append((t, float(rng.randint(0, 2) + (rng.randint(6, 18) if bad else 0))))
                p95.append((t, float(rng.randint(80, 160) + (rng.randint(2500, 5200) if bad else 0))))
            dims = {"Service": svc}
            series.append(("OpsMCP/Services", "ErrorCount", dims, "Count", errors))
            series.append(("OpsMCP/Services", "LatencyP95", dims, "Milliseconds", p95))
        return series


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def build_scenario(now: datetime | None = None, orders: int = 240) -> Scenario:
    """Build the incident scenario anchored at ``now`` (UTC; default: the current time).

    Args:
        now: the scenario's present; every timestamp is at most ``HISTORY_HOURS`` before it.
        orders: how many orders the ``orders`` table gets (at least 100).

    Deterministic: the same ``now`` gives byte-identical data.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    rng = random.Random(SEED)
    incident_start = now - timedelta(minutes=INCIDENT_MINUTES_AGO)
    queues = [
        QueueSpec("order-queue", "order-queue-dlq"),
        QueueSpec("payment-queue.fifo", "payment-queue-dlq.fifo", fifo=True),
        QueueSpec("order-cancellation-queue", "order-cancellation-queue-dlq"),
        QueueSpec("notification-queue", None),
    ]
    customers = [f"cust-{i:04d}" for i in range(1, 41)]
    order_list: list[dict[str, Any]] = []
    for i in range(orders):
        created = now - timedelta(seconds=rng.randint(60, HISTORY_HOURS * 3600 * 4))
        positions = []
        total = 0.0
        for _ in range(rng.randint(1, 3)):
            name, price = rng.choice(PRODUCTS)
            qty = rng.randint(1, 4)
            total += price * qty
            positions.append({
                "id": _uuid(rng),
                "product": {"id": _uuid(rng), "name": name, "sku": f"SKU-{rng.randint(1000, 1099)}"},
                "quantity": qty,
                "orderPositionItems": [{"id": _uuid(rng), "status": "CREATED"}],
            })
        order_list.append({
            "orderId": _uuid(rng),
            "orderNumber": str(5814200 + i),
            "orderDate": iso(created),
            "customerId": rng.choice(customers),
            "status": rng.choice(["DELIVERED", "DELIVERED", "SHIPPED", "PAID", "CANCELLED"]),
            "total": round(total, 2),
            "currency": "EUR",
            "traceId": _uuid(rng),
            "positions": positions,
        })
    order_list.sort(key=lambda o: o["orderDate"])

    picked: set[str] = set()

    def recent(count: int, status: str) -> list[dict[str, Any]]:
        """Pick ``count`` not yet used orders from the incident window and set their status."""
        pool = [o for o in order_list if o["orderDate"] >= iso(incident_start) and o["orderId"] not in picked]
        picks = rng.sample(pool, count)
        for o in picks:
            o["status"] = status
            picked.add(o["orderId"])
        return picks

    # Incident orders get fresh dates inside the incident window so the story lines up.
    for o in order_list[-120:]:
        o["orderDate"] = iso(incident_start + timedelta(seconds=rng.randint(0, INCIDENT_MINUTES_AGO * 60 - 30)))
    order_list.sort(key=lambda o: o["orderDate"])

    letters: list[DeadLetter] = []
    traces: dict[str, list[LogLine]] = {}

    def event(o: dict[str, Any], kind: str, data: dict[str, Any]) -> tuple[str, str, datetime]:
        t = datetime.fromisoformat(o["orderDate"].replace("Z", "+00:00"))
        body = {"traceId": o["traceId"], "eventId": _uuid(rng), "eventTime": iso(t), "type": kind,
                "originEventTime": iso(t), "version": "0.1.0", "data": data}
        return json.dumps(body), body["eventId"], t

    def story(trace: str, ev: str, t: datetime, steps: list[tuple[int, str, str, str]]) -> None:
        traces[trace] = [LogLine(t + timedelta(seconds=dt), svc, lvl, msg, trace, ev) for dt, svc, lvl, msg in steps]

    def created_data(o: dict[str, Any]) -> dict[str, Any]:
        return {"orderId": o["orderId"], "orderDate": o["orderDate"], "orderNumber": o["orderNumber"],
                "customerId": o["customerId"], "positions": o["positions"]}

    # 1. order-processor: database timeouts during the incident.
    for o in recent(18, "PENDING"):
        body, ev, t = event(o, "ORDER_CREATED", created_data(o))
        oid = o["orderId"]
        story(o["traceId"], ev, t, [
            (0, "order-processor", "INFO", "Received ORDER_CREATED event"),
            (1, "order-processor", "INFO", f"Processing order {oid}"),
            (6, "order-processor", "ERROR", "Database connection timeout after 5000ms (orders-db.cluster:5432)"),
            (8, "order-processor", "WARN", f"Retry 1 - Processing order {oid}"),
            (14, "order-processor", "ERROR", "Database connection timeout after 5000ms (orders-db.cluster:5432)"),
            (16, "order-processor", "WARN", f"Retry 2 - Processing order {oid}"),
            (22, "order-processor", "ERROR", "Database connection timeout after 5000ms (orders-db.cluster:5432)"),
            (23, "order-processor", "ERROR", "Max retries exceeded - Moving message to DLQ"),
        ])
        letters.append(DeadLetter("order-queue-dlq", body, cause="db-timeout", order_id=oid, trace_id=o["traceId"]))
    # 2. order-processor: validation failures (an unknown SKU), before and during the incident.
    for o in recent(9, "FAILED"):
        bad_sku = f"SKU-{rng.randint(9000, 9099)}"
        o["positions"][0]["product"]["sku"] = bad_sku
        body, ev, t = event(o, "ORDER_CREATED", created_data(o))
        oid = o["orderId"]
        story(o["traceId"], ev, t, [
            (0, "order-processor", "INFO", "Received ORDER_CREATED event"),
            (1, "order-processor", "INFO", f"Processing order {oid}"),
            (2, "inventory-service", "WARN", f"Unknown SKU {bad_sku} requested"),
            (2, "order-processor", "ERROR",
             f"Failed to validate order data: Invalid product configuration (unknown SKU {bad_sku})"),
            (3, "order-processor", "ERROR", "Validation failed - Moving message to DLQ"),
        ])
        letters.append(DeadLetter("order-queue-dlq", body, cause="validation", order_id=oid, trace_id=o["traceId"]))
    # 3. payment-service: gateway timeouts (Lambda-style error attributes) and card declines.
    for cause, count, code, message in (
        ("gateway-timeout", 14, "GatewayTimeout", f"Payment gateway {GATEWAY_HOST} did not respond within 5000 ms"),
        ("card-declined", 5, "CardDeclined", "Card declined by issuer: insufficient funds"),
    ):
        for o in recent(count, "PAYMENT_PENDING"):
            body, ev, t = event(o, "PAYMENT_REQUESTED", {
                "orderId": o["orderId"], "customerId": o["customerId"], "amount": o["total"], "currency": "EUR"})
            request_id = _uuid(rng)
            story(o["traceId"], ev, t, [
                (0, "payment-service", "INFO", f"Authorising payment of {o['total']} EUR for order {o['orderId']}"),
                (5, "payment-service", "ERROR", message),
                (6, "payment-service", "ERROR", f"Payment failed for order {o['orderId']} - Moving message to DLQ"),
            ])
            letters.append(DeadLetter(
                "payment-queue-dlq.fifo", body,
                attributes={
                    "RequestID": {"DataType": "String", "StringValue": request_id},
                    "ErrorCode": {"DataType": "String", "StringValue": code},
                    "ErrorMessage": {"DataType": "String", "StringValue": message},
                },
                group_id=o["orderId"], cause=cause, order_id=o["orderId"], trace_id=o["traceId"]))
    # 4. order-cancellation: cancelling orders that already shipped.
    for o in recent(8, "SHIPPED"):
        body, ev, t = event(o, "ORDER_CANCELLED", {
            "orderId": o["orderId"], "orderNumber": o["orderNumber"],
            "cancellationReason": rng.choice(["CUSTOMER_REQUEST", "DUPLICATE_ORDER"])})
        story(o["traceId"], ev, t, [
            (0, "order-cancellation", "INFO", "Received ORDER_CANCELLED event"),
            (1, "order-cancellation", "ERROR", f"Cannot cancel order {o['orderId']}: order already shipped"),
            (2, "order-cancellation", "ERROR", "Cancellation rejected - Moving message to DLQ"),
        ])
        letters.append(DeadLetter("order-cancellation-queue-dlq", body, cause="already-shipped",
                                  order_id=o["orderId"], trace_id=o["traceId"]))
    # 5. one poison message a producer truncated.
    truncated = '{"traceId": "' + _uuid(rng) + '", "type": "ORDER_CREATED", "data": {"orderId"'
    letters.append(DeadLetter("order-queue-dlq", truncated, cause="poison"))

    backlog = {
        "order-queue": [json.dumps({"type": "ORDER_CREATED", "traceId": _uuid(rng), "data": {"orderId": _uuid(rng)}})
                        for _ in range(35)],
        "notification-queue": [
            json.dumps({"type": "EMAIL_REQUESTED", "traceId": _uuid(rng), "template": "order-confirmation"})
            for _ in range(12)
        ],
    }
    return Scenario(now=now, queues=queues, dead_letters=letters, backlog=backlog, orders=order_list,
                    incident_start=incident_start, failing_traces=traces)
