"""Pure pieces: result summaries, citations, schema filling, report parsing, error mapping."""

from __future__ import annotations

import httpx
import pytest

from opsmcp_agent.agent import RunResult, Step
from opsmcp_agent.config import AgentConfig, parse_toolsets
from opsmcp_agent.errors import ModelEndpointError, ToolCallingUnsupported
from opsmcp_agent.models import explain_model_error
from opsmcp_agent.render import cited_steps, clean_answer, format_args, one_line, usable_answer
from opsmcp_agent.report import Alert, parse_report
from opsmcp_agent.session import _connect_error, fill_schema


def test_one_line_prefers_scalars_then_previews_records() -> None:
    data = {
        "truncated": False,
        "next_cursor": None,
        "notes": ["x"],
        "queue": "q-dlq",
        "total": 3,
        "groups": [{"signature": "timeout", "count": 2}, {"signature": "declined", "count": 1}],
    }
    assert one_line("", data) == 'queue="q-dlq", total=3, groups=[2: timeout ×2, declined ×1]'
    assert one_line("boom\n  happened", is_error=True) == "ERROR: boom happened"
    assert one_line("x" * 500, limit=20).endswith("…") and len(one_line("x" * 500, limit=20)) == 20


def test_citations_and_think_blocks() -> None:
    assert cited_steps("see [2] and [1, 3]; not [9]", 3) == [2, 1, 3]
    assert clean_answer("<think>hmm\n</think>\nThe answer") == "The answer"
    assert format_args({"queue": "a", "n": 2}) == 'queue="a", n=2'


def test_fill_schema_approves_booleans_and_keeps_defaults() -> None:
    schema = {
        "properties": {
            "approve": {"type": "boolean"},
            "mode": {"type": "string", "default": "safe"},
            "level": {"enum": ["low", "high"]},
            "free": {"type": "string"},
        }
    }
    assert fill_schema(schema) == {"approve": True, "mode": "safe", "level": "low"}
    assert fill_schema(None) == {}


def test_parse_toolsets() -> None:
    assert parse_toolsets("queues, logs,queues") == ("queues", "logs")
    assert parse_toolsets("") is None
    with pytest.raises(ValueError, match="nope"):
        parse_toolsets("queues,nope")


def test_report_json_inside_prose_and_fallbacks() -> None:
    run = RunResult(
        question="q", answer="a", steps=[Step(1, "analyze_dlq", {}, True, summary="2 groups")], stopped=None, elapsed=1
    )
    alerts = [Alert("firing", {"alertname": "X", "severity": "warning"}, {})]
    rep = parse_report(
        'Sure!\n```json\n{"summary": "s", "root_cause": "r", "severity": "bogus", "evidence": "[1] e"}\n```',
        alerts,
        run,
    )
    assert (rep.parsed, rep.summary, rep.root_cause, rep.evidence) == (True, "s", "r", ["[1] e"])
    assert rep.severity == "medium" and rep.confidence == "low"  # label severity warning → medium
    rep = parse_report("no json here", alerts, run)
    assert rep.parsed is False and rep.evidence == ["[1] analyze_dlq: 2 groups"]


def test_model_errors_map_to_operator_errors() -> None:
    cfg = AgentConfig(base_url="http://127.0.0.1:9")
    assert isinstance(explain_model_error(httpx.ConnectError("refused"), cfg), ModelEndpointError)
    err = explain_model_error(RuntimeError("model x does not support tools"), cfg)
    assert isinstance(err, ToolCallingUnsupported) and "http://127.0.0.1:9" in str(err)
    vllm = RuntimeError('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
    assert isinstance(explain_model_error(vllm, cfg.with_(provider="openai")), ToolCallingUnsupported)
    assert explain_model_error(KeyError("x"), cfg) is None


def test_ollama_host_env_is_the_default_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5:11434")
    assert AgentConfig().resolved_base_url == "http://10.0.0.5:11434"
    assert AgentConfig(provider="openai").resolved_base_url == "http://127.0.0.1:8000/v1"


def test_local_model_schemas_lose_length_bounds() -> None:
    """llama.cpp compiles maxLength into grammar repetitions; opsmcp's 2,048-character
    cursor bound made its server fail ("number of rules ... exceeds sane defaults")."""
    from opsmcp_agent.models import _without_length_bounds

    schema = {"type": "object", "properties": {
        "cursor": {"anyOf": [{"type": "string", "maxLength": 2048}, {"type": "null"}]},
        "queue": {"type": "string", "minLength": 1, "maxLength": 1024, "description": "maxLength stays in text"},
        "limit": {"type": "integer", "maximum": 1000}}}
    out = _without_length_bounds(schema)
    assert "maxLength" not in str(out).replace("maxLength stays", "") and "minLength" not in str(out)
    assert out["properties"]["limit"] == {"type": "integer", "maximum": 1000}
    assert out["properties"]["cursor"]["anyOf"][0] == {"type": "string"}


def test_usable_answers_and_garbage() -> None:
    assert usable_answer("order-queue-dlq holds 28 failed orders [1].")
    assert usable_answer("<think>x</think>The DLQ order-queue-dlq has messages.")
    assert not usable_answer("")
    assert not usable_answer("  ...  ")
    assert not usable_answer("<think>only thinking</think>")
    assert not usable_answer('{"name": "list_queues", "arguments": {}}')
    assert not usable_answer('[{"name": "get_trace", "parameters": {"trace_id": "t"}}]')
    assert not usable_answer("<|im_start|><|im_end|>")
    assert usable_answer("ok")
    assert usable_answer('{"answer": "the order queue failed on db timeouts"}')  # JSON, but not a tool call


def test_connect_errors_name_the_next_step() -> None:
    """Before: 'Could not connect to the opsmcp server (...)' and nothing to try."""
    http = str(_connect_error("http://127.0.0.1:3999/mcp", ConnectionRefusedError("All connection attempts failed")))
    assert "opsmcp serve --transport http" in http and "leave out --server-url" in http
    stdio = str(_connect_error("/usr/bin/opsmcp serve", EOFError("Connection closed")))
    assert "Run `/usr/bin/opsmcp serve` in a terminal" in stdio and "opsmcp doctor" in stdio
