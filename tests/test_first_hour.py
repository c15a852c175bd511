"""A new user's wrong inputs get one line that names the fix (issue 24): a profile that does
not exist, a local endpoint without keys, a busy or impossible port, `opsmcp token add` as
the README shows it, an unknown tool; the approval secret shared by one installation's
processes; /readyz that says whether the backends answer."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import helpers
import httpx
import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.anyio
OPSMCP = str(Path(sys.executable).parent / "opsmcp")
BUDGET_S = 120.0


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """:func:`helpers.clean_env` with no EC2 metadata lookup (no AWS at all, quickly)."""
    return helpers.clean_env(home, **{"AWS_EC2_METADATA_DISABLED": "true", **extra})


def run(home: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OPSMCP, *argv], env=clean_env(home, **env), capture_output=True, text=True,
                          timeout=BUDGET_S, stdin=subprocess.DEVNULL)


def test_doctor_with_a_missing_profile_fails_one_check_with_the_fix(tmp_path):
    """The README's Claude Desktop snippet (AWS_PROFILE=ops-readonly) on a machine without
    that profile. Before: one line 'Failed to run `opsmcp doctor`: ProfileNotFound' and no
    checks."""
    proc = run(tmp_path, "doctor", "--toolsets", "queues,orders", AWS_PROFILE="ops-readonly")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    creds = next(line for line in lines if line.startswith("FAIL credentials"))
    assert "AWS_PROFILE=ops-readonly" in creds and "aws configure --profile ops-readonly" in creds
    assert any(line.startswith("FAIL sqs") for line in lines)  # the other checks still run
    assert any(line.startswith(("OK   audit", "FAIL audit")) for line in lines)
    assert "Traceback" not in proc.stderr + proc.stdout


async def test_serve_with_a_missing_profile_answers_every_call_with_the_fix(tmp_path):
    """Before: serve started, and every call returned 'Internal error ... ProfileNotFound ...
    This is an opsmcp bug' with a 40-line traceback on stderr."""
    env = clean_env(tmp_path, AWS_PROFILE="ops-readonly")
    params = StdioServerParameters(command=OPSMCP, args=["serve", "--toolsets", "queues"], env=env)
    async with Client(params) as client:
        res = await client.call_tool("list_queues", {})
    text = res.content[0].text
    assert res.is_error and "aws configure --profile ops-readonly" in text and "opsmcp bug" not in text, text


def test_readyz_says_whether_the_backends_answer(tmp_path):
    """Before: /readyz said ready while every call failed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = clean_env(tmp_path, AWS_ENDPOINT_URL=helpers.DEAD_ENDPOINT, OPSMCP_BACKEND_TIMEOUT_SECONDS="2")
    proc = subprocess.Popen([OPSMCP, "serve", "--transport", "http", "--port", str(port), "--toolsets", "queues"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import time

        deadline = time.monotonic() + BUDGET_S
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)  # a bounded readiness poll
        assert answer.status_code == 503, answer.text
        assert "Could not reach" in answer.json()["reason"]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200  # alive, not ready
        proc.terminate()
        banner = proc.communicate(timeout=30)[1]
        assert f"the console at http://127.0.0.1:{port}/ (Ctrl-C to stop)" in banner, banner  # the README's banner
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def test_the_readme_python_client_example_runs_as_written(tmp_path):
    """The README's "Python, `mcp` 2.x" example, run word for word in a fresh process with
    ``opsmcp`` on PATH and a HOME of its own (the SDK hands the server only HOME, PATH and a few
    more, so the server uses that HOME's default data dir and starts its sandbox there): it
    lists the tools and prints the first failure group of ``analyze_dlq``. Then ``opsmcp
    sandbox stop``, as the README says, ends the sandbox it left for its idle time."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("**Python, `mcp` 2.x**")
    begin = readme.index("```python\n", start) + len("```python\n")
    code = readme[begin:readme.index("\n```", begin)]
    env = clean_env(tmp_path)
    env.pop("OPSMCP_DATA_DIR")
    env["PATH"] = f"{Path(OPSMCP).parent}:{env.get('PATH', '')}"
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=BUDGET_S, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-3000:]
        tools, group = done.stdout.splitlines()[:2]
        assert "'analyze_dlq'" in tools and "'get_order'" in tools, tools
        assert "'signature'" in group and "'count'" in group, group
        assert "Traceback" not in done.stderr
    finally:
        stop = subprocess.run([OPSMCP, "sandbox", "stop"], env=env, capture_output=True, text=True,
                              timeout=BUDGET_S, stdin=subprocess.DEVNULL)
    assert stop.returncode == 0, stop.stderr


