"""The log tools' cost against the size of the embedded store: search_logs, get_trace,
log_stats and log_patterns at 1M and 10M lines (p50/p95 per call, result size, store size),
with the ratio of each figure to the smallest store in the same run.

The lines are ``scripts/bench_logstore.py``'s generator (20 services, shared trace ids,
24 hours with an incident in the last quarter): a bigger store holds more lines in the same
24 hours, so a 1-hour window holds 10x more lines at 10M than at 1M. Each store is
generated and loaded once (``LogStore.load_files``, the code of ``opsmcp logs load``) into
``--cache`` and reused by later runs (the JSON Lines file is removed after loading; the
store and a facts file stay); ``--fresh`` rebuilds. Calls go through ``LogTools`` (async,
thread hop, pydantic; no MCP transport), rounds interleaved over the sizes.

Usage: python scripts/bench_log_tools.py [--lines 1000000 10000000] [--runs 20] [--rounds 2]
       [--cache ~/.cache/opsmcp-bench] [--fresh]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
from bench_logstore import generate  # the generator of the ingest benchmark
from benchlib import machine, pct, table


def build(cache: Path, lines: int, fresh: bool) -> tuple[Path, dict[str, Any], str]:
    """The store of ``lines`` generated lines in ``cache`` (made when missing or ``fresh``).
    Returns ``(store path, facts, how it was obtained)``."""
    from opsmcp.backends.logstore import LogStore

    db, facts_file = cache / f"logs-{lines}.db", cache / f"logs-{lines}.facts.json"
    if facts_file.exists() and db.exists() and not fresh:
        return db, json.loads(facts_file.read_text()), "reused"
    cache.mkdir(parents=True, exist_ok=True)
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), facts_file):
        p.unlink(missing_ok=True)
    jsonl = cache / f"logs-{lines}.jsonl"
    t0 = time.perf_counter()
    facts = generate(jsonl, lines)
    gen = time.perf_counter() - t0
    report = LogStore(db).load_files([str(jsonl)])
    assert report.bad == 0, report.summary()
    jsonl.unlink()
    facts_file.write_text(json.dumps(facts))  # written last: a store without it is rebuilt
    return db, facts, (f"generated in {gen:.0f} s, loaded in {report.seconds:.0f} s "
                       f"({report.lines_per_second:,.0f} lines/s)")


def shapes(tools: Any, facts: dict[str, Any]) -> list[tuple[str, Callable[[], Any]]]:
    """The calls timed: (label, coroutine factory)."""
    trace = facts["traces"][len(facts["traces"]) // 2]
    return [
        ("get_trace (one trace id)", lambda: tools.get_trace(trace)),
        ("search_logs word, whole store", lambda: tools.search_logs(query="authorised")),
        ("search_logs phrase, whole store", lambda: tools.search_logs(query='"did not respond"')),
        ("search_logs service+level, 1 h", lambda: tools.search_logs(
            service="payment-service", level="ERROR", start="2026-01-15T11:00:00Z", end="2026-01-15T12:00:00Z")),
        ("log_stats 24 h by level, 15 min", lambda: tools.log_stats(
            start="2026-01-14T12:00:00Z", end="2026-01-15T12:00:00Z", interval="15m")),
        ("log_patterns 1 h vs the hour before", lambda: tools.log_patterns(
            start="2026-01-15T11:00:00Z", end="2026-01-15T12:00:00Z")),
        ("log_patterns 24 h vs the day before", lambda: tools.log_patterns(
            start="2026-01-14T12:00:00Z", end="2026-01-15T12:00:00Z")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per shape and round (after 2 warm-ups)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache", default=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                               / "opsmcp-bench"))
    parser.add_argument("--fresh", action="store_true", help="rebuild the stores even when cached")
    opts = parser.parse_args()

    from opsmcp.backends.logstore import LogStore
    from opsmcp.config import Settings
    from opsmcp.toolsets.logs import LogTools

    print(f"== log tools against store size ==\noptions: lines {opts.lines}, runs {opts.runs}, rounds {opts.rounds}, "
          f"cache {opts.cache}{', fresh' if opts.fresh else ''}\nstart: {machine()}")
    t_all = time.perf_counter()
    stores = {}
    for n in opts.lines:
        db, facts, how = build(Path(opts.cache), n, opts.fresh)
        size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
        stores[n] = (db, facts, size)
        print(f"{n:,} lines: store {size / 1e6:,.0f} MB ({how})", flush=True)
    loop = asyncio.new_event_loop()
    samples: dict[tuple[int, str], list[list[float]]] = {}
    sizes: dict[tuple[int, str], int] = {}
    for r in range(opts.rounds):
        for n in opts.lines:
            db, facts, _ = stores[n]
            tools = LogTools(Settings(log_store=db, data_dir=db.parent), store=LogStore(db, readonly=True))
            for label, make in shapes(tools, facts):
                runs = max(3, opts.runs // 4) if label.startswith("log_patterns") else opts.runs
                for _ in range(2):
                    result = loop.run_until_complete(make())
                ms = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    result = loop.run_until_complete(make())
                    ms.append((time.perf_counter() - t0) * 1000)
                samples.setdefault((n, label), []).append(ms)
                sizes[(n, label)] = len(result.model_dump_json())
            print(f"round {r + 1}, {n:,} lines done; load {os.getloadavg()[0]:.1f}", flush=True)
    loop.close()
    small = opts.lines[0]
    rows = []
    for (n, label), rounds in samples.items():
        p50s = [pct(ms, 0.5) for ms in rounds]
        p95s = [pct(ms, 0.95) for ms in rounds]
        base = min(pct(ms, 0.5) for ms in samples[(small, label)])
        rows.append([label, f"{n:,}", f"{min(p50s):.1f}-{max(p50s):.1f}", f"{min(p95s):.1f}-{max(p95s):.1f}",
                     f"{min(p50s) / base:.1f}x", f"{sizes[(n, label)]:,}"])
    rows.sort(key=lambda row: (row[0], int(row[1].replace(",", ""))))
    print(table(["call", "lines", "p50 ms (min-max of rounds)", "p95 ms (min-max)", "p50 / smallest store",
                 "result bytes"], rows))
    print(table(["lines", "store MB", "bytes per line"],
                [[f"{n:,}", f"{s / 1e6:,.0f}", f"{s / n:.0f}"] for n, (_, _, s) in stores.items()]))
    print(f"end: {machine()}; wall {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
