"""Thin CloudWatch metrics adapter: GetMetricData, ListMetrics and PutMetricData (seeding).

Every call goes through :func:`~.aws.aws_call` (off the event loop, errors mapped to
:class:`~opsmcp.errors.OpsError`). This module validates and bounds the query
(statistic, period, window, number of points) so that any caller gets the same rules;
the summary and the display budget live in :mod:`opsmcp.toolsets.metrics`.

Units: GetMetricData returns no unit. After the data call, :func:`get_metric_data` asks
GetMetricStatistics (``SampleCount``) for the one period holding the newest point and
keeps the ``Unit`` of that datapoint (``"None"`` and a missing unit both become
``None``). ListMetrics carries no unit either, so this is the only read that gives one.
If that second call fails (e.g. IAM allows GetMetricData only), the unit is ``None`` and
a note says why.

Gaps of moto 5.2 (the sandbox and the tests), checked by experiment and designed around:

* GetMetricData with a percentile stat (``p95``) or an unknown stat fails with HTTP 500
  (moto computes only Average/Sum/Minimum/Maximum/SampleCount). Stats are validated here
  first; a 5xx on a percentile becomes an :class:`OpsError` whose hint suggests
  ``Maximum`` or ``Average``. Real CloudWatch computes percentiles.
* GetMetricData ignores ``MaxDatapoints`` and never returns ``NextToken``; its buckets
  start at ``StartTime`` (not at period boundaries), so the start is aligned down to a
  multiple of the period here, which gives the same buckets as CloudWatch.
* GetMetricData with no dimensions aggregates every series of that name; CloudWatch
  matches only the series that has no dimensions. With dimensions, moto ignores the
  namespace (names are unique across our namespaces, so this does not bite).
* ListMetrics repeats a metric without dimensions once per datapoint: results are
  de-duplicated here. Pages hold 500 metrics and a ``NextToken`` works only once.
* PutMetricData accepts any timestamp and more than 1000 datapoints; CloudWatch takes at
  most 1000 datums and 1 MB per request and timestamps from two weeks ago to two hours
  ahead, so :func:`put_series` / :func:`put_series_sync` enforce CloudWatch's limits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, UTC
from typing import Any, NamedTuple

from opsmcp.backends.aws import AwsClients, aws_call, map_aws_error
from opsmcp.errors import InvalidInput, OpsError
from opsmcp.times import iso, parse_window, utcnow

_STAT_ALIASES = {
    "average": "Average", "avg": "Average", "mean": "Average",
    "sum": "Sum", "total": "Sum",
    "minimum": "Minimum", "min": "Minimum",
    "maximum": "Maximum", "max": "Maximum",
    "samplecount": "SampleCount", "count": "SampleCount", "n": "SampleCount",
}
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d{1,3})?|100(?:\.0+)?)$", re.I)
HIGH_RES_PERIODS = (1, 5, 10, 30)
MAX_SPAN = timedelta(days=14)  # window bound; 60 s data is kept 15 days in CloudWatch
MAX_POINTS = 1440  # points per query; the period is widened to fit
MAX_PERIOD = 86_400  # one day
DEFAULT_START = "-3h"
MAX_PAGES = 10  # GetMetricData / ListMetrics pages per call
PUT_MAX_DATUMS = 1000  # CloudWatch's PutMetricData limits: 1000 datums, 1 MB per request
PUT_MAX_BYTES = 900_000
PUT_MAX_AGE = timedelta(days=14)
PUT_MAX_AHEAD = timedelta(hours=2)

Series = tuple[str, str, dict[str, str], str | None, Sequence[tuple[datetime, float]]]
"""``(namespace, metric name, dimensions, unit, [(time, value)])``, as
:meth:`opsmcp.sandbox.scenario.Scenario.metric_series` returns."""


class QueryPlan(NamedTuple):
    """A validated query window: aligned ``start``, ``end``, effective period, notes."""

    start: datetime
    end: datetime
    period_seconds: int
    notes: list[str]


class MetricSeries(NamedTuple):
    """What :func:`get_metric_data` returns.

    Attributes:
        timestamps: period start times, ascending, aware UTC.
        values: the statistic for each period (same length as ``timestamps``).
        unit: the metric's unit (``"Count"``, ``"Milliseconds"``...) or ``None``.
        stat: the normalised statistic actually queried.
        period_seconds: the period actually used (may be wider than asked; see notes).
        start: the queried start (aligned down to the period).
        end: the queried end.
        notes: labels for anything clamped, widened or partial.
    """

    timestamps: list[datetime]
    values: list[float]
    unit: str | None
    stat: str
    period_seconds: int
    start: datetime
    end: datetime
    notes: list[str]


class MetricId(NamedTuple):
    """One metric series as ListMetrics names it."""

    namespace: str
    metric_name: str
    dimensions: dict[str, str]


def normalize_stat(stat: str) -> str:
    """Return the CloudWatch spelling of ``stat``.

    Accepts ``Average``, ``Sum``, ``Minimum``, ``Maximum``, ``SampleCount`` (any case, and
    ``avg``/``mean``/``min``/``max``/``count``) and percentiles ``pNN`` (``p50``, ``p95``,
    ``p99.9``; 0 < NN <= 100).

    Raises:
        InvalidInput: anything else.
    """
    text = str(stat).strip()
    found = _STAT_ALIASES.get(text.lower().replace("_", "").replace(" ", ""))
    if found:
        return found
    m = _PERCENTILE.match(text)
    if m and 0 < float(m.group(1)) <= 100:
        return "p" + m.group(1)
    raise InvalidInput(
        f"Unknown statistic {stat!r}.",
        "use one of Average, Sum, Minimum, Maximum, SampleCount, or a percentile such as p95 or p99.9.",
    )


def is_percentile(stat: str) -> bool:
    """True for ``pNN`` statistics."""
    return stat[:1] in ("p", "P") and bool(_PERCENTILE.match(stat))


def _round_up_period(seconds: float) -> int:
    """The smallest valid CloudWatch period (1, 5, 10, 30 or a multiple of 60) >= ``seconds``."""
    for p in HIGH_RES_PERIODS:
        if seconds <= p:
            return p
    return math.ceil(seconds / 60.0) * 60


def plan_query(
    start: str | datetime | None,
    end: str | datetime | None,
    period_seconds: int,
    *,
    default_start: str = DEFAULT_START,
    max_span: timedelta = MAX_SPAN,
    max_points: int = MAX_POINTS,
    now: datetime | None = None,
) -> QueryPlan:
    """Validate and bound a query window and period.

    * the window is parsed with :func:`opsmcp.times.parse_window` (default start ``-3h``,
      end ``now``); a window longer than ``max_span`` (14 days) keeps its last 14 days;
    * ``period_seconds`` is rounded up to a valid period (1, 5, 10, 30 or a multiple of
      60) and capped at one day; then widened so the window holds at most
      ``max_points`` (1440) periods;
    * the start is aligned down to a multiple of the period (CloudWatch's buckets).

    Every change is labelled in ``notes``.

    Raises:
        InvalidInput: unreadable times, a reversed or empty range, or a period <= 0.
    """
    now = now or utcnow()
    t0, t1, notes = parse_window(
        iso(start) if isinstance(start, datetime) else start,
        iso(end) if isinstance(end, datetime) else end,
        default_start=default_start,
        max_span=max_span,
        now=now,
    )
    if t0 == t1:
        raise InvalidInput(
            f"The time range is empty: start and end are both {iso(t0)}.",
            "give a start before end, e.g. start='-1h'.",
        )
    try:
        asked = int(period_seconds)
    except (TypeError, ValueError):
        raise InvalidInput(f"period_seconds={period_seconds!r} is not a whole number of seconds.", "use 60.") from None
    if asked <= 0:
        raise InvalidInput(f"period_seconds={asked} must be positive.", "use 60 (one minute) or a multiple of 60.")
    period = min(_round_up_period(asked), MAX_PERIOD)
    if period != asked:
        notes.append(
            f"period_seconds {asked} is not a valid CloudWatch period; used {period} "
            "(valid: 1, 5, 10, 30 or a multiple of 60, at most 86400)"
        )
    span = (t1 - t0).total_seconds()
    if span / period > max_points:
        wider = min(_round_up_period(span / max_points), MAX_PERIOD)
        notes.append(
            f"period widened from {period} s to {wider} s so the {_span_words(span)} window "
            f"fits in {max_points} points"
        )
        period = wider
    epoch = int(t0.timestamp())
    aligned = datetime.fromtimestamp(epoch - epoch % period, tz=UTC)
    return QueryPlan(aligned, t1, period, notes)


def _span_words(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds / 86_400:.3g}-day"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g}-hour"
    return f"{seconds / 60:.3g}-minute"


def _dims(dimensions: dict[str, str] | None) -> list[dict[str, str]]:
    return [{"Name": k, "Value": v} for k, v in sorted((dimensions or {}).items())]


def _utc(t: datetime) -> datetime:
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


async def get_metric_data(
    clients: AwsClients,
    namespace: str,
    metric_name: str,
    dimensions: dict[str, str] | None,
    stat: str = "Average",
    period_seconds: int = 60,
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    *,
    now: datetime | None = None,
) -> MetricSeries:
    """Read one metric series with GetMetricData, ascending, plus its unit.

    Validates ``stat`` (:func:`normalize_stat`) and the window/period
    (:func:`plan_query`: 14-day bound, at most 1440 points, labelled in ``notes``), follows
    ``NextToken`` (at most 10 pages) and returns the points sorted by time. The unit comes
    from a GetMetricStatistics call over the newest point's period (see the module doc).

    Args:
        clients: the shared AWS clients (``clients.client("cloudwatch")``).
        namespace: e.g. ``AWS/SQS``.
        metric_name: e.g. ``ApproximateNumberOfMessagesVisible``.
        dimensions: exact dimension set of the series, e.g. ``{"QueueName": "orders"}``.
        stat: Average, Sum, Minimum, Maximum, SampleCount or pNN.
        period_seconds: bucket width in seconds.
        start, end: ISO-8601 or relative (``-6h``); default the last 3 hours.

    Raises:
        InvalidInput: bad stat, period or window.
        BackendUnavailable: CloudWatch cannot be reached (names the endpoint).
        OpsError: CloudWatch refused the query (a 5xx on a percentile says so).
    """
    stat = normalize_stat(stat)
    plan = plan_query(start, end, period_seconds, now=now)
    notes = list(plan.notes)
    cw = clients.client("cloudwatch")
    query: dict[str, Any] = {
        "Id": "m0",
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": metric_name, "Dimensions": _dims(dimensions)},
            "Period": plan.period_seconds,
            "Stat": stat,
        },
        "ReturnData": True,
    }
    what = f"read metric {namespace}/{metric_name} ({stat})"

    def fetch() -> tuple[dict[datetime, float], list[str]]:
        from botocore.exceptions import ClientError, ParamValidationError

        points: dict[datetime, float] = {}
        messages: list[str] = []
        token: str | None = None
        for page in range(MAX_PAGES):
            kwargs: dict[str, Any] = {
                "MetricDataQueries": [query],
                "StartTime": plan.start,
                "EndTime": plan.end,
                "ScanBy": "TimestampAscending",
            }
            if token:
                kwargs["NextToken"] = token
            try:
                resp = cw.get_metric_data(**kwargs)
            except ParamValidationError as exc:  # botocore's own text names its internals
                raise InvalidInput(
                    f"CloudWatch cannot {what}: a namespace, metric name or dimension is empty or too long.",
                    "pass non-empty names of at most 255 characters; list_metrics shows what exists.",
                ) from exc
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if status >= 500:
                    hint = (
                        "retry with stat='Maximum' (an upper bound of any percentile) or stat='Average'; "
                        "some CloudWatch emulators (moto) cannot compute percentiles."
                        if is_percentile(stat)
                        else "retry later; if it persists, check the backend's logs."
                    )
                    raise OpsError(f"{clients.endpoint} failed with HTTP {status} to {what}.", hint) from exc
                raise
            for result in resp.get("MetricDataResults", []):
                for ts, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                    points[_utc(ts)] = float(value)
                for msg in result.get("Messages", []) or []:
                    messages.append(f"CloudWatch: {msg.get('Code', '')} {msg.get('Value', '')}".strip())
                if result.get("StatusCode") not in (None, "Complete", "PartialData"):
                    messages.append(f"CloudWatch status {result.get('StatusCode')} for this query")
            for msg in resp.get("Messages", []) or []:
                messages.append(f"CloudWatch: {msg.get('Code', '')} {msg.get('Value', '')}".strip())
            token = resp.get("NextToken")
            if not token:
                break
            if page == MAX_PAGES - 1:
                messages.append(f"stopped after {MAX_PAGES} pages of GetMetricData; narrow the window for the rest")
        return points, messages

    points, messages = await aws_call(clients, what, fetch)
    notes += list(dict.fromkeys(messages))
    timestamps = sorted(points)
    values = [points[t] for t in timestamps]
    unit: str | None = None
    if timestamps:
        try:
            unit = await _unit_of(clients, namespace, metric_name, dimensions, timestamps[-1], plan.period_seconds)
        except OpsError as exc:
            notes.append(f"unit unknown: GetMetricStatistics failed ({exc.message})")
    return MetricSeries(timestamps, values, unit, stat, plan.period_seconds, plan.start, plan.end, notes)


async def _unit_of(
    clients: AwsClients,
    namespace: str,
    metric_name: str,
    dimensions: dict[str, str] | None,
    at: datetime,
    period_seconds: int,
) -> str | None:
    """The ``Unit`` CloudWatch reports for the period starting at ``at`` (``None`` if none)."""
    resp = await aws_call(
        clients,
        f"read the unit of {namespace}/{metric_name}",
        clients.client("cloudwatch").get_metric_statistics,
        Namespace=namespace,
        MetricName=metric_name,
        Dimensions=_dims(dimensions),
        StartTime=at,
        EndTime=at + timedelta(seconds=period_seconds),
        Period=period_seconds,
        Statistics=["SampleCount"],
    )
    for point in resp.get("Datapoints", []):
        unit = point.get("Unit")
        if unit and unit != "None":
            return str(unit)
    return None


async def list_metrics(
    clients: AwsClients,
    namespace: str | None = None,
    metric_name: str | None = None,
    max_items: int = 500,
) -> tuple[list[MetricId], bool]:
    """List distinct metric series (namespace, name, dimension set) with ListMetrics.

    Follows ``NextToken`` until ``max_items`` distinct series are found or 10 pages
    (500 metrics each) were read. CloudWatch lists only metrics with data in the past two
    weeks.

    Returns:
        ``(metrics, truncated)``: ``truncated`` is true when more series may exist.

    Raises:
        BackendUnavailable / OpsError: as :func:`~.aws.aws_call` maps them.
    """
    cw = clients.client("cloudwatch")
    max_items = max(1, int(max_items))
    kwargs: dict[str, Any] = {}
    if namespace:
        kwargs["Namespace"] = namespace
    if metric_name:
        kwargs["MetricName"] = metric_name

    def fetch() -> tuple[list[MetricId], bool]:
        seen: dict[tuple[str, str, tuple[tuple[str, str], ...]], MetricId] = {}
        token: str | None = None
        for _ in range(MAX_PAGES):
            resp = cw.list_metrics(**kwargs, **({"NextToken": token} if token else {}))
            for m in resp.get("Metrics", []):
                dims = {d["Name"]: d.get("Value", "") for d in m.get("Dimensions", [])}
                key = (m.get("Namespace", ""), m.get("MetricName", ""), tuple(sorted(dims.items())))
                if key not in seen:
                    seen[key] = MetricId(key[0], key[1], dict(key[2]))
                    if len(seen) > max_items:
                        break
            token = resp.get("NextToken")
            if not token or len(seen) > max_items:
                break
        found = sorted(seen.values(), key=lambda m: (m.namespace, m.metric_name, sorted(m.dimensions.items())))
        return found[:max_items], bool(token) or len(found) > max_items

    return await aws_call(clients, "list metrics", fetch)


def _datum(name: str, dims: list[dict[str, str]], unit: str | None, t: datetime, v: float) -> dict[str, Any]:
    d: dict[str, Any] = {"MetricName": name, "Timestamp": t, "Value": float(v)}
    if dims:
        d["Dimensions"] = dims
    if unit:
        d["Unit"] = unit
    return d


def _datum_size(name: str, dims: list[dict[str, str]]) -> int:
    """A generous estimate of one datum's encoded size, in bytes."""
    return 64 + 2 * len(name) + sum(24 + len(d["Name"]) + len(d["Value"]) for d in dims)


async def put_series(clients: AwsClients, series: Iterable[Series], *, now: datetime | None = None) -> int:
    """Write metric series with PutMetricData, off the event loop (see :func:`put_series_sync`)."""
    return await aws_call(clients, "put metric data", put_series_sync, clients, series, now=now)


def put_series_sync(clients: AwsClients, series: Iterable[Series], *, now: datetime | None = None,
                    retries: bool = True) -> int:
    """Write metric series with PutMetricData (seeding the sandbox, tests); blocking.

    ``series`` has the shape :meth:`Scenario.metric_series` returns: ``(namespace, metric
    name, dimensions, unit, [(time, value)])``. Datums are grouped by namespace and sent
    in requests of at most 1000 datums and ~900 KB (CloudWatch's limits). Every timestamp
    is checked before anything is sent.

    Args:
        retries: ``False`` for one attempt per request (a caller that retries itself, after
            checking whether the failed attempt landed: a repeated datapoint counts twice).

    Returns:
        the number of datapoints written.

    Raises:
        InvalidInput: a timestamp older than two weeks or more than two hours ahead
            (CloudWatch rejects those), or a non-finite value.
        OpsError: a PutMetricData call failed (mapped as :func:`~.aws.aws_call` does).
    """
    now = now or utcnow()
    by_ns: dict[str, list[tuple[dict[str, Any], int]]] = {}
    for namespace, name, dimensions, unit, points in series:
        dims = _dims(dimensions)
        size = _datum_size(name, dims)
        for t, v in points:
            t = _utc(t)
            if t < now - PUT_MAX_AGE or t > now + PUT_MAX_AHEAD:
                raise InvalidInput(
                    f"Datapoint of {namespace}/{name} at {iso(t)} is outside what CloudWatch accepts.",
                    "use timestamps from two weeks ago to two hours ahead.",
                )
            if not math.isfinite(float(v)):
                raise InvalidInput(f"Datapoint of {namespace}/{name} at {iso(t)} is not a finite number: {v!r}.")
            by_ns.setdefault(namespace, []).append((_datum(name, dims, unit, t, v), size))
    cw = clients.client("cloudwatch", retries=retries)
    written = 0

    def send(namespace: str, batch: list[dict[str, Any]]) -> None:
        try:
            cw.put_metric_data(Namespace=namespace, MetricData=batch)
        except Exception as exc:  # botocore raises many unrelated types; map them all
            raise map_aws_error(exc, clients.endpoint, f"put {len(batch)} datapoints to {namespace}") from exc

    for namespace, datums in by_ns.items():
        batch: list[dict[str, Any]] = []
        batch_bytes = 0
        for datum, size in datums:
            if len(batch) >= PUT_MAX_DATUMS or batch_bytes + size > PUT_MAX_BYTES:
                send(namespace, batch)
                written += len(batch)
                batch, batch_bytes = [], 0
            batch.append(datum)
            batch_bytes += size
        if batch:
            send(namespace, batch)
            written += len(batch)
    return written


class CloudWatchBackend:
    """The CloudWatch metrics adapter the metrics toolset receives (one per server).

    Holds the shared AWS clients; its methods are :func:`get_metric_data` and
    :func:`list_metrics` bound to them.

    Args:
        clients: the shared AWS clients (``clients.client("cloudwatch")``).
    """

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients

    @property
    def endpoint(self) -> str:
        """The endpoint CloudWatch calls go to, for messages."""
        return self.clients.endpoint

    async def get_metric_data(
        self,
        namespace: str,
        metric_name: str,
        dimensions: dict[str, str] | None,
        stat: str = "Average",
        period_seconds: int = 60,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        *,
        now: datetime | None = None,
    ) -> MetricSeries:
        """One series; see :func:`get_metric_data` (same arguments and errors)."""
        return await get_metric_data(
            self.clients, namespace, metric_name, dimensions, stat, period_seconds, start, end, now=now
        )

    async def list_metrics(
        self, namespace: str | None = None, metric_name: str | None = None, max_items: int = 500
    ) -> tuple[list[MetricId], bool]:
        """Distinct series; see :func:`list_metrics` (same arguments and errors)."""
        return await list_metrics(self.clients, namespace, metric_name, max_items)
