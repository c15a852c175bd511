"""Trend, anomaly and threshold arithmetic (opsmcp.analysis.series) on generated series
with known slopes, steps and spikes."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from opsmcp.analysis.series import (
    anomalies,
    downsample,
    percentile,
    reaches_threshold_at,
    robust_z,
    slope_per_hour,
    summarize,
)
from opsmcp.times import iso

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def minutes(n: int) -> list[datetime]:
    return [T0 + timedelta(minutes=i) for i in range(n)]


def test_slope_of_known_lines_with_and_without_noise():
    t = minutes(361)
    assert slope_per_hour(t, [5.0 + 2.0 * i for i in range(361)]) == pytest.approx(120.0)  # 2/min
    assert slope_per_hour(t, [100.0 - 0.5 * i for i in range(361)]) == pytest.approx(-30.0)
    assert slope_per_hour(t, [7.0] * 361) == pytest.approx(0.0)
    rng = random.Random(7)
    noisy = [3.0 * i / 60 + rng.gauss(0, 1) for i in range(361)]  # 3/hour plus noise
    assert slope_per_hour(t, noisy) == pytest.approx(3.0, abs=0.1)
    assert slope_per_hour(t[:1], [1.0]) is None


def test_spikes_are_anomalous_and_a_ramp_is_not():
    t = minutes(300)
    rng = random.Random(3)
    values = [10 + rng.gauss(0, 0.5) for _ in range(300)]
    values[50] = 30.0
    values[220] = -5.0
    found = anomalies(t, values)
    assert {a.time for a in found} == {iso(t[50]), iso(t[220])}
    assert found[0].time == iso(t[50]) and found[0].z > 3.5 and found[1].z < -3.5  # largest |z| first
    assert anomalies(t, [float(i) for i in range(300)]) == []  # a steady ramp has no outliers
    # a flat series with one spike (MAD = 0) still finds the spike
    flat = [1.0] * 300
    flat[10] = 9.0
    assert [a.time for a in anomalies(t, flat)] == [iso(t[10])]
    assert robust_z([4.0] * 10) == [0.0] * 10


def test_a_step_is_a_change_not_an_anomaly_when_it_lasts():
    t = minutes(360)
    values = [0.5] * 240 + [5.0] * 120
    s = summarize(t, values)
    assert s.first_fifth_mean == 0.5 and s.last_fifth_mean == 5.0 and s.change == 4.5
    assert s.anomaly_count == 0  # a third of the window at the new level is not an outlier
    assert s.slope_per_hour and s.slope_per_hour > 0
    short = [0.5] * 350 + [5.0] * 10  # a brief burst is
    assert summarize(t, short).anomaly_count == 10


def test_threshold_projection_crossing_and_never():
    t = minutes(61)
    ramp = [float(i) for i in range(61)]  # 60/hour, last 60 at t[60]
    s = summarize(t, ramp, threshold=120)
    assert s.reaches_threshold_at == iso(t[60] + timedelta(hours=1))
    assert summarize(t, ramp, threshold=30).reaches_threshold_at == iso(t[30])  # crossed in the window
    assert summarize(t, ramp, threshold=60).reaches_threshold_at == iso(t[60])  # exactly there now
    assert summarize(t, ramp, threshold=-10).reaches_threshold_at is None  # moving away from it
    falling = [100.0 - i for i in range(61)]  # -60/hour, last 40
    assert summarize(t, falling, threshold=10).reaches_threshold_at == iso(t[60] + timedelta(minutes=30))
    assert summarize(t, [5.0] * 61, threshold=10).reaches_threshold_at is None  # flat
    above = [200.0 + i for i in range(61)]  # above all along and rising: never crossed here
    assert summarize(t, above, threshold=100).reaches_threshold_at is None
    drained = [130.0 - 2 * i for i in range(61)]  # fell through 100 at t[15], still falling
    assert summarize(t, drained, threshold=100).reaches_threshold_at == iso(t[15])
    slow = [float(i) * 1e-9 for i in range(61)]  # would take centuries
    assert reaches_threshold_at(t, slow, 1e6, slope_per_hour(t, slow)) is None
    assert summarize(t, ramp).threshold is None and summarize(t, ramp).reaches_threshold_at is None


def test_downsample_by_meaning_and_percentile():
    t = minutes(10)
    v = [float(i) for i in range(10)]
    assert downsample(t, v, 20)[1] == 1
    for how, first in (("mean", 1.0), ("sum", 3.0), ("maximum", 2.0), ("minimum", 0.0), ("last", 2.0)):
        points, group = downsample(t, v, 4, how)
        assert group == 3 and len(points) == 4 and points[0].value == first and points[0].time == iso(t[0])
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    rng = random.Random(5)
    sample = [rng.uniform(0, 100) for _ in range(997)]
    cuts = statistics.quantiles(sample, n=20, method="inclusive")
    assert percentile(sample, 95) == pytest.approx(cuts[18]) and percentile(sample, 5) == pytest.approx(cuts[0])
    assert percentile([5.0], 95) == 5.0
    with pytest.raises(ValueError):
        percentile([], 50)
