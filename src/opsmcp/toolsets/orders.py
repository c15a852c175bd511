"""Orders toolset: read orders from the DynamoDB orders table (hash key ``orderId``).

``find_orders`` uses the table's GSIs (status, customer; range key ``orderDate``) with
Query, never Scan, so it stays cheap on a large table. When the configured index names do
not exist, the indexes are found from DescribeTable by their key attributes, and the
result's notes say which one was used. Output fields are snake_case.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.backends.dynamodb import DynamoBackend
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound
from opsmcp.results import OutsideText, Result, clamp, untrusted
from opsmcp.times import iso, parse_window
from opsmcp.toolsets.base import tool

#: Stored attribute -> OrderSummary field.
ORDER_FIELDS = {"orderId": "order_id", "orderNumber": "order_number", "orderDate": "order_date", "status": "status",
                "customerId": "customer_id", "total": "total", "currency": "currency", "traceId": "trace_id"}
RANGE_KEY = "orderDate"
MAX_ID = 200
MAX_TEXT = 100
MAX_TIME = 64
MAX_CURSOR = 2048


class Order(OutsideText):
    """Result of get_order: the whole order item as stored."""

    untrusted: list[str] = untrusted("order")

    order_id: str = Field(description="The order's id (the table's hash key orderId).")
    order: dict[str, Any] = Field(description="The whole item as stored (attribute names as in the table).")


class OrderSummary(BaseModel):
    """The headline fields of one order."""

    order_id: str = Field(description="orderId, the table's hash key; pass to get_order.")
    order_number: str | None = Field(None, description="Human-facing order number.")
    order_date: str | None = Field(None, description="orderDate, ISO-8601 (the indexes' range key).")
    status: str | None = Field(None, description="Order status, e.g. PENDING, PAID, SHIPPED.")
    customer_id: str | None = Field(None, description="Customer id.")
    total: float | None = Field(None, description="Order total in `currency`.")
    currency: str | None = Field(None, description="ISO 4217 currency code.")
    trace_id: str | None = Field(None, description="Trace id of the order's processing; pass to get_trace.")
    items: int = Field(0, description="Number of order positions.")


class OrderList(Result):
    """Result of find_orders, newest first."""

    orders: list[OrderSummary] = Field(description="Matching orders, newest orderDate first.")
    count: int = Field(description="Orders in this page.")
    index: str = Field(description="The GSI that was queried.")


def _summary(item: dict[str, Any]) -> OrderSummary:
    data: dict[str, Any] = {field: item[k] for k, field in ORDER_FIELDS.items() if item.get(k) is not None}
    for field in ("order_id", "order_number", "status", "customer_id", "order_date", "trace_id", "currency"):
        if field in data:
            data[field] = str(data[field])
    return OrderSummary(**data, items=len(item.get("positions", []) or []))


class OrderTools:
    """Order lookups against the configured table and indexes.

    Args:
        settings: ``orders_table``, ``orders_status_index``, ``orders_customer_index``.
        ddb: the DynamoDB adapter.
    """

    def __init__(self, settings: Settings, ddb: DynamoBackend) -> None:
        self.settings = settings
        self.ddb = ddb
        self._resolved: dict[tuple[str, str, str], tuple[str, str | None]] = {}

    async def _index(self, attribute: str, configured: str, setting: str) -> tuple[str, str | None]:
        """The GSI to query by ``attribute``: ``configured`` when the table has it, else the one
        DescribeTable shows with hash key ``attribute`` and range key orderDate. Returns
        ``(index name, note or None)``; cached per table.

        Raises:
            NotFound: no such index (the message lists the table's indexes).
        """
        table = self.settings.orders_table
        key = (table, attribute, configured)
        if key not in self._resolved:
            found = await self.ddb.indexes(table)
            if configured in found:
                self._resolved[key] = (configured, None)
            else:
                fits = sorted(n for n, (h, r) in found.items() if h == attribute and r == RANGE_KEY)
                if not fits:
                    have = ", ".join(f"{n} ({h}/{r})" for n, (h, r) in sorted(found.items())) or "none"
                    raise NotFound(f"Table {table} has no index {configured!r} and no GSI with hash key {attribute} "
                                   f"and range key {RANGE_KEY} (its GSIs: {have}).",
                                   f"create that GSI, or set {setting} to an existing index.")
                self._resolved[key] = (fits[0], f"index {configured!r} does not exist on {table}; used {fits[0]!r} "
                                                f"(hash key {attribute}, range key {RANGE_KEY}) found by DescribeTable")
        return self._resolved[key]

    @tool(title="Get one order", read_only=True, idempotent=True)
    async def get_order(
        self,
        order_id: Annotated[str, Field(description="orderId, e.g. a UUID from a DLQ message.",
                                       min_length=1, max_length=MAX_ID)],
    ) -> Order:
        """One order by orderId: status, customer, positions, traceId. A missing order is a
        tool error; find_orders searches by status or customer."""
        item = await self.ddb.get(self.settings.orders_table, {"orderId": order_id.strip()})
        if item is None:
            raise NotFound(f"No order with orderId {order_id!r} in table {self.settings.orders_table}.",
                           "check the id (analyze_dlq lists order ids), or use find_orders by status or customer_id.")
        return Order(order_id=order_id.strip(), order=item)

    @tool(title="Find orders by status or customer", read_only=True, idempotent=True)
    async def find_orders(
        self,
        status: Annotated[str | None, Field(description="Order status, e.g. PENDING, PAYMENT_PENDING, SHIPPED.",
                                            max_length=MAX_TEXT)] = None,
        customer_id: Annotated[str | None, Field(description="Customer id, e.g. 'cust-0007'.",
                                                 max_length=MAX_ID)] = None,
        since: Annotated[str | None, Field(description="orderDate from: ISO-8601 or relative ('-6h'); default: "
                                           "no lower bound.", max_length=MAX_TIME)] = None,
        until: Annotated[str | None, Field(description="orderDate until; default: now.",
                                           max_length=MAX_TIME)] = None,
        limit: Annotated[int, Field(description="Most orders, 1-500.")] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page.",
                                            max_length=MAX_CURSOR)] = None,
    ) -> OrderList:
        """Find orders by status and/or customer_id (at least one) in an orderDate window,
        newest first, by querying the table's GSIs (never a Scan)."""
        if not status and not customer_id:
            raise InvalidInput("find_orders needs status or customer_id (it queries an index by that key).",
                               "pass status='PENDING' (or another status) or customer_id='cust-0001'.")
        start, end, notes = parse_window(since, until, default_start="1970-01-01T00:00:00Z",
                                         names=("since", "until"))
        limit = clamp("limit", limit, 1, 500, notes)
        names = {"#d": "orderDate"}
        values: dict[str, Any] = {":a": iso(start), ":b": iso(end)}
        filter_expression = None
        if customer_id:
            index, note = await self._index("customerId", self.settings.orders_customer_index,
                                            "OPSMCP_ORDERS_CUSTOMER_INDEX")
            names["#k"] = "customerId"
            values[":k"] = customer_id.strip()
            if status:
                names["#s"] = "status"
                values[":s"] = status.strip().upper()
                filter_expression = "#s = :s"
        else:
            index, note = await self._index("status", self.settings.orders_status_index, "OPSMCP_ORDERS_STATUS_INDEX")
            names["#k"] = "status"
            values[":k"] = str(status).strip().upper()
        start_key = None
        if cursor:
            try:
                start_key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            except ValueError:
                start_key = None
            if not isinstance(start_key, dict) or not all(isinstance(v, str) for v in start_key.values()):
                raise InvalidInput("cursor is not one this tool returned.", "omit cursor to start over.")
        if note:
            notes.append(note)
        found: list[dict[str, Any]] = []
        last = start_key
        # A filter can make a page short: keep reading pages until the limit is met (bounded).
        for _ in range(20):
            items, last = await self.ddb.query(
                self.settings.orders_table, index, "#k = :k AND #d BETWEEN :a AND :b", values, names,
                filter_expression=filter_expression,
                limit=min(1000, limit - len(found) if not filter_expression else 1000),
                start_key=last,
            )
            found += items
            if len(found) >= limit or not last:
                break
        if len(found) > limit:
            found = found[:limit]
            tail = found[-1]
            last = {k: tail[k] for k in ("orderId", "orderDate", names["#k"]) if k in tail}
        next_cursor = base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None
        if not found:
            notes.append("no orders matched; statuses are upper case (PENDING, PAID, SHIPPED, ...)")
        return OrderList(orders=[_summary(i) for i in found], count=len(found), index=index,
                         truncated=bool(next_cursor), next_cursor=next_cursor, notes=notes)
