"""CloudWatch metric tools against a real moto server over HTTP.

The sandbox's six hours of metrics (``build_scenario().metric_series()``) are written with
``put_series`` once per module into a region of their own on the session's moto server,
so other tests' CloudWatch data cannot mix in.
"""

from __future__ import annotations

import socket
import statistics
import time
from datetime import UTC, datetime, timedelta

import pytest
from helpers import make_settings

from opsmcp.analysis.series import percentile
from opsmcp.backends import cloudwatch
from opsmcp.backends.aws import AwsClients
from opsmcp.errors import BackendUnavailable, InvalidInput, NotFound, OpsError
from opsmcp.sandbox.scenario import HISTORY_HOURS, build_scenario
from opsmcp.times import iso
from opsmcp.toolsets.base import marked_tools
from opsmcp.toolsets.metrics import MetricTools, parse_dimensions

REGION = "eu-west-3"  # CloudWatch state in moto is per region: ours alone
SVC = "OpsMCP/Services"


def _manual_p95(values: list[float]) -> float:
    """p95 by hand: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * 0.95
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@pytest.fixture(scope="module")
async def cw_env(moto_endpoint, tmp_path_factory):
    """(tools, scenario, raw series by (name, dims)) with the scenario's metrics in moto."""
    settings = make_settings(moto_endpoint, tmp_path_factory.mktemp("metrics")).model_copy(
        update={"aws_region": REGION, "backend_timeout_seconds": 60}  # bulk seeding on a loaded machine
    )
    clients = AwsClients(settings)
    scenario = build_scenario(now=datetime.now(UTC))
    series = scenario.metric_series()
    written = await cloudwatch.put_series(clients, series)
    assert written == sum(len(points) for *_, points in series) == 26 * HISTORY_HOURS * 60
    raw = {(name, tuple(sorted(dims.items()))): [v for _, v in points] for _, name, dims, _, points in series}
    return MetricTools(settings, cloudwatch.CloudWatchBackend(clients)), scenario, raw


def _window(scenario) -> dict[str, str]:
    return {"start": iso(scenario.now - timedelta(hours=HISTORY_HOURS)), "end": iso(scenario.now)}


async def test_error_count_shows_the_incident(cw_env):
    tools, scenario, raw = cw_env
    expected = raw[("ErrorCount", (("Service", "order-processor"),))]
    result = await tools.query_metrics(SVC, "ErrorCount", {"Service": "order-processor"}, **_window(scenario))

    assert result.unit == "Count"
    assert result.stat == "Average" and result.period_seconds == 60
    assert result.point_count == len(expected) == 360
    s = result.summary
    assert s is not None and s.count == 360
    # The incident: errors jump in the newest fifth of the window.
    assert s.last_fifth_mean > 5 * s.first_fifth_mean
    assert s.change == pytest.approx(s.last_fifth_mean - s.first_fifth_mean, abs=1e-3)
    assert s.change_pct is not None and s.change_pct > 400
    # The summary covers every point and matches a computation by hand.
    k = len(expected) // 5
    assert s.min == min(expected) and s.max == max(expected) and s.last == expected[-1]
    assert s.mean == pytest.approx(sum(expected) / len(expected), abs=1e-3)
    assert s.first_fifth_mean == pytest.approx(sum(expected[:k]) / k, abs=1e-3)
    assert s.last_fifth_mean == pytest.approx(sum(expected[-k:]) / k, abs=1e-3)
    assert s.p95 == pytest.approx(_manual_p95(expected), abs=1e-3)
    assert s.p95 == pytest.approx(statistics.quantiles(expected, n=100, method="inclusive")[94], abs=1e-3)
    max_at = datetime.fromisoformat(s.max_time.replace("Z", "+00:00"))
    assert max_at >= scenario.incident_start - timedelta(minutes=1)
    # Points are ascending and the display budget (120) was applied with a label.
    assert result.truncated and len(result.points) <= 120
    assert any("summary uses all 360" in n for n in result.notes)
    times = [p.time for p in result.points]
    assert times == sorted(times)


