"""Cold start: building the server loads no library a tool call or an option needs later
(boto3, httpx, rich, SQLite, prometheus-client, the OpenTelemetry SDK, psutil), and finding
AWS keys in the environment does not import boto3. Each of these once cost tens to hundreds
of ms before the first ``tools/list`` answer (docs/performance.md, "Cold start")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

LATER = ("boto3", "botocore", "httpx", "rich", "sqlite3", "prometheus_client", "opentelemetry.sdk", "psutil",
         "drain3", "moto")

BUILD = """
import json, logging, sys
logging.getLogger().addHandler(logging.StreamHandler())  # as `opsmcp serve` sets up its own first
from opsmcp.config import Settings
from opsmcp.server import build_server
build_server(Settings())
from opsmcp.backends.aws import credentials_problem
problem = credentials_problem(Settings())
print(json.dumps({"problem": problem, "loaded": [m for m in sys.argv[1:] if m in sys.modules]}))
"""


def _run(tmp_path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_", "OTEL_"))}
    clean.update(HOME=str(tmp_path), OPSMCP_DATA_DIR=str(tmp_path / "data"), **env)
    done = subprocess.run([sys.executable, "-c", BUILD, *LATER], env=clean, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def test_building_the_server_and_finding_keys_in_the_environment_load_nothing_for_later(tmp_path):
    out = _run(tmp_path, OPSMCP_AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="k",
               AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1")
    assert out == {"problem": None, "loaded": []}


def test_a_named_profile_is_still_looked_up_through_boto3(tmp_path):
    """Keys in the environment do not hide a profile that does not exist: boto3 skips the
    environment when a profile is named, and so does the shortcut."""
    out = _run(tmp_path, OPSMCP_AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="k",
               AWS_SECRET_ACCESS_KEY="s", AWS_PROFILE="nosuchprofile")
    assert "AWS_PROFILE=nosuchprofile names a profile that is not in" in out["problem"]
    assert "boto3" in out["loaded"]


GC = """
import gc, json
from opsmcp.calls import heap
heap.started()  # not paused: nothing happens
untouched = (gc.isenabled(), gc.get_freeze_count())
heap.pause_for_start_up()
paused = gc.isenabled()
heap.started()
print(json.dumps({"untouched": untouched, "paused": paused, "after": [gc.isenabled(), gc.get_freeze_count() > 1000]}))
"""


def test_a_server_process_starts_with_the_collector_paused_then_frozen_and_on():
    done = subprocess.run([sys.executable, "-c", GC], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == {"untouched": [True, 0], "paused": False, "after": [True, True]}


def test_opsmcp_serve_answers_with_the_collector_back_on(tmp_path):
    """The console script pauses the collector for start-up; the running server has it on
    (a server that never turned it back on would grow without bound on cyclic garbage)."""
    import textwrap

    script = textwrap.dedent("""
        import gc, sys
        from opsmcp.calls import heap
        original = heap.started
        def started():
            original()
            print("gc on after start-up:", gc.isenabled(), "frozen:", gc.get_freeze_count() > 1000, file=sys.stderr)
        heap.started = started
        sys.argv = ["opsmcp", "serve"]
        from opsmcp.cli import main
        main()
    """)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPSMCP_"))}
    clean.update(HOME=str(tmp_path), OPSMCP_DATA_DIR=str(tmp_path / "data"), AWS_ENDPOINT_URL="http://127.0.0.1:9",
                 AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1")
    done = subprocess.run([sys.executable, "-c", script], env=clean, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    assert "gc on after start-up: True frozen: True" in done.stderr, done.stderr
