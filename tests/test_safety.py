"""Write safety: read-only by default, approval by elicitation or confirm=true, the audit log,
and the annotation contract of every tool."""

from __future__ import annotations

import json
import re

import anyio
import boto3
import pytest
from opsmcp.results import Result

from helpers import Things, ToolFailed, call, make_settings, visible
from mcp import Client
from mcp.types import ElicitResult

from opsmcp.calls.audit import FileAudit, read_tail, redact
from opsmcp.sandbox.seed import create_audit_table
from opsmcp.sandbox.scenario import build_scenario
from opsmcp.sandbox.seed import seed_aws
from opsmcp.server import build_server

pytestmark = pytest.mark.anyio

WRITE_TOOLS = {"redrive_dlq", "run_playbook"}




#: The contract every client sees: (readOnlyHint, destructiveHint, idempotentHint, openWorldHint).
#: A change here is a change of what clients may assume (auto-approval, retries): make it on purpose.
HINTS = {
    "analyze_dlq": (False, False, False, True),  # receives (raises receive counts): not read-only
    "find_orders": (True, False, True, True),
    "get_alert": (True, False, True, False),
    "get_order": (True, False, True, True),
    "get_trace": (True, False, True, False),
    "label_values": (True, False, True, True),
    "list_alerts": (True, False, True, False),
    "list_metrics": (True, False, True, True),
    "list_playbooks": (True, False, True, False),
    "list_prometheus_metrics": (True, False, True, True),
    "list_queues": (True, False, True, True),
    "log_patterns": (True, False, True, False),
    "log_stats": (True, False, True, False),
    "peek_messages": (False, False, False, True),  # receives: not read-only
    "promql_instant": (True, False, True, True),
    "query_metrics": (True, False, True, True),
    "query_promql": (True, False, True, True),
    "redrive_dlq": (False, True, False, True),
    "run_playbook": (False, True, False, True),
    "search_logs": (True, False, True, False),
}


async def test_every_tool_announces_the_hints_of_the_contract_and_writes_only_with_writes_on(tmp_path):
    """Each listed tool's four annotations are exactly those of :data:`HINTS` (not merely
    present: the SDK fills absent ones with null, and the registration could map a mark to the
    wrong hint); write tools are listed only with writes enabled; every tool has an output
    schema and a description for each argument."""
    for allow in (False, True):
        settings = make_settings("http://127.0.0.1:9", tmp_path, allow_writes=allow,
                                 prometheus_url="http://127.0.0.1:9", alertmanager_url="http://127.0.0.1:9")
        server, runtime = build_server(settings)
        async with Client(server) as client:
            tools = (await client.list_tools()).tools
        assert {t.name for t in tools} == set(HINTS) - (set() if allow else WRITE_TOOLS), runtime.disabled
        for t in tools:
            a = t.annotations
            got = (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)
            assert got == HINTS[t.name], t.name
            assert t.output_schema, f"{t.name} has no output schema"
            for pname, prop in t.input_schema.get("properties", {}).items():
                assert prop.get("description"), f"{t.name}.{pname} has no description"


def test_a_write_tool_mark_that_claims_read_only_or_lacks_a_preview_fails_at_import():
    from opsmcp.toolsets.base import tool

    with pytest.raises(ValueError, match="cannot be read_only"):
        tool(title="x", write=True, read_only=True, preview_arg="dry_run")
    with pytest.raises(ValueError, match="needs a preview_arg"):
        tool(title="x", write=True, read_only=False)


def test_a_write_tool_that_returns_no_write_result_fails_at_start_up():
    """A write tool's preview hands its approval offer out in the result's ``approval`` field:
    one whose result has no such field (a plain Result) is refused when the server reads the
    marks, so the token never has to travel as text in ``notes``."""
    from opsmcp.toolsets.base import marked_tools, tool

    class Plain:
        @tool(title="x", read_only=False, write=True, preview_arg="dry_run")
        async def move(self, dry_run: bool = True) -> Result:  # module-level import: eval_str sees it
            return Result()

    with pytest.raises(TypeError, match="write tool move must return a WriteResult"):
        marked_tools(Plain())
    assert [name for name, _, _ in marked_tools(Things())] == ["boom", "move_things"]


def _client(server, answer=None, log=None, mode="auto"):
    if answer is None:
        return Client(server, mode=mode)

    async def elicit(context, params):
        log.append(params.message)
        return answer

    return Client(server, elicitation_callback=elicit, mode=mode)


