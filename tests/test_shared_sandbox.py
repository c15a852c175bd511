"""One embedded sandbox per data directory, shared by every `opsmcp serve` that uses it
(issue 24): clients that start a server per call (langchain-mcp-adapters' default
``get_tools()``) see one state; the last server leaving stops it after its idle time; a
stale port file is recovered; ``--sandbox-port`` pins moto's port; ``opsmcp sandbox stop``.

Every server here is the real `opsmcp serve` process over stdio, driven by the SDK's client.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mcp import Client, StdioServerParameters

from helpers import DEAD_ENDPOINT, call, clean_env, free_port

pytestmark = pytest.mark.anyio
OPSMCP = str(Path(sys.executable).parent / "opsmcp")
BUDGET_S = 120.0  # a sandbox start, or stop, on a loaded 2-core machine


def state_of(home: Path) -> dict:
    return json.loads((home / "data" / "sandbox" / "state.json").read_text())


def wait_gone(pid: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(BUDGET_S)


def token_of(dry_run: dict) -> str:
    return dry_run["approval"]["token"]


async def test_two_stdio_servers_share_one_sandbox_and_the_last_one_stops_it(tmp_path):
    """A redrive through one server is what the other sees; a token previewed by one is
    confirmed by the other (the data dir's approval secret); once both left, the sandbox
    stops after its idle time and removes its state file. Before: each server had a sandbox
    (and an approval secret) of its own."""
    env = clean_env(tmp_path, OPSMCP_SANDBOX_IDLE_SECONDS="1", OPSMCP_WRITE_APPROVAL="prompt-or-confirm")
    first = StdioServerParameters(command=OPSMCP, args=["serve", "--allow-writes"], env=env)
    second = StdioServerParameters(command=OPSMCP, args=["serve", "--allow-writes"], env=env)
    async with Client(first) as one, Client(second) as two:
        preview = await call(one, "redrive_dlq", queue="order-cancellation-queue-dlq")
        assert preview["matched"] == 8
        moved = await call(two, "redrive_dlq", queue="order-cancellation-queue-dlq", dry_run=False, confirm=True,
                           approval_token=token_of(preview))
        assert moved["moved"] == 8
        seen = {q["name"]: q for q in (await call(one, "list_queues", prefix="order-cancellation"))["queues"]}
        assert seen["order-cancellation-queue-dlq"]["visible"] == 0
        assert seen["order-cancellation-queue"]["visible"] == 8
        pid = state_of(tmp_path)["pid"]
        assert len([p for p in psutil.process_iter(["cmdline"])
                    if "opsmcp.sandbox.process" in " ".join(p.info["cmdline"] or [])
                    and str(tmp_path) in " ".join(p.info["cmdline"] or [])]) == 1
    assert psutil.pid_exists(pid)  # outlives its last server for the idle time ...
    wait_gone(pid)  # ... then stops by itself
    assert not (tmp_path / "data" / "sandbox" / "state.json").exists()


async def test_a_server_per_call_finds_the_same_sandbox(tmp_path):
    """The pattern of langchain-mcp-adapters' default get_tools(): one process per call, none
    alive in between. The second process joins the sandbox the first started (within its
    idle time) and sees what the first one's call moved."""
    env = clean_env(tmp_path, OPSMCP_SANDBOX_IDLE_SECONDS="120", OPSMCP_WRITE_APPROVAL="prompt-or-confirm")
    params = StdioServerParameters(command=OPSMCP, args=["serve", "--allow-writes"], env=env)
    async with Client(params) as client:
        preview = await call(client, "redrive_dlq", queue="order-cancellation-queue-dlq")
    pid = state_of(tmp_path)["pid"]
    async with Client(params) as client:
        moved = await call(client, "redrive_dlq", queue="order-cancellation-queue-dlq", dry_run=False, confirm=True,
                           approval_token=token_of(preview))
    assert moved["moved"] == 8
    async with Client(params) as client:
        dlq = await call(client, "list_queues", prefix="order-cancellation-queue-dlq")
    assert dlq["queues"][0]["visible"] == 0
    assert state_of(tmp_path)["pid"] == pid  # one sandbox all along


async def test_a_stale_port_file_is_recovered(tmp_path):
    """A state file left by a killed sandbox (its pid gone) does not stop the next server:
    it starts a new sandbox and answers."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    files = tmp_path / "data" / "sandbox"
    files.mkdir(parents=True)
    stale = {"pid": dead.pid, "created": time.time() - 60, "state": "ready", "endpoint": DEAD_ENDPOINT,
             "seed": {}, "counts": {}, "queues": []}
    (files / "state.json").write_text(json.dumps(stale))
    params = StdioServerParameters(command=OPSMCP, args=["serve"], env=clean_env(tmp_path))
    async with Client(params) as client:
        listed = await call(client, "list_queues")
        assert len(listed["queues"]) == 7
    state = state_of(tmp_path)
    assert state["pid"] != dead.pid and state["endpoint"] != stale["endpoint"]


async def test_sandbox_port_pins_moto_and_the_stop_command_ends_it(tmp_path):
    """--sandbox-port N: moto listens on N (before: always a random port). `opsmcp sandbox
    stop` ends the shared sandbox at once."""
    port = free_port()
    env = clean_env(tmp_path)
    params = StdioServerParameters(command=OPSMCP, args=["serve", "--sandbox-port", str(port)], env=env)
    async with Client(params) as client:
        assert (await call(client, "list_queues"))["queues"]
    state = state_of(tmp_path)
    assert state["endpoint"] == f"http://127.0.0.1:{port}"
    stopped = subprocess.run([OPSMCP, "sandbox", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and f"stopped the sandbox at http://127.0.0.1:{port}" in stopped.stderr
    wait_gone(state["pid"])
    again = subprocess.run([OPSMCP, "sandbox", "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "no sandbox runs" in again.stderr


def test_a_taken_sandbox_port_is_one_line_naming_the_option(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([OPSMCP, "serve", "--sandbox-port", str(port)], env=clean_env(tmp_path),
                              capture_output=True, text=True, timeout=BUDGET_S, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port} is already in use" in lines[0] and "--sandbox-port" in lines[0]
    assert "Traceback" not in proc.stderr


def test_ctrl_c_in_a_terminal_leaves_no_traceback(tmp_path):
    """Ctrl-C in a terminal signals the whole foreground process group. Before: the moto
    child, in the server's group, printed a KeyboardInterrupt traceback (sys.stdin.read()) in
    4 of 5 tries. Now the sandbox runs in its own session and never gets it."""
    env = clean_env(tmp_path)
    proc = subprocess.Popen([OPSMCP, "serve"], env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # its own group, as a shell
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + BUDGET_S
        while "opsmcp sandbox:" not in proc.stderr.readline():  # seeded and idle
            assert time.monotonic() < deadline and proc.poll() is None
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "opsmcp: stopped (Ctrl-C)" in err and "Traceback" not in err, err
    assert "the sandbox stays up 600 s" in err and "opsmcp sandbox stop" in err
    assert took < 10, took
    log = (tmp_path / "data" / "sandbox" / "moto.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert psutil.pid_exists(state_of(tmp_path)["pid"])  # still there for the next server


async def test_idle_zero_stops_with_the_last_server(tmp_path):
    env = clean_env(tmp_path, OPSMCP_SANDBOX_IDLE_SECONDS="0")
    async with Client(StdioServerParameters(command=OPSMCP, args=["serve"], env=env)) as client:
        assert (await call(client, "list_queues"))["queues"]
        pid = state_of(tmp_path)["pid"]
    wait_gone(pid)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
