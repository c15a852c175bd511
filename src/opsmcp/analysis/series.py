"""Series arithmetic shared by the metric toolsets (CloudWatch and Prometheus).

Pure functions over ``(times, values)``: the summary every metric answer carries (min, max,
mean, p95, last, change between the first and last fifth), the trend (least-squares slope
per hour), anomalous points (robust z-score on the median absolute deviation), the time a
series reaches a threshold at its current slope, and downsampling a series to a display
budget with a combine function that matches the series' meaning (sum of sums, max of
maxima, last of a counter, else the mean). No I/O, no backend imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from operator import mul

from pydantic import BaseModel, Field

from opsmcp.times import iso

#: A point's time: an aware datetime, or Unix seconds (Prometheus answers in seconds; a
#: float per point is much cheaper than a datetime per point on large answers).
Time = datetime | float

#: |robust z| above which a point is anomalous (Iglewicz and Hoaglin's recommendation).
ANOMALY_Z = 3.5
#: Anomalous points listed per series (the largest |z| first); the count says how many exist.
MAX_ANOMALIES = 10
#: A projection further ahead than this is not a forecast: ``reaches_threshold_at`` is null.
MAX_PROJECTION = timedelta(days=365)


class MetricPoint(BaseModel):
    """One datapoint."""

    time: str = Field(description="Time of the point (CloudWatch: start of the period), ISO-8601 UTC.")
    value: float = Field(description="The value at that time, in the series' unit.")


class Anomaly(BaseModel):
    """A point far from the series' median (robust z-score on the median absolute deviation)."""

    time: str = Field(description="Time of the point, ISO-8601 UTC.")
    value: float = Field(description="The point's value.")
    z: float = Field(description="Robust z-score: 0.6745 * (value - median) / MAD; |z| > 3.5 is anomalous.")


class MetricSummary(BaseModel):
    """Statistics over every point of the window (not only the points shown)."""

    count: int = Field(description="Number of points summarised.")
    min: float = Field(description="Smallest value.")
    max: float = Field(description="Largest value.")
    max_time: str = Field(description="When the maximum occurred (first time, ISO-8601 UTC).")
    mean: float = Field(description="Arithmetic mean of the values.")
    p95: float = Field(description="95th percentile of the point values (linear interpolation).")
    last: float = Field(description="Value of the newest point.")
    last_time: str = Field(description="Time of the newest point, ISO-8601 UTC.")
    first_fifth_mean: float = Field(description="Mean of the oldest fifth of the points.")
    last_fifth_mean: float = Field(description="Mean of the newest fifth of the points.")
    change: float = Field(description="last_fifth_mean - first_fifth_mean, in the series' unit.")
    change_pct: float | None = Field(description="change as a percentage of first_fifth_mean; null when that is 0.")
    slope_per_hour: float | None = Field(
        None, description="Least-squares slope over the window, in the series' unit per hour; null with < 2 points."
    )
    anomaly_count: int = Field(0, description="Points with robust |z| > 3.5 (median absolute deviation).")
    anomalies: list[Anomaly] = Field(
        default_factory=list, description="Up to 10 anomalous points, largest |z| first."
    )
    threshold: float | None = Field(None, description="The threshold asked for, if any.")
    reaches_threshold_at: str | None = Field(
        None,
        description="When the series reaches threshold at the current slope (ISO-8601 UTC), else when it last "
        "crossed it; null if neither (or over a year out).",
    )


def seconds(t: Time) -> float:
    """Unix seconds of ``t``."""
    return t.timestamp() if isinstance(t, datetime) else float(t)


def as_datetime(t: Time) -> datetime:
    """``t`` as an aware UTC datetime."""
    return t if isinstance(t, datetime) else datetime.fromtimestamp(t, tz=UTC)


def when(t: Time) -> str:
    """``t`` as ISO-8601 UTC text."""
    return iso(as_datetime(t)) or ""


