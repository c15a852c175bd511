"""Shared fixtures: a real moto server over HTTP on a free loopback port, and Settings for it.

Tests talk to AWS APIs only through this server (never in-process mocks), so the
boto3 clients, timeouts and error mapping are exercised as in production.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fake credentials for moto; never real ones. Set before any boto3 import.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_EC2_METADATA_DISABLED="true",
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ops_agent"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """Start one moto server for the session; yield its ``http://127.0.0.1:PORT`` URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def fresh_moto() -> Iterator[str]:
    """A moto server of this test's own (empty state); yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def make_settings(endpoint: str, data_dir: Path, **overrides):
    """Settings pointing every AWS client at ``endpoint`` with data under ``data_dir``."""
    from opsmcp.config import Settings

    return Settings(aws_endpoint_url=endpoint, aws_region="us-east-1", data_dir=data_dir, **overrides)


@pytest.fixture
def fixtures_dir() -> Path:
    """The ops_agent fixture directory (../shared/fixtures/ops_agent)."""
    assert FIXTURES.is_dir(), f"fixtures missing at {FIXTURES}"
    return FIXTURES
