"""What the server itself answers around every tool: argument errors a model can act on
(not pydantic's text), and compact text content that repeats structuredContent once."""

from __future__ import annotations

import json

import pytest
from helpers import ToolFailed, call, make_settings
from mcp import Client
from helpers import Things

from opsmcp.server import build_server, register_toolset

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tmp_path):
    """A client of a server with every toolset (no backend is reached: argument errors come
    first) plus the test write tool ``move_things``."""
    server, runtime = build_server(make_settings("http://127.0.0.1:9", tmp_path, allow_writes=True))
    register_toolset(server, runtime, "things", Things())
    async with Client(server) as c:
        yield c


@pytest.mark.parametrize("tool_name,arguments,expected", [
    ("peek_messages", {"queue": "order-queue", "max_messages": "five"},
     "max_messages='five' must be a whole number; allowed: a whole number; example: peek_messages(max_messages=5)"),
    ("find_orders", {"status": "FAILED", "limit": "lots"},
     "limit='lots' must be a whole number; allowed: a whole number"),
    ("get_order", {}, "order_id is required; allowed: a string"),
    ("analyze_dlq", {"queue": 123}, "queue=123 must be a string"),
    ("move_things", {"max_items": 500}, "max_items=500 is too large; allowed: a whole number from 1 to 100; "
                                        "example: move_things(max_items=50)"),
    ("move_things", {"signature": ["a"], "dry_run": "maybe"}, "dry_run='maybe' must be true or false"),
    ("get_order", {"orderId": "o-1"}, "orderId is not an argument of get_order; did you mean order_id?"),
    ("run_playbook", {"name": "rotate_log", "extra_vars": {"a": [1]}},
     "- extra_vars.a=[1] must be a string or a whole number or true or false; allowed: an object whose values are "
     "a string or a whole number or true or false (or leave it out); "
     "example: run_playbook(extra_vars={\"age_days\": 7})"),
])
async def test_argument_errors_name_the_argument_the_range_and_an_example(client, tool_name, arguments, expected):
    with pytest.raises(ToolFailed) as failed:
        await call(client, tool_name, **arguments)
    text = str(failed.value)
    assert expected in text, text
    assert "pydantic" not in text and "Arguments\n" not in text and "validation error" not in text
    assert "Next step: call again with the corrected arguments." in text


async def test_unknown_arguments_are_errors_naming_the_closest_known_one(client, tmp_path):
    """Regression (issue 19 item 15): misspelled optional arguments were ignored silently:
    search_logs({"qurey": "timeout"}) returned every line with no note. Now every input
    schema says additionalProperties: false and an unknown argument is a tool error naming
    the closest known argument; nothing runs."""
    for wrong, meant in (("qurey", "query"), ("lvl", "level"), ("limt", "limit"), ("traceid", "trace_id")):
        with pytest.raises(ToolFailed) as failed:
            await call(client, "search_logs", **{wrong: "x"})
        text = str(failed.value)
        assert f"{wrong} is not an argument of search_logs; did you mean {meant}?" in text, text
        assert "Next step" in text and "Extra inputs" not in text and "pydantic" not in text
    with pytest.raises(ToolFailed) as failed:  # a write tool: refused before any preview or approval
        await call(client, "move_things", signature="t", dryrun=False)
    assert "did you mean dry_run?" in str(failed.value)
    with pytest.raises(ToolFailed) as failed:  # nothing close: the tool's arguments are listed
        await call(client, "get_order", order_id="o-1", zzzzzz=1)
    assert "zzzzzz is not an argument of get_order. It takes: order_id" in str(failed.value)
    for tool in (await client.list_tools()).tools:
        assert tool.input_schema.get("additionalProperties") is False, tool.name


async def test_text_content_is_compact_json_of_the_structured_content(client):
    result = await client.call_tool("move_things", {"signature": "timeout"})
    assert not result.is_error
    text = result.content[0].text
    assert json.loads(text) == result.structured_content and "\n" not in text and "\": " not in text
    pretty = json.dumps(result.structured_content, indent=2)
    assert len(text) < len(pretty)
