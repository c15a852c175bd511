"""Rollup arithmetic: per-minute counts into rollup rows, and bucket counts read back.

The store keeps line counts per (service, level, minute) and per 15 minutes, with ``'*'``
rows for the sums over all services/levels. :func:`rollup_rows` computes a batch's
upserts; :func:`bucket_counts` answers "lines per bucket" from whole minutes and slots in
the rollups plus the ragged edges counted from the lines, so its cost does not grow with
the number of lines.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from opsmcp.backends.logstore.schema import COARSE_MS, MINUTE_MS, SEQ_BITS, SEQ_MASK

ONE_BUCKET_MS = COARSE_MS << 40  # an interval wider than any store: "count everything"


def rollup_rows(
    counts: dict[tuple[int, str, str], int],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Rows for rollup_1m, rollup_15m (with the '*' sums) and facets from a batch's
    per-(minute, service, level) line counts."""
    per = COARSE_MS // MINUTE_MS
    minutes: dict[tuple[str, str, int], int] = {}
    slots: dict[tuple[str, str, int], int] = {}
    services: dict[str, int] = {}
    levels: dict[str, int] = {}
    for (minute, service, level), n in counts.items():
        slot = minute // per
        for svc, lvl in ((service, level), ("*", level), (service, "*"), ("*", "*")):
            k = (svc, lvl, minute)
            minutes[k] = minutes.get(k, 0) + n
            k = (svc, lvl, slot)
            slots[k] = slots.get(k, 0) + n
        services[service] = services.get(service, 0) + n
        levels[level] = levels.get(level, 0) + n
    return (
        [(*k, n) for k, n in minutes.items()],
        [(*k, n) for k, n in slots.items()],
        [("service", k, n) for k, n in services.items()] + [("level", k, n) for k, n in levels.items()],
    )


def bucket_counts(
    c: sqlite3.Connection, lo_ms: int, hi_ms: int, interval_ms: int, group_by: str,
    service: str | None, levels: list[str] | None,
) -> list[tuple[int, str, int]]:
    """Counts as (bucket start ms, group, n) rows for [lo_ms, hi_ms], buckets aligned to
    the epoch; a (bucket, group) may come in several rows, to be summed.

    Whole 15-minute slots and minutes inside the window come from the rollups (when
    the interval is a multiple of them); only the ragged edges (under a minute each)
    are counted from the lines, so the cost does not grow with the number of lines.
    One statement (a UNION ALL of the parts) answers it.
    """
    if hi_ms < lo_ms:
        return []
    col = {"service": "service", "level": "level"}.get(group_by, "'*'")
    # The rollup rows to read: the filter's values, every value of the grouped column,
    # or the '*' sums.
    if service is not None:
        svcs = [service]
    elif group_by == "service":
        svcs = [r[0] for r in c.execute("SELECT value FROM facets WHERE kind='service'")]
    else:
        svcs = ["*"]
    if levels:
        lvls = list(levels)
    elif group_by == "level":
        lvls = [r[0] for r in c.execute("SELECT value FROM facets WHERE kind='level'")]
    else:
        lvls = ["*"]
    parts: list[str] = []
    args: list[Any] = []
    line_filter = ""
    line_args: list[Any] = []
    if service is not None:
        line_filter += " AND service = ?"
        line_args.append(service)
    if levels:
        line_filter += f" AND level IN ({','.join('?' * len(levels))})"
        line_args += levels
    roll_filter = (f"service IN ({','.join('?' * len(svcs))}) AND level IN ({','.join('?' * len(lvls))})")

    def raw(a: int, b: int) -> None:  # inclusive ms range, counted from the lines
        if b >= a:
            parts.append(f"SELECT (id >> {SEQ_BITS}) / {interval_ms} * {interval_ms}, {col}, count(*) FROM logs "
                         f"WHERE id BETWEEN ? AND ?{line_filter} GROUP BY 1, 2")
            args.extend([a << SEQ_BITS, (b << SEQ_BITS) | SEQ_MASK, *line_args])

    def rolled(table: str, unit: str, unit_ms: int, a: int, b: int) -> None:  # units [a, b)
        if b > a:
            parts.append(f"SELECT {unit} * {unit_ms} / {interval_ms} * {interval_ms}, {col}, n FROM {table} "
                         f"WHERE {roll_filter} AND {unit} >= ? AND {unit} < ?")  # summed below
            args.extend([*svcs, *lvls, a, b])

    m0 = -(-lo_ms // MINUTE_MS)  # first whole minute in the window
    m1 = (hi_ms + 1) // MINUTE_MS  # minutes before m1 end inside the window
    per = COARSE_MS // MINUTE_MS
    if interval_ms % MINUTE_MS or m1 <= m0:
        raw(lo_ms, hi_ms)
    else:
        raw(lo_ms, m0 * MINUTE_MS - 1)
        raw(m1 * MINUTE_MS, hi_ms)
        s0, s1 = -(-m0 // per), m1 // per
        if interval_ms % COARSE_MS == 0 and s1 > s0:
            rolled("rollup_1m", "minute", MINUTE_MS, m0, s0 * per)
            rolled("rollup_15m", "slot", COARSE_MS, s0, s1)
            rolled("rollup_1m", "minute", MINUTE_MS, s1 * per, m1)
        else:
            rolled("rollup_1m", "minute", MINUTE_MS, m0, m1)
    if not parts:
        return []
    return c.execute(" UNION ALL ".join(parts), args).fetchall()


def exact_count(c: sqlite3.Connection, service: str | None, levels: list[str] | None, lo_ms: int, hi_ms: int) -> int:
    """Exact line count for the filters in [lo_ms, hi_ms] (epoch ms), from the rollups."""
    return sum(n for _, _, n in bucket_counts(c, lo_ms, hi_ms, ONE_BUCKET_MS, "total", service, levels))
