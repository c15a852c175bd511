"""The opsmcp command: sandbox seed into an endpoint, doctor."""

from __future__ import annotations

import boto3

from opsmcp.cli import main


def test_sandbox_seed_into_an_endpoint_then_doctor(fresh_moto, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPSMCP_DATA_DIR", str(tmp_path))  # the seeded log store too: not the user's home
    assert main(["sandbox", "seed", "--endpoint-url", fresh_moto]) == 0
    sqs = boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1")
    names = {u.rsplit("/", 1)[-1] for u in sqs.list_queues()["QueueUrls"]}
    assert {"order-queue", "order-queue-dlq", "payment-queue.fifo", "payment-queue-dlq.fifo"} <= names
    ddb = boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1")
    assert ddb.describe_table(TableName="orders")["Table"]["ItemCount"] >= 200 or \
        ddb.scan(TableName="orders", Select="COUNT")["Count"] == 240

    monkeypatch.setenv("AWS_ENDPOINT_URL", fresh_moto)
    capsys.readouterr()
    rc = main(["doctor", "--toolsets", "queues,orders"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "OK   sqs: 7 queues visible" in out and "OK   orders table: orders ACTIVE" in out

    monkeypatch.setenv("OPSMCP_ORDERS_TABLE", "ordrs")
    assert main(["doctor", "--toolsets", "orders"]) == 1
    assert "FAIL orders table" in capsys.readouterr().out


# --------------------------------------------------------------------------- first hour (issue 9)

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import OPSMCP, clean_env, free_port, visible, wait_answering  # noqa: E402

from opsmcp.cli import build_parser  # noqa: E402

STOP_BUDGET_S = 10.0  # Ctrl-C to exit: 0.5-0.6 s measured; the rest is a loaded machine's slack
START_BUDGET_S = 60.0  # spawn to /healthz on a loaded machine


def no_aws(monkeypatch, home: Path) -> None:
    """A user with no AWS configured (no variables, no ~/.aws), data under ``home``."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "OPSMCP_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("OPSMCP_DATA_DIR", str(home / "data"))


def test_sandbox_seed_without_credentials_seeds_logs_once(fresh_moto, tmp_path, monkeypatch, capsys):
    """Regression: without credentials it printed a NoCredentialsError traceback; it seeded no
    logs; a second run doubled every DLQ."""
    from opsmcp.backends.logstore import LogStore

    no_aws(monkeypatch, tmp_path)
    seed = ["sandbox", "seed", "--endpoint-url", fresh_moto]
    assert main(seed) == 0
    first = capsys.readouterr().err
    assert "Traceback" not in first and "12001 log lines" in first
    assert visible(fresh_moto, "order-queue-dlq") == 28
    with LogStore(tmp_path / "data" / "logs.db", readonly=True) as store:
        assert store.count() == 12001
    assert main(seed) == 0  # a second run changes nothing
    assert "already holds the scenario" in capsys.readouterr().err
    assert visible(fresh_moto, "order-queue-dlq") == 28
    with LogStore(tmp_path / "data" / "logs.db", readonly=True) as store:
        assert store.count() == 12001
    assert main([*seed, "--reset"]) == 0  # replaces, never adds
    assert visible(fresh_moto, "order-queue-dlq") == 28
    with LogStore(tmp_path / "data" / "logs.db", readonly=True) as store:
        assert store.count() == 12001


def test_doctor_on_the_documented_happy_path_exits_0(tmp_path, monkeypatch, capsys):
    """Regression: with no AWS configured (the README's first command) doctor said FAIL and exited 1."""
    no_aws(monkeypatch, tmp_path)
    rc = main(["doctor"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "OK   backend: the embedded sandbox" in out
    assert "FAIL" not in out


def test_doctor_warns_about_a_missing_log_store(fresh_moto, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ENDPOINT_URL", fresh_moto)
    monkeypatch.setenv("OPSMCP_DATA_DIR", str(tmp_path / "mine"))  # the logs were seeded into another one
    assert main(["sandbox", "seed", "--endpoint-url", fresh_moto, "--data-dir", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    rc = main(["doctor", "--toolsets", "queues,logs"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "WARN log store:" in out and "opsmcp logs load" in out


def test_version_and_help_on_every_option(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    from opsmcp import __version__

    assert capsys.readouterr().out.strip() == f"opsmcp {__version__}"

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "opsmcp")
    assert not missing, f"options without help: {missing}"


@pytest.mark.parametrize(
    ("argv", "env", "code", "says"),
    [
        (["sandbox", "seed", "--endpoint-url", "http://127.0.0.1:1"], {}, 1, "Could not reach http://127.0.0.1:1"),
        (["logs", "load", "/nonexistent/app.jsonl", "--quiet"], {}, 1, "No such log file"),
        (["doctor"], {"OPSMCP_MAX_RESULT_BYTES": "5"}, 2, "invalid configuration: max_result_bytes"),
        (["audit", "tail"], {"OPSMCP_AUDIT_LOG": "/proc/forbidden/audit.jsonl"}, 0, ""),
    ],
)
def test_cli_failures_are_one_line(tmp_path, argv, env, code, says):
    """Anticipated failures print one line on stderr, never a traceback."""
    proc = subprocess.run([OPSMCP, *argv], env={**clean_env(tmp_path), **env}, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    if says:
        assert says in proc.stderr.strip().splitlines()[-1], proc.stderr  # the error is one line


def test_serve_without_the_sandbox_extra_names_it(tmp_path, monkeypatch, capsys):
    """No AWS configured and no moto: one line naming the extra to install."""
    import opsmcp.sandbox

    no_aws(monkeypatch, tmp_path)
    monkeypatch.setattr(opsmcp.sandbox, "moto_installed", lambda: False)
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'opsmcp[sandbox]'" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("transport", ["http", "stdio"])
def test_ctrl_c_stops_the_server_promptly_and_says_so(tmp_path, transport):
    port = free_port()
    proc = subprocess.Popen([OPSMCP, "serve", "--transport", transport, "--port", str(port)], env=clean_env(tmp_path),
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if transport == "http":
            wait_answering(f"http://127.0.0.1:{port}/healthz", proc, START_BUDGET_S)
        else:  # the sandbox's banner: built, seeded and idle, its stdin reader waiting for a line
            # (regression: asyncio's SIGINT handling waited for that line, forever)
            assert proc.stderr is not None
            deadline = time.monotonic() + START_BUDGET_S
            while "opsmcp sandbox:" not in proc.stderr.readline():
                assert time.monotonic() < deadline and proc.poll() is None
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=STOP_BUDGET_S)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    assert took < STOP_BUDGET_S
    assert "opsmcp: stopped (Ctrl-C)" in err, err
    assert "Traceback" not in err, err


def test_client_leaving_during_sandbox_boot_leaves_no_traceback(tmp_path):
    """Regression: `sandbox start-up failed ... RuntimeError: can't register atexit after shutdown`."""
    proc = subprocess.Popen([OPSMCP, "serve"], env=clean_env(tmp_path), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdin is not None
    deadline = time.monotonic() + START_BUDGET_S
    while "opsmcp stdio:" not in (line := proc.stderr.readline()):  # built; the sandbox is seeding
        assert line and time.monotonic() < deadline
    proc.stdin.close()  # the client goes away
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in err and "start-up failed" not in err, err


def test_killed_server_leaves_its_sandbox_for_the_idle_time_only(tmp_path):
    """SIGKILL of `opsmcp serve` on the sandbox: the shared sandbox (its own process, in its
    own session) outlives it for OPSMCP_SANDBOX_IDLE_SECONDS, for the next server on the
    data dir, then stops by itself and removes its state file."""
    import psutil

    env = {**clean_env(tmp_path), "OPSMCP_SANDBOX_IDLE_SECONDS": "1"}
    state = tmp_path / "data" / "sandbox" / "state.json"
    proc = subprocess.Popen([OPSMCP, "serve"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_BUDGET_S
        while not state.exists():  # a bounded readiness poll for the sandbox
            assert proc.poll() is None and time.monotonic() < deadline, "no sandbox appeared"
            time.sleep(0.05)
        import json

        moto = psutil.Process(json.loads(state.read_text())["pid"])
        assert "opsmcp.sandbox.process" in " ".join(moto.cmdline())
        proc.kill()
        proc.wait(timeout=STOP_BUDGET_S)
        _gone, alive = psutil.wait_procs([moto], timeout=30)
        assert not alive, f"the sandbox outlived its idle time: {alive}"
        assert not state.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
