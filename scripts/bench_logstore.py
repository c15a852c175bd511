#!/usr/bin/env python3
"""Benchmark the embedded log store: ingest speed, size on disk, query latency.

One run does everything on the same files:

1. generates N realistic JSON Lines log lines (default 1,000,000; deterministic seed):
   20 services, DEBUG/INFO/WARN(ING)/ERROR levels, UUID trace and event ids shared by
   the lines of one request across services, HTTP/DB/cache/payment messages with ids and
   durations, extra fields; 24 hours of traffic with an incident in the last quarter;
2. loads it with ``LogStore.load_files`` (the code behind ``opsmcp logs load``) and
   reports lines/s and the store's size on disk;
3. times five query shapes (p50/p95 over ``--runs`` runs after warm-up) three ways:
   through the store API (what the tools call), as the same query written directly in
   SQL on the same SQLite file (same rows, same count), and as ``grep -c`` over the JSON
   Lines file; plus the toolset layer (async + pydantic, no MCP transport);
4. times ``log_patterns`` over the whole day against the day before (drain3; sampled
   past 20,000 lines per window).

Usage::

    python scripts/bench_logstore.py                # 1M lines
    python scripts/bench_logstore.py --lines 100000 --runs 20
    python scripts/bench_logstore.py --lines 200000 --baseline /tmp/ingest-base --ingest-only

``--baseline DIR`` (another checkout, e.g. a clone of main) first loads the same file with
that checkout's code and with this one, in fresh processes, alternating for
``--ingest-rounds`` rounds, and prints lines/s, CPU and store size for each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any

from opsmcp.backends.logstore import COUNT_CAP, READER_MMAP_BYTES, SEQ_BITS, SEQ_MASK, LogStore, to_ms
from opsmcp.config import Settings
from opsmcp.toolsets.logs import LogTools

END = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
HOURS = 24
SERVICES = (
    "api-gateway", "order-processor", "payment-service", "inventory-service", "order-cancellation",
    "notification-service", "shipping-service", "auth-service", "user-service", "catalog-service",
    "search-service", "pricing-service", "cart-service", "recommendation-service", "fraud-detection",
    "email-worker", "report-builder", "audit-service", "billing-service", "ledger-service",
)
PATHS = ("/api/v1/users/me", "/api/v1/catalog/items", "/api/v1/cart", "/api/v1/search?q=widget", "/api/v1/prices")
TABLES = ("orders", "payments", "ledger", "customers")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(path: Path, n: int, seed: int = 7) -> dict[str, Any]:
    """Write ``n`` JSON Lines to ``path``; return facts the queries use (a trace id, ...)."""
    rng = random.Random(seed)
    start = END - timedelta(hours=HOURS)
    span_ms = HOURS * 3600 * 1000
    incident_ms = span_ms * 3 // 4
    step = span_ms / n * 3.2  # an event writes 3.2 lines on average
    t = 0.0
    out = 0
    facts: dict[str, Any] = {"traces": []}
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    base_ms = to_ms(start)

    def stamp(ms: float) -> str:
        return (start + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    with path.open("w") as fh:
        write = fh.write
        while out < n:
            t += rng.expovariate(1 / step)
            incident = t >= incident_ms
            r = rng.random()
            host = f"ip-10-0-{rng.randint(0, 9)}-{rng.randint(1, 254)}"
            if r < 0.45:  # an order flow across services, one trace
                trace, event, order = _uuid(rng), _uuid(rng), _uuid(rng)
                ms = rng.randint(20, 200) if not incident else rng.randint(300, 4800)
                steps = [
                    (0, "api-gateway", "INFO", f"POST /api/v1/orders 201 {ms}ms",
                     {"http.status": 201, "duration_ms": ms}),
                    (30, "order-processor", "INFO", "Received ORDER_CREATED event", {}),
                    (60, "order-processor", "DEBUG", f"Processing order {order}", {"order_id": order}),
                    (300, "inventory-service", "INFO", f"Reserved stock for order {order}", {"order_id": order}),
                    (800, "payment-service", "INFO", f"Payment authorised for order {order}",
                     {"order_id": order, "amount": round(rng.uniform(5, 500), 2)}),
                    (1200, "notification-service", "INFO", f"Sent confirmation email for order {order}",
                     {"order_id": order}),
                ]
                if incident and rng.random() < 0.2:
                    steps[4:] = [
                        (5800, "payment-service", "ERROR",
                         "Payment gateway gw.paynet.internal did not respond within 5000 ms", {"order_id": order}),
                        (5900, "payment-service", "ERROR", f"Payment failed for order {order} - Moving message to DLQ",
                         {"order_id": order}),
                    ]
                elif rng.random() < 0.03:
                    steps[2:] = [
                        (2000, "order-processor", "ERROR",
                         "Database connection timeout after 5000ms (orders-db.cluster:5432)", {}),
                        (2100, "order-processor", "WARN", f"Retry 1 - Processing order {order}", {"order_id": order}),
                    ]
                if len(facts["traces"]) < 64 and rng.random() < 0.01:
                    facts["traces"].append(trace)
                for dt, svc, lvl, msg, extra in steps:
                    doc = {"@timestamp": stamp(t + dt), "level": lvl, "service": svc, "message": msg,
                           "trace_id": trace, "event_id": event, "host": host}
                    doc.update(extra)
                    write(dumps(doc) + "\n")
                out += len(steps)
            elif r < 0.65:
                write(dumps({"@timestamp": stamp(t), "level": "DEBUG", "service": rng.choice(SERVICES),
                             "message": f"GET /healthz 200 {rng.randint(1, 4)}ms", "host": host}) + "\n")
                out += 1
            elif r < 0.80:
                code = rng.choice((200,) * 30 + (304, 400, 401, 404, 500))
                lvl = "ERROR" if code >= 500 else "WARN" if code >= 400 else "INFO"
                write(dumps({"@timestamp": stamp(t), "level": lvl, "service": rng.choice(SERVICES),
                             "message": f"GET {rng.choice(PATHS)} {code} {rng.randint(2, 300)}ms",
                             "trace_id": _uuid(rng), "host": host, "http.status": code}) + "\n")
                out += 1
            elif r < 0.90:
                ms = rng.randint(250, 900) if not incident else rng.randint(2500, 9000)
                write(dumps({"@timestamp": stamp(t), "level": "WARNING" if rng.random() < 0.1 else "WARN",
                             "service": rng.choice(("order-processor", "ledger-service", "billing-service")),
                             "message": f"Slow query on {rng.choice(TABLES)} table took {ms}ms",
                             "duration_ms": ms, "host": host}) + "\n")
                out += 1
            else:
                write(dumps({"@timestamp": stamp(t), "level": "INFO", "service": rng.choice(SERVICES),
                             "message": f"cache stats hits={rng.randint(900, 5000)} misses={rng.randint(5, 300)} "
                                        f"evictions={rng.randint(0, 50)}", "host": host}) + "\n")
                out += 1
    facts["lines"] = out
    facts["start_ms"] = base_ms
    return facts


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def timeit(fn: Callable[[], Any], runs: int, warmup: int = 3) -> tuple[float, float, Any]:
    """p50 and p95 in milliseconds over ``runs`` calls (after ``warmup``), and the last result."""
    (p50, p95, out), = timeit_interleaved([fn], runs, warmup)
    return p50, p95, out


def timeit_interleaved(fns: list[Callable[[], Any]], runs: int, warmup: int = 3) -> list[tuple[float, float, Any]]:
    """Like :func:`timeit` for several functions, run in turn, so that they share the
    same background load (the ratios stay fair on a busy machine)."""
    outs: list[Any] = [None] * len(fns)
    for _ in range(warmup):
        for i, fn in enumerate(fns):
            outs[i] = fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn()
            samples[i].append((time.perf_counter() - t0) * 1000)
    return [(statistics.median(s), _pct(s, 0.95), o) for s, o in zip(samples, outs, strict=True)]


LOAD_ONE = """
import json, os, resource, sys, time
from pathlib import Path
from opsmcp.backends.logstore import LogStore
src, db = sys.argv[1], Path(sys.argv[2])
for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
    p.unlink(missing_ok=True)
