"""Order tools through the in-memory MCP client against a real moto server."""

from __future__ import annotations

import pytest
from conftest import ToolFailed, call

pytestmark = pytest.mark.anyio


async def test_get_order_returns_the_whole_item(seeded):
    order = seeded.scenario.orders[7]
    out = await call(seeded.client, "get_order", order_id=order["orderId"])
    assert out["order"]["orderId"] == order["orderId"]
    assert out["order"]["total"] == order["total"] and out["order"]["positions"] == order["positions"]


async def test_missing_order_is_a_tool_error_with_next_step(seeded):
    with pytest.raises(ToolFailed, match="No order with orderId 'nope'.*find_orders"):
        await call(seeded.client, "get_order", order_id="nope")


async def test_find_orders_by_status_newest_first_and_paged(seeded):
    pending = sorted((o for o in seeded.scenario.orders if o["status"] == "PENDING"),
                     key=lambda o: o["orderDate"], reverse=True)
    first = await call(seeded.client, "find_orders", status="pending", limit=10)
    assert [o["orderId"] for o in first["orders"]] == [o["orderId"] for o in pending[:10]]
    assert first["truncated"] and first["next_cursor"] and first["index"] == "status-index"
    rest = await call(seeded.client, "find_orders", status="PENDING", limit=100, cursor=first["next_cursor"])
    assert [o["orderId"] for o in rest["orders"]] == [o["orderId"] for o in pending[10:]]
    assert not rest["truncated"]


async def test_find_orders_by_customer_status_and_window(seeded):
    orders = seeded.scenario.orders
    customer = max({o["customerId"] for o in orders}, key=lambda c: sum(o["customerId"] == c for o in orders))
    mine = [o for o in orders if o["customerId"] == customer]
    out = await call(seeded.client, "find_orders", customer_id=customer, limit=500)
    assert {o["orderId"] for o in out["orders"]} == {o["orderId"] for o in mine}
    status = mine[0]["status"]
    filtered = await call(seeded.client, "find_orders", customer_id=customer, status=status, limit=500)
    assert {o["orderId"] for o in filtered["orders"]} == {o["orderId"] for o in mine if o["status"] == status}
    recent = await call(seeded.client, "find_orders", status="PAYMENT_PENDING", since="-2h", limit=500)
    assert len(recent["orders"]) == sum(o["status"] == "PAYMENT_PENDING" for o in orders)


async def test_find_orders_bad_input(seeded):
    with pytest.raises(ToolFailed, match="needs status or customer_id"):
        await call(seeded.client, "find_orders")
    with pytest.raises(ToolFailed, match="reversed"):
        await call(seeded.client, "find_orders", status="PENDING", since="-1h", until="-2h")
    with pytest.raises(ToolFailed, match="Cannot read since"):
        await call(seeded.client, "find_orders", status="PENDING", since="yesterday-ish")
    with pytest.raises(ToolFailed, match="cursor is not one this tool returned"):
        await call(seeded.client, "find_orders", status="PENDING", cursor="WzFd")  # base64 of [1]
    with pytest.raises(ToolFailed, match="limit=5000 is too large; allowed: a whole number from 1 to 500"):
        await call(seeded.client, "find_orders", status="PENDING", limit=5000)


async def test_unknown_table_lists_closest(seeded):
    seeded.runtime.toolsets["orders"].settings.orders_table = "order"
    with pytest.raises(ToolFailed, match="No table named 'order'.*'orders'"):
        await call(seeded.client, "get_order", order_id="x")
