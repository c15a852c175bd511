"""Configuration precedence and the sandbox scenario's guarantees."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from helpers import make_settings

from opsmcp.config import Settings
from opsmcp.sandbox.scenario import MAX_RECEIVE_COUNT, build_scenario
from opsmcp.server import build_server


def test_flags_over_env_over_toml(tmp_path, monkeypatch):
    toml = tmp_path / "opsmcp.toml"
    toml.write_text('orders_table = "from-toml"\nmax_result_bytes = 9000\ntoolsets = ["queues", "logs"]\n')
    monkeypatch.setenv("OPSMCP_CONFIG", str(toml))
    s = Settings()
    assert (s.orders_table, s.max_result_bytes, s.toolsets) == ("from-toml", 9000, ["queues", "logs"])
    monkeypatch.setenv("OPSMCP_ORDERS_TABLE", "from-env")
    monkeypatch.setenv("OPSMCP_TOOLSETS", "orders,metrics")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s = Settings()
    assert (s.orders_table, s.toolsets, s.aws_region) == ("from-env", ["orders", "metrics"], "eu-west-1")
    assert Settings(orders_table="from-flag").orders_table == "from-flag"


def test_unknown_toolset_is_a_configuration_error(monkeypatch, capsys):
    from opsmcp.cli import main

    monkeypatch.setenv("OPSMCP_TOOLSETS", "queues,kafka")
    assert main(["doctor"]) == 2
    assert "unknown toolsets ['kafka']" in capsys.readouterr().err


def test_scenario_is_deterministic_and_rich_enough():
    now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    a, b = build_scenario(now), build_scenario(now)
    assert a.orders == b.orders and [d.body for d in a.dead_letters] == [d.body for d in b.dead_letters]
    assert [ln.to_json() for ln in a.log_lines()] == [ln.to_json() for ln in b.log_lines()]
    assert len(a.orders) >= 200 and len(a.dead_letters) >= 50
    causes = Counter(d.cause for d in a.dead_letters)
    assert len([c for c in causes if c != "poison"]) >= 3
    assert any(d.attributes.get("ErrorCode") for d in a.dead_letters)
    assert any(not d.attributes and d.trace_id for d in a.dead_letters)
    assert any(q.fifo and q.dlq for q in a.queues) and sum(1 for q in a.queues if q.dlq) >= 2
    assert {q.dlq for q in a.queues if q.dlq} == {d.queue for d in a.dead_letters}  # every dead letter's DLQ is wired
    order_ids = {o["orderId"] for o in a.orders}
    traces = {o["traceId"] for o in a.orders}
    assert all(d.order_id in order_ids and d.trace_id in traces for d in a.dead_letters if d.cause != "poison")
    lines = list(a.log_lines())
    assert len(lines) >= 10_000 and len({ln.service for ln in lines}) >= 4
    assert (now - lines[0].timestamp).total_seconds() <= 6 * 3600
    assert {d.trace_id for d in a.dead_letters if d.trace_id} <= {ln.trace_id for ln in lines}


def test_missing_playbook_catalog_disables_the_toolset_with_a_clear_reason(tmp_path):
    settings = make_settings("http://127.0.0.1:9", tmp_path, allow_writes=True,
                             playbook_catalog=tmp_path / "nope" / "catalog.yml")
    _, runtime = build_server(settings)
    assert "run_playbook" not in runtime.tools and "list_playbooks" not in runtime.tools
    assert "catalog.yml" in runtime.disabled["playbooks"]


def test_bound_result_cuts_lists_drops_the_cursor_and_fixes_the_count():
    from opsmcp.result_size import fit_result as bound_result
    from opsmcp.toolsets.orders import OrderList, OrderSummary

    orders = [OrderSummary(order_id=f"id-{i:04d}", status="PENDING", customer_id="c" * 200) for i in range(500)]
    page = OrderList(orders=orders, count=500, index="status-index", next_cursor="abc", truncated=True)
    out = bound_result(page, 20_000)
    assert len(out.model_dump_json().encode()) <= 20_000
    assert 0 < len(out.orders) < 500 and out.count == len(out.orders)
    assert out.next_cursor is None and out.truncated
    assert f"limit={len(out.orders)}" in out.notes[-1]


def test_http_on_a_public_address_needs_a_token(monkeypatch, capsys):
    from opsmcp.cli import main

    monkeypatch.delenv("OPSMCP_HTTP_TOKEN", raising=False)
    assert main(["serve", "--transport", "http", "--host", "0.0.0.0"]) == 2
    assert "OPSMCP_HTTP_TOKEN" in capsys.readouterr().err


async def test_the_seeded_sources_send_to_their_dlq_after_max_receive_count_receives(seeded):
    """What the scenario promises (MAX_RECEIVE_COUNT) is what SQS was told: each source's
    RedrivePolicy, read back through list_queues."""
    from helpers import call

    queues = {q["name"]: q for q in (await call(seeded.client, "list_queues"))["queues"]}
    sources = [q for q in seeded.scenario.queues if q.dlq]
    assert sources
    for spec in sources:
        assert (queues[spec.name]["dlq"], queues[spec.name]["max_receive_count"]) == (spec.dlq, MAX_RECEIVE_COUNT)