c0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
r = LogStore(db).load_files([src])
c1 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(c0, c1))
size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
print(json.dumps({"loaded": r.loaded, "bad": r.bad, "seconds": r.seconds, "cpu": cpu, "size": size,
                  "load": os.getloadavg()[0]}))
"""


def _cpu() -> float:
    """CPU seconds of this process and its finished children."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def compare_ingest(jsonl: Path, work: Path, baseline: Path, rounds: int) -> None:
    """Load ``jsonl`` with the ``baseline`` checkout's code and this one's, alternating
    (fresh processes, same file), and print a table of lines/s, CPU, size and ratios."""
    here = Path(__file__).resolve().parents[1] / "src"
    codes = {"baseline": baseline.resolve() / "src", "new": here}
    for src in codes.values():
        if not (src / "opsmcp" / "__init__.py").is_file():
            raise SystemExit(f"no opsmcp package under {src}")
    jsonl_size = jsonl.stat().st_size
    print(f"\ningest, same file, alternating: baseline = {codes['baseline']}, new = {codes['new']}")
    header = (f"{'round':>5s} {'code':8s} {'lines/s':>9s} {'wall s':>7s} {'CPU s':>6s} {'store/JSONL':>11s} "
              f"{'load avg':>8s}")
    print(header)
    print("-" * len(header))
    speeds: dict[str, list[float]] = {k: [] for k in codes}
    for rnd in range(rounds):
        order = list(codes) if rnd % 2 == 0 else list(reversed(codes))
        for name in order:
            env = dict(os.environ, PYTHONPATH=str(codes[name]))
            out = subprocess.run([sys.executable, "-c", LOAD_ONE, str(jsonl), str(work / f"cmp-{name}.db")],
                                 env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            assert r["bad"] == 0
            speed = r["loaded"] / r["seconds"]
            speeds[name].append(speed)
            print(f"{rnd + 1:5d} {name:8s} {speed:9,.0f} {r['seconds']:7.2f} {r['cpu']:6.1f} "
                  f"{r['size'] / jsonl_size:10.2f}x {r['load']:8.1f}")
    for name in codes:
        for p in (work / f"cmp-{name}.db", work / f"cmp-{name}.db-wal", work / f"cmp-{name}.db-shm"):
            p.unlink(missing_ok=True)
    ratios = [n / b for n, b in zip(speeds["new"], speeds["baseline"], strict=True)]
    print(f"median lines/s: baseline {statistics.median(speeds['baseline']):,.0f}, new "
          f"{statistics.median(speeds['new']):,.0f}; new/baseline per round: "
          + ", ".join(f"{r:.2f}x" for r in ratios) + f" (median {statistics.median(ratios):.2f}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000, help="log lines to generate (default 1,000,000)")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per query (default 50)")
    ap.add_argument("--grep-runs", type=int, default=5, help="timed runs per grep -c (default 5)")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--baseline", help="another checkout (e.g. a clone of main): compare ingest with its code")
    ap.add_argument("--ingest-rounds", type=int, default=3, help="alternating rounds for --baseline (default 3)")
    ap.add_argument("--ingest-only", action="store_true", help="stop after the ingest figures (no queries)")
    ap.add_argument("--queries-only", action="store_true",
                    help="reuse the files of an earlier run in --dir (skip generating and loading)")
    args = ap.parse_args()

    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="opsmcp-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    jsonl, db, facts_file = work / "logs.jsonl", work / "logs.db", work / "facts.json"
    if args.queries_only and not (args.dir and db.exists() and facts_file.exists()):
        ap.error("--queries-only needs --dir with the files of an earlier run")
    if not args.queries_only:
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            p.unlink(missing_ok=True)
    print(f"# opsmcp log store benchmark — {args.lines:,} lines, sqlite {sqlite3.sqlite_version}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    try:
        if args.queries_only:
            facts = json.loads(facts_file.read_text())
        else:
            t0 = time.perf_counter()
            facts = generate(jsonl, args.lines)
            facts_file.write_text(json.dumps(facts))
            print(f"generated {facts['lines']:,} lines ({jsonl.stat().st_size / 1e6:.0f} MB JSONL) "
                  f"in {time.perf_counter() - t0:.1f} s")

            # ------------------------------------------------------------ ingest
            store = LogStore(db)
            c0 = _cpu()
            report = store.load_files([str(jsonl)])
            cpu = _cpu() - c0
            assert report.bad == 0, report.summary()
            size = sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())
            print(f"ingest: {report.loaded:,} lines in {report.seconds:.1f} s = {report.lines_per_second:,.0f} "
                  f"lines/s (CPU {cpu:.1f} s = {report.loaded / cpu:,.0f} lines per CPU-second; "
                  f"load avg now {os.getloadavg()[0]:.1f})")
            print(f"store size: {size / 1e6:.0f} MB ({size / report.loaded:.0f} B/line; JSONL "
                  f"{jsonl.stat().st_size / report.loaded:.0f} B/line; {size / jsonl.stat().st_size:.2f}x)")
            if args.baseline:
                compare_ingest(jsonl, work, Path(args.baseline), args.ingest_rounds)
        if args.ingest_only:
            return 0

        # ---------------------------------------------------------------- queries
        reader = LogStore(db, readonly=True)
        raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        raw.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")  # the store's reader settings: compare like for like
        raw.execute("PRAGMA cache_size=-8192")
        tools = LogTools(Settings(log_store=db, data_dir=work), store=reader)
        loop = asyncio.new_event_loop()
        end_dt = END
        start_1h = END - timedelta(hours=1)
        start_24h = END - timedelta(hours=HOURS)
        trace = facts["traces"][len(facts["traces"]) // 2]
        lo1h, hi1h = to_ms(start_1h) << SEQ_BITS, (to_ms(end_dt) << SEQ_BITS) | SEQ_MASK
        cols = "id, service, level, trace_id, event_id, message"
        lcols = ", ".join("l." + c for c in cols.split(", "))

        def sql_trace() -> Any:
            return raw.execute(f"SELECT {cols} FROM logs WHERE trace_id = ? ORDER BY id", (trace,)).fetchall()

        def sql_filter() -> Any:
            rows = raw.execute(
                f"SELECT {cols} FROM logs WHERE service = ? AND level = ? AND id BETWEEN ? AND ? "
                "ORDER BY id DESC LIMIT 50",
                ("payment-service", "ERROR", lo1h, hi1h)).fetchall()
            n = raw.execute("SELECT count(*) FROM logs WHERE service = ? AND level = ? AND id BETWEEN ? AND ?",
                            ("payment-service", "ERROR", lo1h, hi1h)).fetchone()[0]
            return rows, n

        def sql_fts(match: str) -> Callable[[], Any]:
            def run() -> Any:
                rows = raw.execute(
                    f"SELECT {lcols} FROM logs_fts f JOIN logs l ON l.id = f.rowid WHERE logs_fts MATCH ? "
                    "ORDER BY f.rowid DESC LIMIT 50", (match,)).fetchall()
                n = raw.execute("SELECT count(*) FROM (SELECT 1 FROM logs_fts WHERE logs_fts MATCH ? LIMIT ?)",
                                (match, COUNT_CAP + 1)).fetchone()[0]
                return rows, n
            return run

        s0, s1 = to_ms(start_24h), to_ms(end_dt)

        def sql_stats_rollup() -> Any:  # the same method the store uses: whole 15-minute slots
            return raw.execute(
                "SELECT slot * 900000, level, sum(n) FROM rollup_15m WHERE service = '*' "
                "AND level IN (SELECT value FROM facets WHERE kind = 'level') AND slot >= ? AND slot < ? GROUP BY 1, 2",
                (s0 // 900000, s1 // 900000)).fetchall()

        def sql_stats_scan() -> Any:  # the obvious hand-written query over the lines
            return raw.execute(
                "SELECT ts / 900000 * 900000, level, count(*) FROM logs WHERE id BETWEEN ? AND ? GROUP BY 1, 2",
                (s0 << SEQ_BITS, (s1 << SEQ_BITS) | SEQ_MASK)).fetchall()

        def tool(coro_fn: Callable[[], Any]) -> Callable[[], Any]:
            return lambda: loop.run_until_complete(coro_fn())

        word, phrase = "authorised", '"did not respond"'
        shapes = [
            ("trace id", lambda: reader.get_trace(trace), sql_trace,
             tool(lambda: tools.get_trace(trace)), ["-F", trace]),
            ("service+level+1h window",
             lambda: reader.search(service="payment-service", level="ERROR", start=start_1h, end=end_dt, limit=50),
             sql_filter,
             tool(lambda: tools.search_logs(service="payment-service", level="ERROR",
                                            start="2026-01-15T11:00:00Z", end="2026-01-15T12:00:00Z")),
             ["-E", '"level":"ERROR","service":"payment-service"']),
            (f"word {word}", lambda: reader.search(word, limit=50), sql_fts(word),
             tool(lambda: tools.search_logs(query=word)), ["-i", "-w", word]),
            (f"phrase {phrase}", lambda: reader.search(phrase, limit=50), sql_fts(phrase),
             tool(lambda: tools.search_logs(query=phrase)), ["-i", "-F", phrase.strip('"')]),
            ("stats 24h by level, 15m", lambda: reader.stats(start_24h, end_dt, "level", 900), sql_stats_rollup,
             tool(lambda: tools.log_stats(start="2026-01-14T12:00:00Z", end="2026-01-15T12:00:00Z", interval="15m")),
             ["-E", '"level":"(ERROR|WARN|WARNING|INFO|DEBUG)"']),
        ]
        header = (f"{'query shape':28s} {'API p50':>8s} {'API p95':>8s} {'SQL p50':>8s} {'SQL p95':>8s} "
                  f"{'p95 ratio':>9s} {'tool p50':>8s} {'tool p95':>8s} {'grep -c':>9s}  result")
        print()
        print(header)
        print("-" * len(header))
        env = dict(os.environ, LC_ALL="C")
        for name, api, sql, via_tool, grep in shapes:
            (a50, a95, res), (q50, q95, _) = timeit_interleaved([api, sql], args.runs)
            t50, t95, _ = timeit(via_tool, args.runs)  # apart: its worker thread would slow the next call
            g50, _, g = timeit(lambda grep=grep: subprocess.run(["grep", "-c", *grep, str(jsonl)], capture_output=True,
                                                                text=True, env=env).stdout.strip(),
                               args.grep_runs, warmup=1)
            if hasattr(res, "hits"):
                what = f"{len(res.hits)} hits of {res.total:,}{'' if res.total_exact else '+'}"
            elif hasattr(res, "line_count"):
                what = f"{res.line_count} lines, {len(res.services)} services"
            else:
                what = f"{len(res.groups)} groups x {len(res.bucket_starts_ms)} buckets, {res.total:,} lines"
            print(f"{name:28s} {a50:8.2f} {a95:8.2f} {q50:8.2f} {q95:8.2f} {a95 / q95:8.2f}x {t50:8.2f} {t95:8.2f} "
                  f"{g50:8.0f}ms  {what}; grep {g}")
        n50, n95, _ = timeit(sql_stats_scan, max(5, args.runs // 5), warmup=1)
        print(f"{'  (stats as a GROUP BY scan)':28s} {'':8s} {'':8s} {n50:8.2f} {n95:8.2f}")
        print("\nms. API = LogStore methods; SQL = the same rows and count in hand-written SQL on the same file "
              "(same connection settings); tool = LogTools (async, thread hop, pydantic; no MCP transport); "
              "grep -c = p50 of counting a comparable pattern in the whole JSONL file (no time window): "
              + "; ".join(f"{name}: grep -c {' '.join(g)}" for name, *_, g in shapes))
        # log_patterns over the whole 24 hours (sampled past 20,000 lines) against the day before
        t0 = time.perf_counter()
        pat = loop.run_until_complete(tools.log_patterns(start="2026-01-14T12:00:00Z", end="2026-01-15T12:00:00Z"))
        took = time.perf_counter() - t0
        print(f"\nlog_patterns 24h: {took:.2f} s, {pat.lines:,} lines ({pat.lines_mined:,} mined), "
              f"{len(pat.patterns)} patterns shown ({sum(p.status == 'new' for p in pat.patterns)} new), "
              f"result {len(pat.model_dump_json()):,} bytes of JSON")
        loop.close()
        raw.close()
        reader.close()
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"files kept in {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
