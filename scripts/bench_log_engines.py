"""Per-call time of the CloudWatch Logs and Loki log backends against the direct call they wrap.

In the same run, in rounds that alternate the two sides:

* **CloudWatch Logs** (moto in its own process, ``filter`` mode: moto runs no Insights
  filter/stats; it also ignores JSON filter patterns, so both sides read the whole window):
  ``get_trace`` and ``error_lines`` (one trace) through
  :class:`~opsmcp.backends.cloudwatch_logs.CloudWatchLogs` against one direct boto3
  ``filter_log_events`` with the same JSON filter pattern and window (what the backend
  sends); ``search`` (a service filter, 50 newest hits, counted) against the direct
  ``filter_log_events`` pages over the same window.
* **Loki** (the loopback stand-in of tests/loki_standin.py): ``search`` (level filter, 50
  newest, counted) against one direct httpx ``query_range`` plus the ``query`` count with
  the same LogQL; ``get_trace`` against one direct ``query_range``.

Each round makes ``--calls`` calls per case; the table gives each case's median per call
(ms) over the rounds as min-max, and the ratio opsmcp/direct of the medians. The data:
``--lines`` lines of the sandbox scenario (its failing traces included), loaded with the
backends' own loaders.

Usage: python scripts/bench_log_engines.py [--rounds 5] [--calls 20] [--lines 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, table  # also puts tests/ on sys.path


def timed(fn: Callable[[], Any], calls: int) -> float:
    """Median seconds per call of ``calls`` calls of ``fn``."""
    out = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def scenario_file(lines: int) -> tuple[Path, str, str]:
    """A JSON Lines file of the scenario's newest ``lines`` lines (failing traces included);
    returns (path, a failing trace id, a service)."""
    from opsmcp.sandbox.scenario import build_scenario

    scenario = build_scenario()
    all_lines = list(scenario.log_lines())
    failing = {ln.trace_id for t in scenario.failing_traces.values() for ln in t}
    keep = {ln.to_json(): ln.timestamp for ln in all_lines if ln.trace_id in failing}
    keep.update({ln.to_json(): ln.timestamp for ln in all_lines[-lines:]})
    path = Path(tempfile.mkdtemp(prefix="opsmcp-bench-logs-")) / "scenario.jsonl"
    path.write_text("".join(text + "\n" for text in sorted(keep, key=keep.__getitem__)))
    tid = next(iter(scenario.failing_traces.values()))[0].trace_id
    return path, str(tid), all_lines[-1].service


Cases = dict[str, tuple[Callable[[], Any], Callable[[], Any]]]


def cloudwatch_cases(path: Path, tid: str, service: str) -> tuple[Cases, Callable[[], None]]:
    from moto_process import MotoProcess

    moto = MotoProcess().start()
    try:
        return _cloudwatch_cases(moto, path, tid, service)
    except BaseException:
        moto.stop()  # never leave the server behind when setting up fails
        raise


def _cloudwatch_cases(moto: Any, path: Path, tid: str, service: str) -> tuple[Cases, Callable[[], None]]:
    from opsmcp.backends.cloudwatch_logs import CloudWatchLogs
    from opsmcp.backends.cloudwatch_logs import query as q
    from opsmcp.backends.cloudwatch_logs.load import load_with_settings
    from opsmcp.config import Settings

    settings = Settings(aws_endpoint_url=moto.endpoint, log_backend="cloudwatch", cloudwatch_log_groups=["/bench/app"],
                        data_dir=path.parent)
    report = load_with_settings(settings, [str(path)])
    assert report.loaded, report.summary()
    backend = CloudWatchLogs.from_settings(settings)
    logs = backend.logs
    hi = int(datetime.now(UTC).timestamp() * 1000)
    lo = hi - backend.max_window_ms
    trace_pattern = q.json_pattern(backend.fields, trace_ids=[tid])
    error_pattern = q.json_pattern(backend.fields, levels=["ERROR", "CRITICAL", "FATAL"], trace_ids=[tid])
    service_pattern = q.json_pattern(backend.fields, service=service)

    def direct(pattern: str) -> Callable[[], Any]:
        def run() -> Any:
            token, events = None, []
            while True:
                kwargs: dict[str, Any] = {"logGroupName": "/bench/app", "startTime": lo, "endTime": hi,
                                          "filterPattern": pattern, "limit": 10_000}
                if token:
                    kwargs["nextToken"] = token
                resp = logs.filter_log_events(**kwargs)
                events += resp["events"]
                token = resp.get("nextToken")
                if not token:
                    return events
        return run

    # moto ignores JSON filter patterns (it returns the whole window): both sides read the same events
    assert 0 < backend.get_trace(tid).line_count <= len(direct(trace_pattern)())
    window = (datetime.now(UTC) - timedelta(hours=24), datetime.now(UTC))
    cases = {
        "cloudwatch get_trace": (lambda: backend.get_trace(tid), direct(trace_pattern)),
        "cloudwatch error_lines": (lambda: backend.error_lines([tid]), direct(error_pattern)),
        "cloudwatch search": (lambda: backend.search(service=service, start=window[0], end=window[1]),
                              direct(service_pattern)),
    }
    return cases, moto.stop


def loki_cases(path: Path, tid: str) -> tuple[Cases, Callable[[], None]]:
    import httpx
    from loki_standin import LokiStandIn

    from opsmcp.backends.loki import LokiLogs
    from opsmcp.backends.loki import logql as lq
    from opsmcp.backends.loki.client import LokiClient
    from opsmcp.backends.loki.load import load_jsonl

    standin = LokiStandIn().start()
    assert load_jsonl(LokiClient(standin.url), [str(path)]).loaded
    backend = LokiLogs(LokiClient(standin.url))
    raw = httpx.Client(base_url=standin.url)
    hi = int(datetime.now(UTC).timestamp() * 1000)
    lo = hi - 24 * 3_600_000
    sel = '{service_name=~".+"}'
    stages = lq.pipeline(backend.fields, levels=["ERROR"])
    trace_query = lq.log_query(sel, lq.pipeline(backend.fields, trace_ids=[tid]))

    def direct_search() -> Any:
        raw.get("/loki/api/v1/query", params={"query": lq.count_query(sel, stages, hi - lo + 1),
                                              "time": str((hi + 1) * 1_000_000 - 1)}).json()
        return raw.get("/loki/api/v1/query_range", params={
            "query": lq.log_query(sel, stages), "start": str(lo * 1_000_000), "end": str((hi + 1) * 1_000_000),
            "limit": "51", "direction": "backward"}).json()

    def direct_trace() -> Any:
        return raw.get("/loki/api/v1/query_range", params={
            "query": trace_query, "start": str(lo * 1_000_000), "end": str((hi + 1) * 1_000_000), "limit": "2001",
            "direction": "forward"}).json()

    window = (datetime.now(UTC) - timedelta(hours=24), datetime.now(UTC))
    cases = {
        "loki search": (lambda: backend.search(level="ERROR", start=window[0], end=window[1]), direct_search),
        "loki get_trace": (lambda: backend.get_trace(tid), direct_trace),
    }

    def stop() -> None:
        raw.close()
        backend.close()
        standin.stop()

    return cases, stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--lines", type=int, default=3000)
    args = ap.parse_args()
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    path, tid, service = scenario_file(args.lines)
    lines = sum(1 for _ in path.open())
    stops = []
    cases: Cases = {}
    for make in (lambda: cloudwatch_cases(path, tid, service), lambda: loki_cases(path, tid)):
        more, stop = make()
        cases.update(more)
        stops.append(stop)
    try:
        for ours, theirs in cases.values():  # warm both sides (clients, imports, caches)
            ours(), theirs()
        results: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
        for r in range(args.rounds):
            for name, (ours, theirs) in cases.items():
                first, second = (ours, theirs) if r % 2 == 0 else (theirs, ours)
                a, b = timed(first, args.calls), timed(second, args.calls)
                mine, direct = (a, b) if r % 2 == 0 else (b, a)
                results[name][0].append(mine * 1000)
                results[name][1].append(direct * 1000)
    finally:
        for stop in stops:
            stop()
    rows = []
    for name, (mine, direct) in results.items():
        rows.append([name, f"{min(mine):.2f}-{max(mine):.2f}", f"{min(direct):.2f}-{max(direct):.2f}",
                     f"{statistics.median(mine) / statistics.median(direct):.2f}x"])
    print(f"log engines: {lines:,} scenario lines; {args.rounds} rounds x {args.calls} calls; {machine()}")
    print(table(["case", "opsmcp ms/call (min-max)", "direct ms/call (min-max)", "ratio (medians)"], rows))
    print(json.dumps({"lines": lines, "rounds": args.rounds, "calls": args.calls,
                      "load": os.getloadavg()}, separators=(",", ":")))


if __name__ == "__main__":
    main()