def percentile(values: Sequence[float], q: float, ordered: Sequence[float] | None = None) -> float:
    """The ``q``-th percentile (0..100) of ``values`` with linear interpolation between the
    closest ranks: numpy's default, equal to ``statistics.quantiles(method="inclusive")``'s
    cut points (a test checks this). Computed here from ``ordered`` (``sorted(values)``) so
    one sort serves the percentile, the median and the MAD of a summary.

    Raises:
        ValueError: no values.
    """
    if not values:
        raise ValueError("percentile of no values")
    if len(values) == 1:
        return float(values[0])
    if q <= 0:
        return float(min(values))
    if q >= 100:
        return float(max(values))
    ordered = ordered if ordered is not None else sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    if rank == lo:
        return float(ordered[lo])
    return ordered[lo] + (ordered[lo + 1] - ordered[lo]) * (rank - lo)


def rnd(v: float) -> float:
    """Round for display: 4 decimals, or 4 significant digits for tiny values."""
    if not math.isfinite(v):
        return v
    return round(v, 4) if abs(v) >= 0.01 or v == 0 else float(f"{v:.4g}")


def slope_per_hour(times: Sequence[Time], values: Sequence[float]) -> float | None:
    """Least-squares slope of ``values`` against time, in units per hour.

    Returns ``None`` with fewer than two points or when every point has the same time.
    """
    n = len(values)
    if n < 2:
        return None
    secs = [seconds(t) for t in times] if isinstance(times[0], datetime) else times
    t0 = seconds(secs[0])
    xs = [(float(t) - t0) / 3600.0 for t in secs]  # type: ignore[arg-type]
    sx, sy = sum(xs), sum(values)
    den = n * sum(map(mul, xs, xs)) - sx * sx
    if den == 0:
        return None
    return (n * sum(map(mul, xs, values)) - sx * sy) / den


def _median_of_sorted(ordered: Sequence[float]) -> float:
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def robust_scale(values: Sequence[float], ordered: Sequence[float] | None = None) -> tuple[float, float | None]:
    """``(median, scale)`` with robust z = ``(x - median) / scale``: ``scale`` is
    ``MAD / 0.6745``; when the MAD is 0 (more than half the points are equal, e.g. a flat
    series with a spike) the mean absolute deviation stands in (``1.2533 * meanAD``, as
    Iglewicz and Hoaglin suggest); ``None`` when that is 0 too (every score is 0).

    ``ordered`` is ``sorted(values)`` when the caller has it.
    """
    med = _median_of_sorted(ordered if ordered is not None else sorted(values))
    dev = sorted(abs(v - med) for v in values)
    mad = _median_of_sorted(dev)
    if mad > 0:
        return med, mad / 0.6745
    mean_ad = sum(dev) / len(dev)
    return med, (1.253314 * mean_ad if mean_ad > 0 else None)


def robust_z(values: Sequence[float]) -> list[float]:
    """Robust z-scores ``0.6745 * (x - median) / MAD`` (see :func:`robust_scale` for a MAD of 0)."""
    if not values:
        return []
    med, scale = robust_scale(values)
    return [(v - med) / scale for v in values] if scale else [0.0] * len(values)


def anomalies(
    times: Sequence[Time],
    values: Sequence[float],
    z_limit: float = ANOMALY_Z,
    ordered: Sequence[float] | None = None,
) -> list[Anomaly]:
    """Every point with robust ``|z| > z_limit``, largest ``|z|`` first (ties: oldest first)."""
    if not values:
        return []
    med, scale = robust_scale(values, ordered)
    if not scale:
        return []
    limit = z_limit * scale
    found = [(abs(v - med), i) for i, v in enumerate(values) if abs(v - med) > limit]
    found.sort(key=lambda f: (-f[0], f[1]))
    return [Anomaly(time=when(times[i]), value=rnd(values[i]), z=round((values[i] - med) / scale, 2)) for _, i in found]