@pytest.mark.parametrize("answer,moved,mode", [
    (ElicitResult(action="accept", content={"approve": True}), 8, "auto"),
    (ElicitResult(action="accept", content={"approve": False}), 0, "auto"),
    (ElicitResult(action="decline"), 0, "auto"),
    (ElicitResult(action="cancel"), 0, "auto"),
    # 2025-11-25 clients (Claude Desktop, Inspector): elicitation is a request sent mid-call
    (ElicitResult(action="accept", content={"approve": True}), 8, "legacy"),
    (ElicitResult(action="decline"), 0, "legacy"),
])
async def test_elicitation_accept_decline_cancel(fresh_moto, tmp_path, answer, moved, mode):
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True)
    seed_aws(settings, build_scenario(), metrics=False)
    server, _ = build_server(settings)
    prompts: list[str] = []
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    async with _client(server, answer, prompts, mode) as client:
        if mode == "legacy":
            assert client.protocol_version == "2025-11-25"
        args = {"queue": "order-cancellation-queue-dlq", "dry_run": False}
        if moved:
            out = await call(client, "redrive_dlq", **args)
            assert out["moved"] == moved
        else:
            with pytest.raises(ToolFailed, match="did nothing"):
                await call(client, "redrive_dlq", **args)
    assert len(prompts) == 1 and "Move 8 message(s) from DLQ order-cancellation-queue-dlq" in prompts[0]
    assert visible(sqs, "order-cancellation-queue-dlq") == 8 - moved
    assert visible(sqs, "order-cancellation-queue") == moved
    records = read_tail(settings.audit_log_path, 50)
    final = [r for r in records if r["phase"] == "outcome"][-1]
    assert final["tool"] == "redrive_dlq" and final["dry_run"] is False
    if moved:
        assert final["approval"] == "elicitation" and final["counts"]["moved"] == 8
        assert any(r["phase"] == "intent" and r["call_id"] == final["call_id"] for r in records)
    else:
        assert final["outcome"] in ("declined", "cancelled")


async def test_without_elicitation_capability_confirm_and_the_token_are_required(seeded):
    dlq = "order-cancellation-queue-dlq"
    with pytest.raises(ToolFailed, match=r"(?s)needs the user's approval.*Move 8 message.*confirm=true") as needs:
        await call(seeded.client, "redrive_dlq", queue=dlq, dry_run=False)
    assert visible(seeded.sqs, dlq) == 8
    token = re.search(r'approval_token="([^"]+)"', str(needs.value)).group(1)  # type: ignore[union-attr]
    out = await call(seeded.client, "redrive_dlq", queue=dlq, dry_run=False, confirm=True, approval_token=token)
    assert out["moved"] == 8
    records = read_tail(seeded.settings.audit_log_path, 100)
    outcomes = [(r["outcome"], r["approval"]) for r in records if r["phase"] == "outcome"]
    assert ("needs_confirmation", None) in outcomes and ("complete", "approval_token") in outcomes


async def test_dry_runs_are_audited_with_caller_and_redaction(seeded):
    await call(seeded.client, "redrive_dlq", queue="order-cancellation-queue-dlq")
    records = read_tail(seeded.settings.audit_log_path, 10)
    assert [r["phase"] for r in records] == ["intent", "outcome"]
    assert all(r["dry_run"] and r["caller"] == "stdio" and r["tool"] == "redrive_dlq" for r in records)
    assert records[1]["counts"]["matched"] == 8 and records[1]["duration_ms"] >= 0
    secrets = {"db_password": "hunter2", "nested": {"api_key": "k", "path": "/tmp"}, "note": "Bearer abcdefghijk"}
    assert redact(secrets) == {
        "db_password": "***redacted***", "nested": {"api_key": "***redacted***", "path": "/tmp"},
        "note": "***redacted***"}


async def test_audit_failure_stops_the_write_before_it_acts(fresh_moto, tmp_path):
    audit = tmp_path / "audit.jsonl"
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, audit_log=audit,
                             write_approval="prompt-or-confirm")
    seed_aws(settings, build_scenario(), metrics=False)
    server, _ = build_server(settings)
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    async with Client(server) as client:
        preview = await call(client, "redrive_dlq", queue="order-cancellation-queue-dlq")
        audit.unlink()
        audit.mkdir()  # from here on the audit log cannot be written
        with pytest.raises(ToolFailed, match="Cannot write the audit log"):
            await call(client, "redrive_dlq", queue="order-cancellation-queue-dlq", dry_run=False, confirm=True,
                       approval_token=preview["approval"]["token"])
    assert visible(sqs, "order-cancellation-queue-dlq") == 8 and visible(sqs, "order-cancellation-queue") == 0


