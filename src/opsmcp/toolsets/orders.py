"""Orders toolset: read orders from the DynamoDB orders table (hash key ``orderId``).

``find_orders`` uses the table's GSIs (status, customer; range key ``orderDate``) with
Query, never Scan, so it stays cheap on a large table.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from pydantic import BaseModel, Field

from opsmcp.backends.dynamodb import DynamoBackend
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound
from opsmcp.times import iso, parse_window
from opsmcp.toolsets.base import Result, tool

ORDER_FIELDS = ("orderId", "orderNumber", "orderDate", "status", "customerId", "total", "currency", "traceId")


class Order(Result):
    """Result of get_order: the whole order item as stored."""

    order_id: str
    order: dict[str, Any]


class OrderSummary(BaseModel):
    """The headline fields of one order."""

    orderId: str
    orderNumber: str | None = None
    orderDate: str | None = None
    status: str | None = None
    customerId: str | None = None
    total: float | None = None
    currency: str | None = None
    traceId: str | None = None
    items: int = Field(0, description="Number of order positions.")


class OrderList(Result):
    """Result of find_orders, newest first."""

    orders: list[OrderSummary]
    count: int
    index: str = Field(description="The GSI that was queried.")


def _summary(item: dict[str, Any]) -> OrderSummary:
    data = {k: item.get(k) for k in ORDER_FIELDS if item.get(k) is not None}
    for k in ("orderNumber", "status", "customerId", "orderDate", "traceId", "currency"):
        if k in data:
            data[k] = str(data[k])
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

    @tool(title="Get one order", read_only=True, idempotent=True)
    async def get_order(
        self,
        order_id: Annotated[str, Field(description="The order's orderId (e.g. a UUID from a DLQ message).", min_length=1, max_length=200)],
    ) -> Order:
        """Fetch one order by orderId from the orders table (strongly consistent read):
        status, customer, positions, traceId. A missing order is a tool error; use
        find_orders to search by status or customer."""
        item = await self.ddb.get(self.settings.orders_table, {"orderId": order_id.strip()})
        if item is None:
            raise NotFound(f"No order with orderId {order_id!r} in table {self.settings.orders_table}.",
                           "check the id (analyze_dlq lists order ids), or use find_orders by status or customer_id.")
        return Order(order_id=order_id.strip(), order=item)

    @tool(title="Find orders by status or customer", read_only=True, idempotent=True)
    async def find_orders(
        self,
        status: Annotated[str | None, Field(description="Order status, e.g. PENDING, PAYMENT_PENDING, SHIPPED.")] = None,
        customer_id: Annotated[str | None, Field(description="Customer id, e.g. 'cust-0007'.")] = None,
        since: Annotated[str | None, Field(description="Orders dated at/after this: ISO-8601 or relative ('-6h'). Default: no lower bound.")] = None,
        until: Annotated[str | None, Field(description="Orders dated at/before this: ISO-8601 or relative. Default: now.")] = None,
        limit: Annotated[int, Field(description="Max orders to return, 1-500.", ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Field(description="next_cursor from a previous call.")] = None,
    ) -> OrderList:
        """Find orders by status and/or customer_id within an orderDate window, newest first,
        through the table's GSIs (Query, not Scan). At least one of status or customer_id is
        required. Bounded by `limit`; pass next_cursor back as `cursor` for more."""
        if not status and not customer_id:
            raise InvalidInput("find_orders needs status or customer_id (it queries an index by that key).",
                               "pass status='PENDING' (or another status) or customer_id='cust-0001'.")
        start, end, notes = parse_window(since, until, default_start="1970-01-01T00:00:00Z",
                                         names=("since", "until"))
        names = {"#d": "orderDate"}
        values: dict[str, Any] = {":a": iso(start), ":b": iso(end)}
        filter_expression = None
        if customer_id:
            index = self.settings.orders_customer_index
            names["#k"] = "customerId"
            values[":k"] = customer_id.strip()
            if status:
                names["#s"] = "status"
                values[":s"] = status.strip().upper()
                filter_expression = "#s = :s"
        else:
            index = self.settings.orders_status_index
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
        found: list[dict[str, Any]] = []
        last = start_key
        # A filter can make a page short: keep reading pages until the limit is met (bounded).
        for _ in range(20):
            items, last = await self.ddb.query(
                self.settings.orders_table, index, "#k = :k AND #d BETWEEN :a AND :b", values, names,
                filter_expression=filter_expression, limit=min(1000, limit - len(found) if not filter_expression else 1000),
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
