"""Shared fixtures: a real moto server over HTTP on a free loopback port, a seeded server with
its client, the playbook tests' catalog and headless Chromium (``browser``). Plain helpers
live in ``helpers.py``; test modules import neither each other nor this module.

Tests talk to AWS APIs only through this server (never in-process mocks), so the
boto3 clients, timeouts and error mapping are exercised as in production.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Fake credentials for moto; never real ones. Set before any boto3 import.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)

from helpers import CHROMIUM, DRIVER, FIXTURES, MARKER_ENV, make_settings  # after the fake credentials

#: The quick tier (``scripts/test --quick``, ``pytest -m quick``): unit tests and tests of the
#: server in memory (mcp.Client on build_server, the session's in-process moto server, SQLite
#: files); no child processes, no real Prometheus/Alertmanager/Chromium/ansible runs, no
#: sockets beyond moto's. The full tier (``scripts/test``, what CI runs) runs everything.
QUICK_MODULES = frozenset({
    "test_budget", "test_times", "test_dlq_signatures", "test_series", "test_structure", "test_opensearch_query",
    "test_logstore", "test_readme", "test_config", "test_server_answers", "test_orders", "test_queues",
    "test_approval", "test_prompts_resources", "test_tracing", "test_sdk_seams", "test_logging", "test_aws_calls",
})


def pytest_collection_modifyitems(items):
    """Run every ``async def`` test on anyio's asyncio backend (fixtures set up and torn
    down in the test's own task, which the MCP client's task groups require); mark the tests
    of :data:`QUICK_MODULES` ``quick`` (not those also marked ``slow`` or ``process``)."""
    import inspect

    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            item.add_marker(pytest.mark.anyio)
        module = getattr(item, "module", None)
        if (module is not None and module.__name__.rpartition(".")[2] in QUICK_MODULES
                and not item.get_closest_marker("slow") and not item.get_closest_marker("process")):
            item.add_marker(pytest.mark.quick)


@pytest.fixture(autouse=True)
def stop_shared_sandboxes(request):
    """After each test that used ``tmp_path``: stop the shared sandboxes its ``opsmcp serve``
    processes started there (a sandbox outlives its last server by
    OPSMCP_SANDBOX_IDLE_SECONDS, 600 s by default: without this, every test's sandbox would
    stay up that long)."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        from opsmcp.sandbox.shared import stop

        for state in tmp.rglob("sandbox/state.json"):
            stop(state.parent.parent)


@pytest.fixture(autouse=True, scope="session")
def stop_module_sandboxes(tmp_path_factory):
    """At the end of the run: stop the shared sandboxes of servers that module- or
    session-scoped fixtures started under ``tmp_path_factory`` directories."""
    yield
    from opsmcp.sandbox.shared import stop

    for state in tmp_path_factory.getbasetemp().rglob("sandbox/state.json"):
        stop(state.parent.parent)


@pytest.fixture(scope="session")
def anyio_backend():
    """asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start one moto server for the session; yield its ``http://127.0.0.1:PORT`` URL."""
    from opsmcp.sandbox import start_moto

    server, endpoint = start_moto()
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def fresh_moto(moto_endpoint: str) -> Iterator[str]:
    """The session's moto server with its state reset (moto keeps one in-process state for
    every server in a process, so "fresh" means reset); yields its URL."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10).read()
    yield moto_endpoint


@pytest.fixture
def fixtures_dir() -> Path:
    """The ops_agent fixture directory (tests/fixtures/ops_agent)."""
    assert FIXTURES.is_dir(), f"fixtures missing at {FIXTURES}"
    return FIXTURES


@pytest.fixture
async def seeded(fresh_moto, tmp_path):
    """A fresh moto server seeded with the sandbox scenario, and an in-memory MCP client
    of a server with writes enabled (approval mode ``prompt-or-confirm``). Yields a
    namespace: client, settings, scenario, sqs, ddb."""
    import types

    import boto3
    from mcp import Client

    from opsmcp.sandbox.scenario import build_scenario
    from opsmcp.sandbox.seed import seed_aws
    from opsmcp.server import build_server

    settings = make_settings(fresh_moto, tmp_path, allow_writes=True, write_approval="prompt-or-confirm")
    scenario = build_scenario()
    seed_aws(settings, scenario, metrics=False)
    server, runtime = build_server(settings)
    async with Client(server) as client:
        yield types.SimpleNamespace(
            client=client, settings=settings, scenario=scenario, runtime=runtime,
            sqs=boto3.client("sqs", endpoint_url=fresh_moto, region_name="us-east-1"),
            ddb=boto3.client("dynamodb", endpoint_url=fresh_moto, region_name="us-east-1"),
        )


@pytest.fixture
def marker() -> str:
    """A marker unique to this test: the slow playbook's sleep carries it in its environment."""
    return uuid.uuid4().hex


@pytest.fixture
def test_catalog(tmp_path: Path, marker: str) -> Any:
    """A tiny test-only catalog: a slow playbook (its sleep is tagged with ``marker``) and
    one that fails mid-way."""
    from opsmcp.backends.ansible import load_catalog

    (tmp_path / "slow.yml").write_text(
        textwrap.dedent(
            f"""\
            - hosts: all
              gather_facts: false
              tasks:
                - name: Before
                  ansible.builtin.debug: {{msg: starting}}
                - name: Sleep
                  ansible.builtin.command: "sleep {{{{ seconds }}}}"
                  environment: {{{MARKER_ENV}: "{marker}"}}
                - name: After
                  ansible.builtin.debug: {{msg: never}}
            """
        )
    )
    (tmp_path / "fails.yml").write_text(
        textwrap.dedent(
            """\
            - hosts: all
              gather_facts: false
              tasks:
                - name: Write marker
                  ansible.builtin.copy: {content: "step 1\\n", dest: "{{ marker }}"}
                - name: Break here
                  ansible.builtin.command: "sh -c 'echo disk on fire >&2; exit 3'"
                - name: Never runs
                  ansible.builtin.debug: {msg: unreachable}
            """
        )
    )
    (tmp_path / "catalog.yml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            defaults: {{targets: [localhost], allowed_roots: ["{tmp_path}"]}}
            playbooks:
              - name: slow
                file: slow.yml
                risk: read
                description: Sleeps.
                vars:
                  seconds: {{type: integer, min: 1, max: 60, default: 30}}
              - name: fails_midway
                file: fails.yml
                risk: change
                description: Writes a marker, then fails.
                vars:
                  marker: {{type: path, required: true}}
            """
        )
    )
    return load_catalog(tmp_path / "catalog.yml")


@pytest.fixture(scope="module")
def catalog():
    """The playbook catalog shipped with opsmcp, loaded (``tools/catalog.yml``)."""
    from opsmcp.backends.ansible import load_catalog
    from opsmcp.catalog import packaged_catalog

    return load_catalog(packaged_catalog())



@pytest.fixture
def browser():
    """Debian's Chromium, headless, through chromium-driver (Selenium); quit afterwards. Tests
    that use it skip themselves without :data:`helpers.CHROMIUM` and :data:`helpers.DRIVER`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
