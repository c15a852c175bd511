"""The prometheus toolset against a real Prometheus (Debian's package) on a free loopback port,
backfilled with six hours of known values (tests/promstack.py)."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import promstack
from conftest import ToolFailed, call
from opsmcp.backends.prometheus import PrometheusBackend
from opsmcp.config import Settings
from opsmcp.errors import BackendUnavailable, InvalidInput
from opsmcp.times import iso
from opsmcp.toolsets.prometheus import PrometheusTools

pytestmark = pytest.mark.skipif(not (promstack.PROMETHEUS and promstack.PROMTOOL), reason=promstack.MISSING)


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    """(Prometheus URL, History) for the module."""
    end = int(time.time()) // 60 * 60 - 120
    server, hist = promstack.start_prometheus(tmp_path_factory.mktemp("prom"), end=end)
    try:
        yield server.url, hist
    finally:
        promstack.stop(server.proc)


def _settings(tmp_path, url: str, **extra) -> Settings:
    return Settings(data_dir=tmp_path, prometheus_url=url, toolsets=["prometheus"], backend_timeout_seconds=3, **extra)


@pytest.fixture
def tools(prom, tmp_path):
    url, _ = prom
    settings = _settings(tmp_path, url)
    return PrometheusTools(settings, PrometheusBackend.from_settings(settings))


def _window(hist) -> dict[str, str]:
    return {"start": iso(datetime.fromtimestamp(hist.start, UTC)), "end": iso(datetime.fromtimestamp(hist.end, UTC))}


async def test_exact_values_summary_and_downsampling(tools, prom):
    _, hist = prom
    r = await tools.query_promql("sqs_dlq_depth", **_window(hist), step_seconds=60)
    assert r.series_count == 1 and r.series_cut == 0 and r.step_seconds == 60
    s = r.series[0]
    assert s.labels == {"__name__": "sqs_dlq_depth", "queue": "order-queue-dlq"}
    assert s.point_count == promstack.N_POINTS
    summary = s.summary
    assert summary is not None
    assert (summary.min, summary.max, summary.last) == (0.0, 718.0, 718.0)
    assert summary.mean == 359.0
    assert summary.max_time == iso(datetime.fromtimestamp(hist.end, UTC))
    assert summary.slope_per_hour == pytest.approx(120.0, rel=1e-9)
    assert summary.anomaly_count == 0
    # 360 points shown as 120 means of 3 (a gauge): first shown = mean(0, 2, 4) = 2
    assert s.downsampled == "mean of 3" and len(s.points) == 120
    assert s.points[0].value == 2.0 and s.points[-1].value == 716.0
    assert r.truncated and any("downsampled" in n for n in r.notes)


async def test_counter_downsamples_to_its_last_value_and_max_to_max(tools, prom):
    _, hist = prom
    r = await tools.query_promql("orders_processed_total", **_window(hist), step_seconds=60)
    s = r.series[0]
    assert s.downsampled == "last of 3"
    assert s.points[0].value == promstack.processed_total(2)
    r = await tools.query_promql("max_over_time(app_latency_seconds[1m])", **_window(hist), step_seconds=60)
    s = r.series[0]
    assert s.downsampled == "maximum of 3"
    assert max(p.value for p in s.points) == 2.5


async def test_step_and_spike_in_summary(tools, prom):
    _, hist = prom
    r = await tools.query_promql("app_errors_per_second", **_window(hist), step_seconds=60)
    summary = r.series[0].summary
    assert summary.first_fifth_mean == 0.5 and summary.last_fifth_mean == 5.0 and summary.change == 4.5
    assert summary.change_pct == 900.0
    r = await tools.query_promql("app_latency_seconds", **_window(hist), step_seconds=60)
    summary = r.series[0].summary
    assert summary.anomaly_count == 1
    assert summary.anomalies[0].time == iso(datetime.fromtimestamp(hist.t(promstack.SPIKE_AT), UTC))
    assert summary.anomalies[0].value == 2.5


async def test_threshold_projection(tools, prom):
    _, hist = prom
    r = await tools.query_promql("sqs_dlq_depth", **_window(hist), step_seconds=60, threshold=1000)
    summary = r.series[0].summary
    expected = datetime.fromtimestamp(hist.end, UTC) + timedelta(hours=(1000 - 718) / 120)
    got = datetime.fromisoformat(summary.reaches_threshold_at.replace("Z", "+00:00"))
    assert abs((got - expected).total_seconds()) < 1
    r = await tools.query_promql("sqs_dlq_depth", **_window(hist), step_seconds=60, threshold=100)
    crossed = r.series[0].summary.reaches_threshold_at  # 100 was crossed at sample 50 (value 100)
    assert crossed == iso(datetime.fromtimestamp(hist.t(50), UTC))


async def test_series_cap_keeps_highest_peaks_and_hints_aggregation(tools, prom):
    _, hist = prom
    r = await tools.query_promql("queue_depth", **_window(hist), step_seconds=300)
    assert r.series_count == 24 and r.series_cut == 4 and len(r.series) == 20 and r.truncated
    kept = {s.labels["queue"] for s in r.series}
    assert kept == {f"q{q:02d}" for q in range(4, 24)}
    assert r.series[0].labels["queue"] == "q23"
    assert any("sum by (team) (queue_depth)" in n for n in r.notes)


async def test_step_widened_to_prometheus_point_limit(tools, prom):
    _, hist = prom
    end = datetime.fromtimestamp(hist.end, UTC)
    r = await tools.query_promql("sqs_dlq_depth", start=iso(end - timedelta(days=10)), end=iso(end), step_seconds=60)
    assert r.step_seconds == 79  # ceil(864000 / 11000)
    assert any("step widened from 60 s to 79 s" in n for n in r.notes)
    # the last point of the 79-s grid is at most 79 s before the end: the value 2 minutes old at worst
    assert 714.0 <= r.series[0].summary.max <= 718.0


async def test_bad_query_returns_prometheus_error_with_position(tools):
    with pytest.raises(InvalidInput) as exc:
        await tools.query_promql("sum(rate(sqs_dlq_depth[5m])")
    text = str(exc.value)
    assert "bad_data" in text and "parse error" in text and "1:" in text
    with pytest.raises(InvalidInput):
        await tools.query_promql("up", threshold=float("inf"))
    with pytest.raises(InvalidInput):
        await tools.query_promql("   ")
    with pytest.raises(InvalidInput):  # a lone surrogate never reaches the internal-error path
        await tools.query_promql("up{job=\"\ud800\"}")
    with pytest.raises(InvalidInput):
        await tools.label_values("job", match="{job=\"\ud800\"}")


async def test_instant_vector_scalar_and_metadata(tools, prom):
    _, hist = prom
    at = iso(datetime.fromtimestamp(hist.end, UTC))
    r = await tools.promql_instant("sqs_dlq_depth", time=at)
    assert r.result_type == "vector" and r.samples[0].value == 718.0
    r = await tools.promql_instant("queue_depth", time=at)
    assert r.sample_count == 24 and r.samples[0].labels["queue"] == "q23"
    r = await tools.promql_instant("1 + 1")
    assert r.result_type == "scalar" and r.samples[0].value == 2.0
    listed = await tools.list_prometheus_metrics(match="dlq")
    assert [m.name for m in listed.metrics] == ["sqs_dlq_depth"]
    info = listed.metrics[0]
    assert info.labels == ["queue"] and info.type is None  # backfilled: no metadata
    # metadata exists for scraped metrics (Prometheus scrapes itself every second)
    deadline = time.monotonic() + 60
    while True:
        listed = await tools.list_prometheus_metrics(match="prometheus_build_info")
        if (listed.metrics and listed.metrics[0].type) or time.monotonic() > deadline:
            break
        await anyio.sleep(0.1)
    info = listed.metrics[0]
    assert info.type == "gauge" and info.help and "built" in info.help
    assert {"version", "instance", "job"} <= set(info.labels)
    listed = await tools.list_prometheus_metrics(limit=2)
    assert listed.total >= 5 and len(listed.metrics) == 2 and listed.truncated
    values = await tools.label_values("queue", match="queue_depth")
    assert values.total == 24 and values.values[0] == "q00"
    with pytest.raises(InvalidInput):
        await tools.label_values("bad-label")


async def test_histogram_series_get_their_familys_type_and_help(tools):
    """Regression: list_prometheus_metrics asked /api/v1/metadata for ``..._bucket``; Prometheus
    keys metadata by the metric family (``..._seconds``), so histogram and summary series
    listed with no type and no help."""
    family = "prometheus_http_request_duration_seconds"
    deadline = time.monotonic() + 60
    while True:  # Prometheus scrapes itself every second: metadata exists after its first scrape
        listed = await tools.list_prometheus_metrics(match=family)
        if (all(m.type for m in listed.metrics) and len(listed.metrics) == 3) or time.monotonic() > deadline:
            break
        await anyio.sleep(0.2)
    got = {m.name: (m.type, bool(m.help)) for m in listed.metrics}
    assert got == {f"{family}_{part}": ("histogram", True) for part in ("bucket", "count", "sum")}, got
    summary = await tools.list_prometheus_metrics(match="go_gc_duration_seconds_count")
    assert [(m.type, bool(m.help)) for m in summary.metrics] == [("summary", True)]


async def test_unreachable_and_silent_servers_fail_within_the_timeout(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    tools = PrometheusTools(_settings(tmp_path, url), PrometheusBackend(url, timeout=2))
    with pytest.raises(BackendUnavailable) as exc:
        await tools.query_promql("up")
    assert url in str(exc.value)
    # a server that accepts connections but never answers: the read timeout bounds the call
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        tools = PrometheusTools(_settings(tmp_path, url), PrometheusBackend(url, timeout=1.5))
        began = time.monotonic()
        with pytest.raises(BackendUnavailable) as exc:
            await tools.promql_instant("up")
        assert time.monotonic() - began < 5
        assert url in str(exc.value) and "did not answer within 1.5 s" in str(exc.value)


async def test_through_mcp_client_and_answer_size(prom, tmp_path):
    from mcp import Client

    from opsmcp.server import build_server

    url, hist = prom
    end = datetime.fromtimestamp(hist.end, UTC)
    server, runtime = build_server(_settings(tmp_path, url))
    assert set(runtime.tools) == {"query_promql", "promql_instant", "list_prometheus_metrics", "label_values"}
    async with Client(server) as client:
        out = await call(client, "query_promql", query="queue_depth",
                         start=iso(end - timedelta(hours=6)), end=iso(end), step_seconds=15)
        size = len(json.dumps(out))
        assert out["series_count"] == 24 and len(out["series"]) == 20
        assert size <= runtime.settings.max_result_bytes
        with pytest.raises(ToolFailed) as exc:
            await call(client, "query_promql", query="rate(sqs_dlq_depth[5m]")
        assert "bad_data" in str(exc.value) and "Next step" in str(exc.value)
    # without a URL the toolset is not registered
    _, bare = build_server(Settings(data_dir=tmp_path, toolsets=["prometheus"]))
    assert not bare.tools


def test_doctor_checks_prometheus_alertmanager_and_the_webhook(prom, tmp_path, monkeypatch, capsys):
    from opsmcp.cli import main

    url, _ = prom
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("OPSMCP_PROMETHEUS_URL", url)
    monkeypatch.setenv("OPSMCP_ALERTMANAGER_URL", dead)
    rc = main(["doctor", "--toolsets", "prometheus,alerts", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"OK   prometheus: {url} ready, instant query answered" in out
    assert f"FAIL alertmanager: {dead} unreachable" in out
    assert f"OK   alert webhook: POST /webhooks/alertmanager → {tmp_path / 'alerts.json'}" in out
    assert "OK   toolset prometheus: loaded" in out and "OK   toolset alerts: loaded" in out
    assert rc == 1
    monkeypatch.delenv("OPSMCP_ALERTMANAGER_URL")
    monkeypatch.setenv("OPSMCP_PROMETHEUS_URL", dead)
    main(["doctor", "--toolsets", "prometheus", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert f"FAIL prometheus: {dead} unreachable" in out and "alertmanager" not in out