def reaches_threshold_at(
    times: Sequence[Time], values: Sequence[float], threshold: float, slope: float | None
) -> datetime | None:
    """When the series reaches ``threshold`` from its newest value at ``slope`` (units/hour).

    * heading towards it: ``last_time + (threshold - last) / slope`` hours (``None`` when
      that is more than :data:`MAX_PROJECTION` ahead);
    * otherwise (moving away from it, or flat): the time of the most recent crossing inside
      the window, or ``None`` when the series stayed on one side all window long.
    """
    if not values:
        return None
    last = values[-1]
    if last == threshold:
        return as_datetime(times[-1])
    if slope and (threshold - last) / slope > 0:
        hours = (threshold - last) / slope
        if hours * 3600 > MAX_PROJECTION.total_seconds():
            return None
        return as_datetime(times[-1]) + timedelta(hours=hours)
    above = last > threshold
    for i in range(len(values) - 1, 0, -1):  # the most recent crossing inside the window
        prev = values[i - 1]
        if prev == threshold:
            return as_datetime(times[i - 1])
        if (prev > threshold) != above:
            return as_datetime(times[i])
    return None


def summarize(
    times: Sequence[Time], values: Sequence[float], threshold: float | None = None
) -> MetricSummary:
    """Summary over all points, with trend and anomalies; the fifths hold ``len // 5``
    points (at least one).

    Raises:
        ValueError: no values.
    """
    n = len(values)
    if n == 0:
        raise ValueError("summary of no values")
    k = max(1, n // 5)
    first = sum(values[:k]) / k
    last = sum(values[-k:]) / k
    change = last - first
    top = max(values)
    ordered = sorted(values)
    slope = slope_per_hour(times, values)
    odd = anomalies(times, values, ordered=ordered)
    reach = reaches_threshold_at(times, values, threshold, slope) if threshold is not None else None
    return MetricSummary(
        count=n,
        min=rnd(ordered[0]),
        max=rnd(top),
        max_time=when(times[list(values).index(top)]),
        mean=rnd(sum(values) / n),
        p95=rnd(percentile(values, 95, ordered)),
        last=rnd(values[-1]),
        last_time=when(times[-1]),
        first_fifth_mean=rnd(first),
        last_fifth_mean=rnd(last),
        change=rnd(change),
        change_pct=round(change / abs(first) * 100, 1) if first else None,
        slope_per_hour=rnd(slope) if slope is not None else None,
        anomaly_count=len(odd),
        anomalies=odd[:MAX_ANOMALIES],
        threshold=threshold,
        reaches_threshold_at=iso(reach) if reach is not None else None,
    )


#: Combine functions by name: how one shown point stands for the points it replaces.
COMBINE: dict[str, Callable[[Sequence[float]], float]] = {
    "sum": lambda c: float(sum(c)),
    "maximum": lambda c: float(max(c)),
    "minimum": lambda c: float(min(c)),
    "last": lambda c: float(c[-1]),
    "mean": lambda c: sum(c) / len(c),
}


def downsample(
    times: Sequence[Time], values: Sequence[float], budget: int, how: str = "mean"
) -> tuple[list[MetricPoint], int]:
    """At most ``budget`` points: consecutive groups of ``ceil(n / budget)`` points, each
    shown at its first point's time and combined with ``COMBINE[how]``.

    Returns:
        ``(points, group)``: ``group`` is 1 when nothing was combined.
    """
    n = len(values)
    if n <= budget:
        return [MetricPoint(time=when(t), value=rnd(v)) for t, v in zip(times, values, strict=True)], 1
    group = math.ceil(n / max(1, budget))
    combine = COMBINE[how]
    shown = [
        MetricPoint(time=when(times[i]), value=rnd(combine(values[i : i + group])))
        for i in range(0, n, group)
    ]
    return shown, group
