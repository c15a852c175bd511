"""End to end: MCP Inspector's CLI (npm, an independent client) lists and reads opsmcp's
prompts and resources from the real `opsmcp serve` on its sandbox.

Inspector 2.12.0's ``--cli`` has no completion or subscription method (``prompts/complete``
is refused as unsupported, ``resources/subscribe`` streams forever); both are tested
through ``mcp.Client`` in ``test_prompts_resources.py``."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from test_e2e import INSPECTOR, OPSMCP, READY_BUDGET_S, clean_env, http_server, inspector_env


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # Inspector's own connect timeout (15 s) covers the server's start; a loaded machine needs more.
    connect = ["--connect-timeout", str(int(READY_BUDGET_S * 1000))]
    return subprocess.run([str(INSPECTOR), "--cli", *args, *connect], capture_output=True, text=True,
                          timeout=READY_BUDGET_S + 60, env=inspector_env(env))


def _ok(*args: str, env: dict[str, str]) -> dict:
    out = _run(*args, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.skipif(not INSPECTOR.exists() and not os.environ.get("CI"),
                    reason="MCP Inspector not installed (npm install in tests/e2e_npm; .ci/run does)")
def test_mcp_inspector_cli_prompts_resources_and_completion(tmp_path):
    env = clean_env(tmp_path, MCP_CATALOG_PATH=str(tmp_path / "catalog.json"))
    prompt = _ok(OPSMCP, "serve", "--method", "prompts/get", "--prompt-name", "triage_dlq",
                 "--prompt-args", "queue=order-queue-dlq", env=env)  # stdio
    assert 'analyze_dlq(queue="order-queue-dlq")' in prompt["messages"][0]["content"]["text"]
    with http_server(tmp_path, "--allow-writes") as base:
        url = f"{base}/mcp"
        prompts = {p["name"] for p in _ok(url, "--method", "prompts/list", env=env)["prompts"]}
        assert prompts == {"triage_dlq", "explain_order", "health_check"}
        resources = {r["uri"] for r in _ok(url, "--method", "resources/list", env=env)["resources"]}
        assert {"opsmcp://playbooks/catalog", "opsmcp://runbooks/order-db-timeout"} <= resources
        templates = _ok(url, "--method", "resources/templates/list", env=env)["resourceTemplates"]
        assert "opsmcp://queues/{name}" in {t["uriTemplate"] for t in templates}
        read = _ok(url, "--method", "resources/read", "--uri", "opsmcp://queues/order-cancellation-queue-dlq", env=env)
        state = json.loads(read["contents"][0]["text"])
        assert state["visible"] == 8 and state["source_queues"] == ["order-cancellation-queue"]
        runbook = _ok(url, "--method", "resources/read", "--uri", "opsmcp://runbooks/restart_worker", env=env)
        assert runbook["contents"][0]["text"].startswith("# Runbook: restart_worker")
        missing = _run(url, "--method", "resources/read", "--uri", "opsmcp://runbooks/nope", env=env)
        assert missing.returncode != 0 and "No runbook 'nope'" in missing.stdout + missing.stderr
        unknown = _run(url, "--method", "prompts/get", "--prompt-name", "nope", env=env)
        assert unknown.returncode != 0 and "Unknown prompt 'nope'" in unknown.stdout + unknown.stderr
