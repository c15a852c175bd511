"""Connecting to a running opsmcp over streamable HTTP (``--server-url``) with a bearer token.

The real server is started with ``opsmcp serve --transport http`` on a free loopback port
and stopped afterwards; readiness is polled on ``/healthz``.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import ScriptedChatModel, call, free_port, wait_until
from langchain_core.messages import AIMessage

from opsmcp_agent.cli import main

TOKEN = "test-token-9f2c"


@pytest.fixture(scope="module")
def http_server(server_cmd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real opsmcp over streamable HTTP, token-protected; yields its /mcp URL."""
    exe = shlex.split(server_cmd)[0]
    port = free_port()
    data = tmp_path_factory.mktemp("http")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(OPSMCP_HTTP_TOKEN=TOKEN, XDG_DATA_HOME=str(data), OPSMCP_DATA_DIR=str(data / "opsmcp"))
    log = data / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [exe, "serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port), "--sandbox"],
            env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(
                f"opsmcp serve --transport http exited {proc.returncode}:\n{Path(log).read_text()[-3000:]}"
            )
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=90, what="opsmcp /healthz")
        yield f"{base}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_ask_over_streamable_http_with_token_and_narrowed_tools(
    http_server: str, capfd: pytest.CaptureFixture[str]
) -> None:
    model = ScriptedChatModel(script=[call("list_queues", {}), AIMessage("Queues listed [1].")])
    argv = ["ask", "list the queues", "--server-url", http_server, "--token", TOKEN, "--toolsets", "queues"]
    rc = main(argv, chat_model=model, stdin=io.StringIO(""))
    out, err = capfd.readouterr()
    assert rc == 0, err
    assert "→ [1] list_queues()" in out and "  ← " in out
    assert "*[1] list_queues()" in out.split("=== Evidence ===")[1]
    # a server we did not start is narrowed on the client side
    assert "list_queues" in model.bound_tools
    assert not {"get_order", "find_orders", "query_metrics", "list_metrics"} & set(model.bound_tools)


def test_wrong_token_is_a_clear_error(http_server: str, capfd: pytest.CaptureFixture[str]) -> None:
    model = ScriptedChatModel(script=[])
    rc = main(["ask", "x", "--server-url", http_server, "--token", "wrong"], chat_model=model, stdin=io.StringIO(""))
    _, err = capfd.readouterr()
    assert rc == 5
    assert http_server in err and "401" in err and "--token" in err
    assert model.calls == []
