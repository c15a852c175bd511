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
