"""OpenTelemetry traces: one SERVER span per tool call with the MCP/GenAI attributes, parented on
the trace context the client sends, AWS calls as child spans; exported in memory (the SDK's
exporter) and over OTLP/HTTP to a local receiver from a real ``opsmcp serve``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import OPSMCP, call
from mcp import Client, StdioServerParameters

from opsmcp import tracing

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def spans() -> Iterator[Any]:
    """Tracing on, into the SDK's in-memory exporter, for this module; off afterwards."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    assert tracing.start(exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.stop()


def _by_name(finished: Any, name: str) -> list[Any]:
    return [s for s in finished if s.name == name]


async def test_a_tool_call_is_one_server_span_under_the_callers_trace_with_aws_child_spans(spans, seeded):
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    spans.clear()
    with trace.get_tracer("test-agent").start_as_current_span("agent turn") as turn:
        await call(seeded.client, "list_queues", prefix="order")
    finished = spans.get_finished_spans()
    [server] = _by_name(finished, "tools/call list_queues")
    assert server.kind == SpanKind.SERVER
    attrs = dict(server.attributes)
    assert attrs["mcp.method.name"] == "tools/call" and attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "list_queues" and attrs["jsonrpc.request.id"]
    # the client sent its context in params._meta: the server span is in the caller's trace
    assert server.context.trace_id == turn.get_span_context().trace_id
    assert server.parent is not None and server.parent.span_id != server.context.span_id
    aws = [s for s in finished if s.attributes.get("rpc.service") == "SQS"]
    assert {s.attributes.get("rpc.method") for s in aws} >= {"ListQueues", "GetQueueAttributes"}
    ids = {s.context.span_id: s for s in finished}

    def under_server(span: Any) -> bool:
        while span.parent is not None:
            if span.parent.span_id == server.context.span_id:
                return True
            span = ids.get(span.parent.span_id)
            if span is None:
                return False
        return False

    assert all(under_server(s) and s.context.trace_id == server.context.trace_id for s in aws)


async def test_a_failing_tool_call_marks_its_span(spans, seeded):
    from opentelemetry.trace import StatusCode

    spans.clear()
    result = await seeded.client.call_tool("get_order", {"order_id": "no-such-order"})
    assert result.is_error
    [server] = _by_name(spans.get_finished_spans(), "tools/call get_order")
    assert server.status.status_code == StatusCode.ERROR and server.attributes["error.type"] == "tool_error"


def test_without_an_endpoint_tracing_stays_off_and_imports_no_sdk(tmp_path: Path) -> None:
    code = ("import sys; from opsmcp import tracing; on = tracing.start(); "
            "print(on, 'opentelemetry.sdk' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"})


class Receiver:
    """A local OTLP/HTTP receiver: decodes every ``POST /v1/traces`` (protobuf) into spans."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self.spans: list[tuple[str, Any]] = []  # (service.name, span)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    service = next((a.value.string_value for a in rs.resource.attributes
                                    if a.key == "service.name"), "")
                    for ss in rs.scope_spans:
                        receiver.spans += [(service, s) for s in ss.spans]
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.mark.process
async def test_a_real_server_exports_its_spans_over_otlp_http(fresh_moto: str, tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPSMCP_", "OTEL_"))}
        env.update(AWS_ENDPOINT_URL=fresh_moto, OPSMCP_DATA_DIR=str(tmp_path), OPSMCP_TOOLSETS="queues",
                   OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_SERVICE_NAME="opsmcp-under-test",
                   OTEL_BSP_SCHEDULE_DELAY="200")
        params = StdioServerParameters(command=OPSMCP, args=["serve"], env=env)
        async with Client(params) as client:
            await call(client, "list_queues")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(s.name == "tools/call list_queues" for _, s in receiver.spans):
            time.sleep(0.1)  # the server flushes its spans as it exits; poll with a deadline
    finally:
        receiver.close()
    names = {s.name for _, s in receiver.spans}
    assert "tools/call list_queues" in names, names
    [server] = [s for _, s in receiver.spans if s.name == "tools/call list_queues"]
    assert {service for service, _ in receiver.spans} == {"opsmcp-under-test"}
    children = [s for _, s in receiver.spans if s.parent_span_id == server.span_id]
    assert any(dict((a.key, a.value.string_value) for a in s.attributes).get("rpc.service") == "SQS"
               for s in children), names