async def test_units_are_kept(cw_env):
    tools, scenario, _ = cw_env
    latency = await tools.query_metrics(SVC, "LatencyP95", "Service=payment-service", **_window(scenario))
    assert latency.unit == "Milliseconds"
    assert latency.summary and latency.summary.last_fifth_mean > 10 * latency.summary.first_fifth_mean
    age = await tools.query_metrics(
        "AWS/SQS", "ApproximateAgeOfOldestMessage", {"QueueName": "order-queue-dlq"}, stat="Maximum",
        **_window(scenario),
    )
    assert age.unit == "Seconds" and age.stat == "Maximum"
    depth = await tools.query_metrics(
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName=order-queue-dlq", **_window(scenario)
    )
    assert depth.unit == "Count"
    assert depth.summary and depth.summary.first_fifth_mean == 0 and depth.summary.last > 0
    assert depth.summary.change_pct is None  # no percentage of a zero baseline


async def test_full_resolution_when_within_budget(cw_env):
    tools, scenario, raw = cw_env
    start = scenario.now - timedelta(minutes=60)
    result = await tools.query_metrics(
        SVC, "ErrorCount", "Service=order-processor", start=iso(start), end=iso(scenario.now), max_points=500
    )
    assert not result.truncated and len(result.points) == result.point_count == 60
    assert [p.value for p in result.points] == raw[("ErrorCount", (("Service", "order-processor"),))][-60:]


async def test_display_budget_and_clamped_limit(cw_env):
    tools, scenario, _ = cw_env
    small = await tools.query_metrics(SVC, "ErrorCount", "Service=api-gateway", max_points=50, **_window(scenario))
    assert small.truncated and len(small.points) <= 50 and small.summary and small.summary.count == 360
    huge = await tools.query_metrics(SVC, "ErrorCount", "Service=api-gateway", max_points=100_000, **_window(scenario))
    assert any("max_points=100000 is outside" in n for n in huge.notes)


async def test_list_metrics_finds_the_namespaces(cw_env):
    tools, _, _ = cw_env
    everything = await tools.list_metrics()
    assert everything.namespaces == ["AWS/SQS", SVC]
    assert everything.series_count == 26 and not everything.truncated
    errors = next(m for m in everything.metrics if m.metric_name == "ErrorCount")
    assert {"Service": "order-processor"} in errors.dimensions and len(errors.dimensions) == 6

    sqs = await tools.list_metrics(namespace="AWS/SQS")
    assert sqs.namespaces == ["AWS/SQS"] and sqs.series_count == 14

    few = await tools.list_metrics(limit=3)
    assert few.truncated and few.series_count == 3 and few.notes

    clamped = await tools.list_metrics(namespace=SVC, limit=0)
    assert clamped.series_count == 1 and any("limit=0 is outside" in n for n in clamped.notes)


async def test_list_metrics_unknown_names(cw_env):
    tools, _, _ = cw_env
    with pytest.raises(NotFound) as exc:
        await tools.list_metrics(namespace="OpsMCP/Service")
    assert "'OpsMCP/Services'" in str(exc.value)
    with pytest.raises(NotFound) as exc:
        await tools.list_metrics(metric_name="ErrorCnt")
    assert "'ErrorCount'" in str(exc.value)


async def test_unknown_metric_lists_close_names(cw_env):
    tools, _, _ = cw_env
    with pytest.raises(NotFound) as exc:
        await tools.query_metrics(SVC, "ErrorCnt", "Service=order-processor")
    assert "ErrorCnt" in exc.value.message and "'ErrorCount'" in (exc.value.hint or "")

    with pytest.raises(NotFound) as exc:
        # moto ignores the namespace when dimensions are given
        await tools.query_metrics("opsmcp/services", "ErrorCount")
    assert "'OpsMCP/Services'" in str(exc.value)


async def test_unknown_or_missing_dimensions_list_the_series(cw_env):
    tools, _, _ = cw_env
    with pytest.raises(NotFound) as exc:
        await tools.query_metrics(SVC, "ErrorCount", "Service=order-proc")
    assert "'Service=order-processor'" in str(exc.value)
    # CloudWatch matches no dimensions only to a series without any (moto would sum all).
    with pytest.raises(NotFound) as exc:
        await tools.query_metrics(SVC, "ErrorCount")
    assert "without dimensions" in exc.value.message and "Service=" in str(exc.value)


