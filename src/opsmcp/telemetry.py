"""Prometheus metrics of tool calls (prometheus-client), served at ``/metrics``.

Each server gets its own :class:`~prometheus_client.CollectorRegistry`, so several servers
in one process (tests, replicas) never share or clash over series.

Series:

- ``opsmcp_tool_calls_total{tool, outcome}``: ``outcome`` is ``ok``, ``tool_error`` (an
  anticipated failure: bad input, not found, backend down...), ``cancelled`` or
  ``internal_error`` (:func:`outcome_of`).
- ``opsmcp_tool_duration_seconds{tool}``: latency histogram of every call.
- ``opsmcp_backend_errors_total{tool, error}``: anticipated failures by
  :class:`~opsmcp.errors.OpsError` subclass (``BackendUnavailable``, ``NotFound``...).
- ``opsmcp_log_queries_total{backend}``, ``opsmcp_log_bytes_scanned_total{backend}``,
  ``opsmcp_log_records_scanned_total{backend}``, ``opsmcp_log_records_matched_total{backend}``,
  ``opsmcp_log_queries_stopped_total{backend}``: what the log engine read (CloudWatch Logs
  Insights bills per GB scanned), from the backend's :class:`~opsmcp.backends.scancost.ScanUsage`
  (:meth:`ToolStats.watch`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from opsmcp.errors import OpsError

#: Latency buckets in seconds: tool calls range from a cached lookup to a playbook run.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _ops_error(exc: BaseException | None) -> OpsError | None:
    """The :class:`OpsError` in ``exc``'s cause chain (the choke point re-raises it as a ToolError)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OpsError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def outcome_of(ok: bool, error: BaseException | None) -> str:
    """A call's outcome label: ``ok``; ``tool_error`` (an anticipated failure: an OpsError in
    ``error``'s cause chain); ``cancelled`` (the client or the server cancelled the call); else
    ``internal_error``. The same labels in ``/metrics`` and the per-call log line."""
    if ok:
        return "ok"
    if error is not None and type(error).__name__ == "CancelledError":
        return "cancelled"
    return "tool_error" if error is None or _ops_error(error) is not None else "internal_error"


class ToolStats:
    """Tool-call counters and latency histograms in a registry of their own.

    prometheus-client is imported, and the registry built, on the first call recorded (or
    the first scrape), not when the server is built: ``tools/list`` never needs it.
    """

    def __init__(self) -> None:
        self._registry: Any = None
        self._lock = threading.Lock()
        self._scan_sources: list[Callable[[], Iterable[Any]]] = []

    def watch(self, source: Callable[[], Iterable[Any]]) -> None:
        """Export what ``source()`` returns (:class:`~opsmcp.backends.scancost.ScanTotals`, one
        per log backend) as the ``opsmcp_log_*`` counters, read at each scrape."""
        self._scan_sources.append(source)

    def _build(self) -> Any:
        with self._lock:
            if self._registry is None:
                from prometheus_client import CollectorRegistry, Counter, Histogram

                registry = CollectorRegistry(auto_describe=True)
                self._calls = Counter("opsmcp_tool_calls", "Tool calls by tool and outcome.", ["tool", "outcome"],
                                      registry=registry)
                self._duration = Histogram("opsmcp_tool_duration_seconds", "Tool call latency in seconds.",
                                           ["tool"], buckets=BUCKETS, registry=registry)
                self._backend_errors = Counter("opsmcp_backend_errors",
                                               "Anticipated tool failures by OpsError class.", ["tool", "error"],
                                               registry=registry)
                registry.register(_ScanCollector(self._scan_sources))
                self._registry = registry
            return self._registry

    @property
    def registry(self) -> Any:
        """The :class:`~prometheus_client.CollectorRegistry` of this server's series."""
        return self._registry if self._registry is not None else self._build()

    @property
    def content_type(self) -> str:
        """The media type of :meth:`render`'s output (Prometheus text exposition format)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return str(CONTENT_TYPE_LATEST)

    def record(self, tool: str, elapsed: float, ok: bool, error: BaseException | None = None) -> None:
        """Count one call of ``tool`` that took ``elapsed`` seconds; ``error`` is what it raised
        (an OpsError, or a ToolError caused by one, is an anticipated failure)."""
        ops = None if ok else _ops_error(error)
        outcome = outcome_of(ok, error)
        _ = self.registry  # the series exist once the registry does (built on first use)
        self._calls.labels(tool=tool, outcome=outcome).inc()
        self._duration.labels(tool=tool).observe(elapsed)
        if ops is not None:
            self._backend_errors.labels(tool=tool, error=type(ops).__name__).inc()

    def render(self) -> bytes:
        """Every series in the Prometheus text exposition format."""
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _ScanCollector:
    """The ``opsmcp_log_*`` counters, read from the watched backends at each scrape."""

    SERIES = (("queries", "opsmcp_log_queries", "Log engine queries."),
              ("bytes_scanned", "opsmcp_log_bytes_scanned", "Bytes the log engine scanned (Insights bills them)."),
              ("records_scanned", "opsmcp_log_records_scanned", "Log records (lines) the log engine scanned."),
              ("records_matched", "opsmcp_log_records_matched", "Log records the log engine matched."),
              ("stopped", "opsmcp_log_queries_stopped", "Log engine queries stopped by a bound or a cancelled call."))

    def __init__(self, sources: list[Callable[[], Iterable[Any]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily

        totals = [t for source in self.sources for t in source()]
        for attr, name, doc in self.SERIES:
            family = CounterMetricFamily(name, doc, labels=["backend"])
            for t in totals:
                family.add_metric([t.backend], float(getattr(t, attr)))
            yield family

    def describe(self) -> Iterable[Any]:
        return []
