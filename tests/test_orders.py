"""Order tools through the in-memory MCP client against a real moto server."""

from __future__ import annotations

import pytest
from helpers import ToolFailed, call

pytestmark = pytest.mark.anyio


async def test_get_order_returns_the_whole_item(seeded):
    order = seeded.scenario.orders[7]
    out = await call(seeded.client, "get_order", order_id=order["orderId"])
    assert out["order"]["orderId"] == order["orderId"]
    assert out["order"]["total"] == order["total"] and out["order"]["positions"] == order["positions"]


async def test_missing_order_is_a_tool_error_with_next_step(seeded):
    with pytest.raises(ToolFailed, match=r"No order with orderId 'nope'.*find_orders"):
        await call(seeded.client, "get_order", order_id="nope")


async def test_find_orders_by_status_newest_first_and_paged(seeded):
    pending = sorted((o for o in seeded.scenario.orders if o["status"] == "PENDING"),
                     key=lambda o: o["orderDate"], reverse=True)
    first = await call(seeded.client, "find_orders", status="pending", limit=10)
    assert [o["order_id"] for o in first["orders"]] == [o["orderId"] for o in pending[:10]]
    assert set(first["orders"][0]) == {"order_id", "order_number", "order_date", "status", "customer_id", "total",
                                       "currency", "trace_id", "items"}  # snake_case, like every other tool
    assert first["truncated"] and first["next_cursor"] and first["index"] == "status-index"
    rest = await call(seeded.client, "find_orders", status="PENDING", limit=100, cursor=first["next_cursor"])
    assert [o["order_id"] for o in rest["orders"]] == [o["orderId"] for o in pending[10:]]
    assert not rest["truncated"]


async def test_find_orders_by_customer_status_and_window(seeded):
    orders = seeded.scenario.orders
    customer = max({o["customerId"] for o in orders}, key=lambda c: sum(o["customerId"] == c for o in orders))
    mine = [o for o in orders if o["customerId"] == customer]
    out = await call(seeded.client, "find_orders", customer_id=customer, limit=500)
    assert {o["order_id"] for o in out["orders"]} == {o["orderId"] for o in mine}
    status = mine[0]["status"]
    filtered = await call(seeded.client, "find_orders", customer_id=customer, status=status, limit=500)
    assert {o["order_id"] for o in filtered["orders"]} == {o["orderId"] for o in mine if o["status"] == status}
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
    clamped = await call(seeded.client, "find_orders", status="PENDING", limit=5000)
    assert any("limit=5000 is outside 1-500; clamped to 500" in n for n in clamped["notes"])
    for args in ({"status": "P" * 101}, {"customer_id": "c" * 201}, {"status": "PENDING", "cursor": "x" * 3000},
                 {"status": "PENDING", "since": "1" * 65}):
        with pytest.raises(ToolFailed, match=r"at most|is too long"):
            await call(seeded.client, "find_orders", **args)
    with pytest.raises(ToolFailed, match=r"at most 200|1-200 characters"):
        await call(seeded.client, "get_order", order_id="o" * 201)


async def test_find_orders_finds_differently_named_indexes_by_their_keys(seeded):
    """Configured index names that do not exist: the GSIs are found by key attributes, and the
    notes say which one was used."""
    settings = seeded.runtime.toolsets["orders"].settings
    settings.orders_status_index, settings.orders_customer_index = "by-status", "by-customer"
    out = await call(seeded.client, "find_orders", status="PENDING", limit=3)
    assert out["index"] == "status-index" and len(out["orders"]) == 3
    assert any("index 'by-status' does not exist" in n and "'status-index'" in n for n in out["notes"])
    mine = await call(seeded.client, "find_orders", customer_id=seeded.scenario.orders[0]["customerId"])
    assert mine["index"] == "customer-index" and mine["orders"]


async def test_a_table_without_the_index_is_a_clear_error(seeded):
    seeded.ddb.create_table(TableName="bare-orders", BillingMode="PAY_PER_REQUEST",
                            AttributeDefinitions=[{"AttributeName": "orderId", "AttributeType": "S"}],
                            KeySchema=[{"AttributeName": "orderId", "KeyType": "HASH"}])
    seeded.runtime.toolsets["orders"].settings.orders_table = "bare-orders"
    with pytest.raises(ToolFailed,
                       match=r"bare-orders has no index 'status-index'.*GSIs: none.*OPSMCP_ORDERS_STATUS_INDEX"):
        await call(seeded.client, "find_orders", status="PENDING")


async def test_unknown_table_lists_closest(seeded):
    seeded.runtime.toolsets["orders"].settings.orders_table = "order"
    with pytest.raises(ToolFailed, match=r"No table named 'order'.*'orders'"):
        await call(seeded.client, "get_order", order_id="x")