async def test_existing_series_with_no_data_in_window(cw_env):
    tools, _, _ = cw_env
    result = await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor", start="-13d", end="-12d")
    assert result.point_count == 0 and result.points == [] and result.summary is None
    assert any("no datapoints in this window" in n for n in result.notes)


async def test_reversed_and_empty_windows_are_errors(cw_env):
    tools, _, _ = cw_env
    with pytest.raises(InvalidInput) as exc:
        await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor", start="-1h", end="-2h")
    assert "reversed" in exc.value.message
    with pytest.raises(InvalidInput):
        await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor", start="-1h", end="-1h")
    with pytest.raises(InvalidInput):
        await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor", start="yesterday-ish")


async def test_overlong_window_is_clamped_and_period_rounded(cw_env):
    tools, _, _ = cw_env
    result = await tools.query_metrics(
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName=order-queue-dlq", start="-30d", period_seconds=3599
    )
    notes = " | ".join(result.notes)
    assert "clamped" in notes and "not a valid CloudWatch period; used 3600" in notes
    start = datetime.fromisoformat(result.start.replace("Z", "+00:00"))
    end = datetime.fromisoformat(result.end.replace("Z", "+00:00"))
    assert timedelta(days=14) <= end - start <= timedelta(days=14, seconds=3600)
    assert result.period_seconds == 3600 and result.point_count in (6, 7)
    assert result.summary and result.summary.last > 0 and result.unit == "Count"
    # More than 1440 points widens the period, labelled (checked without a server in
    # test_plan_query_rules; moto's GetMetricData cost grows with periods x datapoints).


async def test_bad_and_aliased_stats(cw_env):
    tools, scenario, _ = cw_env
    with pytest.raises(InvalidInput) as exc:
        await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor", stat="median")
    assert "p95" in (exc.value.hint or "") and "SampleCount" in (exc.value.hint or "")
    with pytest.raises(InvalidInput):
        await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor", stat="p101")
    result = await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor", stat="max", **_window(scenario))
    assert result.stat == "Maximum"
    total = await tools.query_metrics(
        SVC, "ErrorCount", "Service=order-processor", stat="Sum", period_seconds=3600, **_window(scenario)
    )
    assert total.stat == "Sum" and total.period_seconds == 3600 and total.point_count in (6, 7)


async def test_percentile_stat_on_moto(cw_env):
    """moto 5.2 answers a percentile GetMetricData with HTTP 500; the error says what to do."""
    tools, scenario, _ = cw_env
    try:
        result = await tools.query_metrics(
            SVC, "LatencyP95", "Service=order-processor", stat="P99.9", **_window(scenario)
        )
    except OpsError as exc:
        assert "p99.9" in exc.message and "Maximum" in (exc.hint or "")
    else:  # a CloudWatch that computes percentiles
        assert result.stat == "p99.9" and result.point_count > 0


def test_parse_dimensions_shapes():
    assert parse_dimensions(None) == {} == parse_dimensions("") == parse_dimensions("{}")
    assert parse_dimensions("QueueName=order-queue-dlq,Other=x") == {"QueueName": "order-queue-dlq", "Other": "x"}
    assert parse_dimensions(" QueueName = order-queue-dlq ; Other=x ") == {"QueueName": "order-queue-dlq", "Other": "x"}
    assert parse_dimensions("Service: order-processor") == {"Service": "order-processor"}
    assert parse_dimensions('{"QueueName": "q1"}') == {"QueueName": "q1"}
    assert parse_dimensions({"QueueName": "q1"}) == {"QueueName": "q1"}
    assert parse_dimensions([{"Name": "QueueName", "Value": "q1"}]) == {"QueueName": "q1"}
    assert parse_dimensions('[{"Name": "QueueName", "Value": "q1"}]') == {"QueueName": "q1"}
    for bad in ("order-queue-dlq", "=x", "{not json"):
        with pytest.raises(InvalidInput):
            parse_dimensions(bad)