def test_a_local_endpoint_without_keys_uses_localstacks_test_credentials(fresh_moto, tmp_path):
    """Before: 'Unable to locate credentials' for AWS_ENDPOINT_URL=http://127.0.0.1:... and no keys."""
    proc = run(tmp_path, "doctor", "--toolsets", "queues", AWS_ENDPOINT_URL=fresh_moto)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "using LocalStack's test credentials (AWS_ACCESS_KEY_ID=test)" in proc.stderr
    assert "OK   sqs:" in proc.stdout and "OK   credentials" in proc.stdout


def test_a_busy_port_is_one_line_before_any_sandbox_starts(tmp_path):
    """Before: a second serve seeded a whole sandbox, printed 'streamable HTTP at ...' and
    'ready ... Try:', then died with uvicorn's errno 98 and rc 3."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run(tmp_path, "serve", "--transport", "http", "--port", str(port))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port} on 127.0.0.1 is already in use" in lines[0] and "--port" in lines[0]
    assert not (tmp_path / "data" / "sandbox").exists()  # nothing started


@pytest.mark.parametrize("port", ["99999", "0", "http"])
def test_an_impossible_port_is_a_usage_error(tmp_path, port):
    """Before (--port 99999): a uvicorn traceback and 'OverflowError ... this is an opsmcp bug'."""
    proc = run(tmp_path, "serve", "--transport", "http", "--port", port)
    assert proc.returncode == 2
    assert "is not a port number: use 1-65535" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "sandbox").exists()


def test_token_add_as_the_readme_shows_it_uses_the_data_dir(tmp_path):
    """Before: 'no tokens file: set OPSMCP_TOKENS_FILE or pass --file'. Now the data dir's
    tokens file, named on stderr, which `opsmcp serve` then reads."""
    proc = run(tmp_path, "token", "add", "alice")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "data" / "tokens.jsonl"
    assert str(path) in proc.stderr and "`opsmcp serve` on this data dir reads it" in proc.stderr
    token = proc.stdout.strip()
    assert path.exists() and token not in path.read_text()  # only its hash is kept
    from opsmcp.cli import _settings, build_parser

    args = build_parser().parse_args(["serve", "--data-dir", str(tmp_path / "data")])
    assert _settings(args).tokens_file == path


async def test_an_unknown_tool_names_the_closest_ones(fresh_moto, tmp_path):
    """Before: 'Unknown tool: list_queue', suggesting nothing (prompts and resources did)."""
    from helpers import make_settings
    from opsmcp.server import build_server

    server, _ = build_server(make_settings(fresh_moto, tmp_path))
    async with Client(server) as client:
        res = await client.call_tool("list_queue", {})
        text = res.content[0].text
        assert res.is_error and "Did you mean 'list_queues'" in text and "analyze_dlq" in text, text
        res = await client.call_tool("redrive_dlq", {"queue": "x"})  # exists, but writes are off: says so
        assert res.is_error and "--allow-writes" in res.content[0].text


def test_the_approval_secret_is_made_once_per_data_dir(tmp_path):
    """Eight servers starting together agree on one secret, written whole, mode 0600."""
    from opsmcp.calls.secret_file import stored_secret

    got: list[bytes] = []
    threads = [threading.Thread(target=lambda: got.append(stored_secret(tmp_path / "data"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and len(got[0]) == 64
    path = tmp_path / "data" / "approval.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["approval.secret"]  # no temporary file left


async def test_a_token_from_one_process_is_accepted_by_another_of_the_same_data_dir(fresh_moto, tmp_path):
    """Two servers of one installation (no OPSMCP_APPROVAL_SECRET): the preview's token from
    the first confirms the write on the second. Before: 'approval_token is not valid (...
    another OPSMCP_APPROVAL_SECRET)'. A server of another data dir still refuses it."""
    from helpers import make_settings
    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws
    from opsmcp.server import build_server

    settings = make_settings(fresh_moto, tmp_path / "one", allow_writes=True, write_approval="prompt-or-confirm")
    seed_aws(settings, build_scenario(), metrics=False)
    first, _ = build_server(settings)
    second, _ = build_server(settings)
    other, _ = build_server(settings.model_copy(update={"data_dir": tmp_path / "two"}))
    args = {"queue": "order-cancellation-queue-dlq"}
    async with Client(first) as one:
        preview = (await one.call_tool("redrive_dlq", args)).structured_content
    token = preview["approval"]["token"]
    real = {**args, "dry_run": False, "confirm": True, "approval_token": token}
    async with Client(other) as three:
        refused = await three.call_tool("redrive_dlq", real)
        assert refused.is_error and "not valid" in refused.content[0].text
    async with Client(second) as two:
        done = await two.call_tool("redrive_dlq", real)
        assert not done.is_error, done.content
        assert done.structured_content["moved"] == 8