async def test_audit_records_can_go_to_dynamodb(fresh_moto, tmp_path):
    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, audit_table="opsmcp-audit")
    seed_aws(settings, build_scenario(), metrics=False)
    ddb = boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1")
    create_audit_table(ddb, "opsmcp-audit")
    server, runtime = build_server(settings)
    async with Client(server) as client:
        await call(client, "redrive_dlq", queue="order-cancellation-queue-dlq")
    items = await runtime.audit.tail(10)
    assert [i["phase"] for i in items] == ["intent", "outcome"] and items[1]["counts"]["matched"] == 8
    assert not settings.audit_log_path.exists()


def test_audit_tail_command(tmp_path, capsys):
    from opsmcp.cli import main

    audit = FileAudit(tmp_path / "audit.jsonl")
    for n in range(5):
        anyio.run(audit.append, {"time": f"t{n}", "call_id": str(n), "phase": "outcome", "caller": "stdio",
                                 "tool": "redrive_dlq", "arguments": {"queue": "q", "token": "***redacted***"},
                                 "dry_run": True, "outcome": "ok"})
    assert main(["audit", "tail", "-n", "2", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and "id=3" in out[0] and "id=4" in out[1] and "DRY-RUN" in out[1]
    assert main(["audit", "tail", "-n", "1", "--json", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out.strip())["call_id"] == "4"


async def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path):
    path = tmp_path / "audit.jsonl"
    audit = FileAudit(path)
    await audit.append({"time": "t1", "call_id": "1", "phase": "intent", "tool": "redrive_dlq"})
    with open(path, "ab") as fh:
        fh.write(b'{"time":"t2","call_id":"torn","pha')  # the server was killed mid-write
    await audit.append({"time": "t3", "call_id": "2", "phase": "intent", "tool": "redrive_dlq"})
    records = await audit.tail(5)
    assert [r.get("call_id") for r in records] == ["1", None, "2"]
    assert records[1]["unreadable"].startswith('{"time":"t2"')


def test_interrupted_writes_are_closed_on_start_up_with_their_last_progress(tmp_path, capsys):
    import os
    import subprocess
    import sys

    from opsmcp.calls.audit import HOST
    from opsmcp.cli import main

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    audit = FileAudit(tmp_path / "audit.jsonl")
    base = {"caller": "stdio", "tool": "redrive_dlq", "arguments": {"queue": "order-queue-dlq"}, "dry_run": False,
            "approval": "elicitation", "host": HOST, "pid": gone.pid}
    records = [base | {"time": "t1", "call_id": "killed", "phase": "intent", "outcome": "started"}]
    records += [base | {"time": f"t{n}", "call_id": "killed", "phase": "progress", "outcome": "running",
                        "counts": {"progress": n, "total": 2000}} for n in (10, 200)]
    records += [base | {"time": "t3", "call_id": "finished", "phase": "intent", "outcome": "started"},
                base | {"time": "t4", "call_id": "finished", "phase": "outcome", "outcome": "complete"},
                base | {"time": "t5", "call_id": "running", "phase": "intent", "outcome": "started",
                        "pid": os.getpid()},  # a live process: still running, left alone
                base | {"time": "t6", "call_id": "elsewhere", "phase": "intent", "outcome": "started",
                        "host": "another-replica"}]
    for record in records:
        anyio.run(audit.append, record)
    settings = make_settings("http://127.0.0.1:9", tmp_path, toolsets=[])
    build_server(settings)
    closed = [r for r in anyio.run(audit.tail, 50) if r.get("outcome") == "interrupted"]
    assert [r["call_id"] for r in closed] == ["killed"]
    assert closed[0]["counts"] == {"progress": 200, "total": 2000} and "t200" in closed[0]["note"]
    build_server(settings)  # a second start finds nothing left to close
    assert len([r for r in anyio.run(audit.tail, 50) if r.get("outcome") == "interrupted"]) == 1
    assert main(["audit", "tail", "-n", "1", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "outcome=interrupted" in out and '"progress": 200' in out and "id=killed" in out


async def test_a_write_tool_on_a_read_only_server_says_how_to_enable_writes(tmp_path):
    server, _ = build_server(make_settings("http://127.0.0.1:9", tmp_path, toolsets=["queues", "playbooks"]))
    async with Client(server) as client:
        for name in ("redrive_dlq", "run_playbook"):
            with pytest.raises(ToolFailed, match=rf"{name} is not available on this server: writes are disabled; "
                                                 "start with --allow-writes"):
                await call(client, name, queue="q", name="collect_diagnostics")
        with pytest.raises(ToolFailed, match="Unknown tool: no_such_tool"):
            await call(client, "no_such_tool")
