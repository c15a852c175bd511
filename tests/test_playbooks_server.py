"""run_playbook through the MCP server: the approval flow, progress notifications, audit."""

from __future__ import annotations

import os
import time

import pytest
from conftest import ToolFailed, call, make_settings
from mcp import Client
from mcp.types import ElicitResult
from test_playbooks import marker, test_catalog  # noqa: F401  (fixtures)

from opsmcp.calls.audit import FileAudit
from opsmcp.server import build_server

pytestmark = pytest.mark.anyio


def _old_files(root, n=3, days=30):
    root.mkdir(parents=True)
    old = time.time() - days * 86400
    for i in range(n):
        f = root / f"old{i}.log"
        f.write_text("x")
        os.utime(f, (old, old))
    (root / "fresh.log").write_text("y")


async def test_real_run_needs_approval_and_reports_progress(tmp_path):
    target = tmp_path / "cleanup"
    _old_files(target)
    settings = make_settings("http://127.0.0.1:9", tmp_path / "data", allow_writes=True, toolsets=["playbooks"])
    server, runtime = build_server(settings)
    assert "run_playbook" in runtime.tools, runtime.disabled
    prompts: list[str] = []
    progress: list[tuple[float, float | None, str | None]] = []

    async def approve(context, params):
        prompts.append(params.message)
        return ElicitResult(action="accept", content={"approve": True})

    async def on_progress(p, total, message):
        progress.append((p, total, message))

    args = {"name": "cleanup_old_files", "extra_vars": {"directory": str(target), "age_days": 7, "pattern": "*.log"}}
    async with Client(server) as plain:
        preview = await call(plain, "run_playbook", **args)  # check mode: no approval needed
        assert sorted(p.name for p in target.iterdir()) == ["fresh.log", "old0.log", "old1.log", "old2.log"]
        with pytest.raises(ToolFailed, match="only through an approval prompt"):
            await call(plain, "run_playbook", **args, check=False)
        assert len(list(target.iterdir())) == 4
    assert preview["status"] == "successful"
    async with Client(server, elicitation_callback=approve) as client:
        res = await client.call_tool("run_playbook", dict(args, check=False), progress_callback=on_progress)
    assert not res.is_error, res.content
    assert [p.name for p in target.iterdir()] == ["fresh.log"]
    assert len(prompts) == 1 and "cleanup_old_files" in prompts[0]
    assert progress and any(m for _, _, m in progress)
    outcome = [r for r in FileAudit(settings.audit_log_path).tail(20) if r["phase"] == "outcome"][-1]
    assert outcome["approval"] == "elicitation" and outcome["dry_run"] is False


async def test_secret_named_variable_is_redacted_in_the_audit_log(tmp_path):
    settings = make_settings("http://127.0.0.1:9", tmp_path / "data", allow_writes=True, toolsets=["playbooks"])
    server, _ = build_server(settings)
    async with Client(server) as client:
        with pytest.raises(ToolFailed, match="api_token"):
            await call(client, "run_playbook", name="collect_diagnostics",
                       extra_vars={"api_token": "sk-live-123456", "db_password": "hunter2"})
    text = settings.audit_log_path.read_text()
    assert "sk-live-123456" not in text and "hunter2" not in text and "***redacted***" in text


async def test_mcp_cancellation_stops_a_running_playbook(tmp_path, test_catalog, marker):  # noqa: F811
    """Cancelling the tools/call on the client stops the ansible run (its sleep dies) and the
    audit trail records how the write ended."""
    import anyio
    from test_playbooks import marked

    settings = make_settings("http://127.0.0.1:9", tmp_path / "data", allow_writes=True, toolsets=["playbooks"],
                             playbook_catalog=test_catalog.path, write_approval="prompt-or-confirm")
    server, _ = build_server(settings)
    async with Client(server) as client, anyio.create_task_group() as tg:
        args = {"name": "slow", "extra_vars": {"seconds": 39}}
        preview = await call(client, "run_playbook", **args)  # the check-mode preview (the sleep is skipped)

        async def run() -> None:
            token = preview["approval"]["token"]
            await client.call_tool("run_playbook", dict(args, check=False, confirm=True, approval_token=token))

        tg.start_soon(run)
        with anyio.fail_after(60):
            while not marked(marker):
                await anyio.sleep(0.05)  # polling for the process to appear, bounded above
        tg.cancel_scope.cancel()
    with anyio.fail_after(30):
        while marked(marker):
            await anyio.sleep(0.05)
    with anyio.fail_after(10):
        while not any(r.get("outcome") == "cancelled" for r in FileAudit(settings.audit_log_path).tail(10)):
            await anyio.sleep(0.05)


async def test_a_real_run_waits_for_a_person_in_mode_human(tmp_path):
    """Mode human: run_playbook(check=false) answers pending_approval with its check-mode
    preview and changes nothing; a person's approval runs it (confirmed, audited as human)."""
    from opsmcp.calls.identity import caller

    target = tmp_path / "cleanup"
    _old_files(target)
    settings = make_settings("http://127.0.0.1:9", tmp_path / "data", allow_writes=True, toolsets=["playbooks"],
                             write_approval="human")
    server, runtime = build_server(settings)
    args = {"name": "cleanup_old_files", "extra_vars": {"directory": str(target), "age_days": 7, "pattern": "*.log"}}
    reset = caller.set("agent")
    try:
        async with Client(server) as client:
            pending = await call(client, "run_playbook", **args, check=False)
    finally:
        caller.reset(reset)
    assert pending["status"] == "pending_approval" and pending["check"] is True and pending["approval_id"]
    assert len(list(target.iterdir())) == 4
    reset = caller.set("lead")
    try:
        done = await runtime.approvals.desk.decide(pending["approval_id"], True)
    finally:
        caller.reset(reset)
    assert done.status == "done" and done.result["status"] == "successful" and done.result["check"] is False
    assert [p.name for p in target.iterdir()] == ["fresh.log"]
    outcome = [r for r in FileAudit(settings.audit_log_path).tail(20) if r["phase"] == "outcome"][-1]
    assert outcome["approval"] == "human" and outcome["approver"] == "lead" and outcome["caller"] == "agent"
