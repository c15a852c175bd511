"""OpenTelemetry traces, configured by OpenTelemetry's own environment variables.

With the ``otel`` extra installed (``pip install 'opsmcp[otel]'``: the OpenTelemetry SDK, the
OTLP/HTTP exporter and the botocore and httpx instrumentations) and
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set,
:func:`start` installs a tracer provider that exports spans over OTLP/HTTP:

- one span per MCP request, ``tools/call <tool>`` for a tool call, of kind SERVER, with the
  MCP and GenAI semantic-convention attributes (``mcp.method.name``, ``gen_ai.operation.name
  = execute_tool``, ``gen_ai.tool.name``, ``jsonrpc.request.id``, ``error.type``): the mcp
  SDK's own middleware makes it, and parents it on the trace context the client sent in the
  request's ``params._meta`` (``traceparent``/``tracestate``, SEP-414) when it sent one;
- a child span per AWS call (the botocore instrumentation: ``SQS.ReceiveMessage``...) and per
  Prometheus/Alertmanager request (the httpx instrumentation), because opsmcp's worker
  threads carry the caller's context.

Everything else is OpenTelemetry's standard configuration: ``OTEL_SERVICE_NAME`` (default
``opsmcp``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, and ``OTEL_SDK_DISABLED=true`` to switch it off.
Without the extra or without an endpoint nothing is imported beyond what the mcp SDK
already imports (``opentelemetry-api``, whose spans are then no-ops), so cold start pays
nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("opsmcp.tracing")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
MISSING_EXTRA = ("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed: "
                 "pip install 'opsmcp[otel]' to export traces")

_provider: Any = None


def wanted(env: dict[str, str] | None = None) -> bool:
    """True when the environment asks for traces: an OTLP endpoint is set and the SDK is not
    disabled (``OTEL_SDK_DISABLED``)."""
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARS)


def start(exporter: Any = None) -> bool:
    """Install the tracer provider and the botocore/httpx instrumentations, once per process.

    Args:
        exporter: a span exporter to use instead of OTLP/HTTP from the environment (tests
            pass the SDK's in-memory exporter; spans are then exported as each one ends).

    Returns True when tracing is on (now or already); False when the environment does not
    ask for it (and no ``exporter`` is given) or the ``otel`` extra is missing (logged).
    """
    global _provider
    if _provider is not None:
        return True
    if exporter is None and not wanted():
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import OTELResourceDetector, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning(MISSING_EXTRA)
        return False
    service = os.environ.get("OTEL_SERVICE_NAME") or "opsmcp"
    resource = Resource.create({"service.name": service}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument()
    _provider = provider
    return True


def _instrument() -> None:
    """Child spans for AWS calls (botocore) and HTTP calls (httpx); each one is optional."""
    try:
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

        BotocoreInstrumentor().instrument()
    except ImportError:
        log.info("opentelemetry-instrumentation-botocore is not installed: no spans for AWS calls")
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument()
    except ImportError:
        log.info("opentelemetry-instrumentation-httpx is not installed: no spans for HTTP calls")


def flush(timeout_seconds: float = 5.0) -> None:
    """Export the spans still buffered (before the process exits); no-op without tracing."""
    if _provider is not None:
        _provider.force_flush(int(timeout_seconds * 1000))


def stop() -> None:
    """Export what is buffered, shut the provider down and remove the instrumentations (the
    OpenTelemetry API keeps its global provider, now exporting nothing). For tests."""
    global _provider
    if _provider is None:
        return
    for module, name in (("opentelemetry.instrumentation.botocore", "BotocoreInstrumentor"),
                         ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor")):
        try:
            instrumentor = getattr(__import__(module, fromlist=[name]), name)()
        except ImportError:
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()
    _provider.shutdown()
    _provider = None