async def test_dimension_string_in_a_query(cw_env):
    tools, scenario, _ = cw_env
    result = await tools.query_metrics(
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName = order-queue-dlq", **_window(scenario)
    )
    assert result.dimensions == {"QueueName": "order-queue-dlq"} and result.point_count == 360


def test_plan_query_rules():
    now = datetime(2026, 11, 21, 14, 7, 31, tzinfo=UTC)
    plan = cloudwatch.plan_query("-6h", None, 60, now=now)
    assert plan.period_seconds == 60 and plan.start == datetime(2026, 11, 21, 8, 7, tzinfo=UTC)
    assert plan.end == now and plan.notes == []
    assert cloudwatch.plan_query("-1h", None, 7, now=now).period_seconds == 10
    assert cloudwatch.plan_query("-1h", None, 61, now=now).period_seconds == 120
    wide = cloudwatch.plan_query("-2d", None, 60, now=now)
    assert wide.period_seconds == 120 and any("widened" in n for n in wide.notes)
    for period in (0, -60):
        with pytest.raises(InvalidInput):
            cloudwatch.plan_query("-1h", None, period, now=now)
    assert cloudwatch.normalize_stat("AVG") == "Average" and cloudwatch.normalize_stat("p99.9") == "p99.9"
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


async def test_put_series_rejects_timestamps_cloudwatch_would(cw_env):
    tools, _, _ = cw_env
    old = datetime.now(UTC) - timedelta(days=15)
    with pytest.raises(InvalidInput):
        await cloudwatch.put_series(tools.backend.clients, [("T", "m", {}, "Count", [(old, 1.0)])])


def test_tools_are_marked_read_only():
    from opsmcp.toolsets.base import ToolMark

    marks = {name: mark for name, _, mark in marked_tools(MetricTools.__new__(MetricTools))}
    assert set(marks) == {"query_metrics", "list_metrics"}
    for mark in marks.values():
        assert isinstance(mark, ToolMark)
        assert mark.read_only and mark.idempotent and mark.open_world and not mark.write and not mark.destructive


async def test_backend_down_names_the_endpoint(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    settings = make_settings(endpoint, tmp_path)
    tools = MetricTools(settings, cloudwatch.CloudWatchBackend(AwsClients(settings)))
    began = time.monotonic()
    with pytest.raises(BackendUnavailable) as exc:
        await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor")
    assert time.monotonic() - began < 10
    assert endpoint in str(exc.value)
    with pytest.raises(BackendUnavailable):
        await tools.list_metrics()


async def test_empty_names_are_refused_without_botocore_text(cw_env):
    """Regression (issue 9, point 15): an empty namespace leaked botocore's ParamValidationError."""
    tools, _, _ = cw_env
    for namespace, name in (("", "ErrorCount"), ("  ", "ErrorCount"), (SVC, "")):
        with pytest.raises(InvalidInput) as exc:
            await tools.query_metrics(namespace, name)
        assert "ParamValidation" not in str(exc.value) and "Next step" in str(exc.value)
    with pytest.raises(InvalidInput) as exc:  # the backend maps it too, for any caller
        await tools.backend.get_metric_data("", "ErrorCount", {})
    assert "ParamValidation" not in str(exc.value)
    with pytest.raises(InvalidInput):
        await tools.query_metrics(SVC, "ErrorCount", "Service=order-processor", threshold=float("nan"))
    listed = await tools.list_metrics(namespace="", metric_name="")  # empty filters mean none
    assert listed.series_count > 0


async def test_trend_and_threshold_through_query_metrics(cw_env):
    """The DLQ depth ramps in the sandbox scenario: a positive slope and a projected time."""
    tools, scenario, raw = cw_env
    dims = {"QueueName": "order-queue-dlq"}
    expected = raw[("ApproximateNumberOfMessagesVisible", tuple(dims.items()))]
    result = await tools.query_metrics("AWS/SQS", "ApproximateNumberOfMessagesVisible", dims, stat="Maximum",
                                       threshold=max(expected) * 2, **_window(scenario))
    s = result.summary
    assert s is not None and s.slope_per_hour is not None and s.slope_per_hour > 0
    assert s.threshold == max(expected) * 2
    assert s.reaches_threshold_at is not None and s.reaches_threshold_at > s.last_time
