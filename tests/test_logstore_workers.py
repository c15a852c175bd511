"""Loads staged in worker processes store exactly what the parse thread stores."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, UTC

import psutil
import pytest

from opsmcp.backends.logstore import LogStore, ingest as ingest_mod

NOW = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)


def _lines(n: int) -> list[str]:
    out = []
    for i in range(n):
        t = (NOW - timedelta(seconds=n - i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        out.append(json.dumps({"@timestamp": t, "message": f"order {i} paid", "level": ("INFO", "ERROR")[i % 2],
                               "service": f"svc-{i % 3}", "trace_id": f"t-{i // 4}", "host": f"h{i % 5}"}))
        if i % 97 == 0:
            out.append("{not json")
        if i % 131 == 0:
            out.append("   ")
    return out


def _dump(path) -> tuple[list, list, list]:
    with sqlite3.connect(path) as c:
        return (c.execute("SELECT * FROM logs ORDER BY id").fetchall(),
                c.execute("SELECT * FROM rollup_1m ORDER BY 1, 2, 3").fetchall(),
                c.execute("SELECT * FROM facets ORDER BY 1, 2").fetchall())


def test_worker_processes_store_what_the_parse_thread_stores(tmp_path, monkeypatch):
    lines = _lines(1_000)
    src = tmp_path / "app.jsonl"
    src.write_text("\n".join(lines) + "\n")
    reports = {}
    for name, workers, threshold in (("thread", 1, 0), ("pool", 2, 100)):
        monkeypatch.setattr(ingest_mod, "POOL_MIN_LINES", threshold)
        monkeypatch.setattr(ingest_mod, "WORKERS", workers)
        reports[name] = LogStore(tmp_path / f"{name}.db").load_files([src], batch_size=37)
        assert psutil.Process().children(recursive=True) == []  # the workers are gone after the load
    thread, pool = reports["thread"], reports["pool"]
    assert (pool.loaded, pool.bad, pool.blank) == (thread.loaded, thread.bad, thread.blank) == (1_000, 11, 8)
    assert [str(b) for b in pool.bad_lines] == [str(b) for b in thread.bad_lines]
    assert _dump(tmp_path / "pool.db") == _dump(tmp_path / "thread.db")
    assert LogStore(tmp_path / "pool.db").search("paid", service="svc-1").total == 333


def test_a_worker_that_dies_stops_the_load_with_whole_batches(tmp_path, monkeypatch):
    src = tmp_path / "app.jsonl"
    src.write_text("\n".join(_lines(2_000)) + "\n")
    monkeypatch.setattr(ingest_mod, "POOL_MIN_LINES", 100)
    monkeypatch.setattr(ingest_mod, "WORKERS", 2)
    real = ingest_mod.StagerProcesses.submit
    calls = []

    def submit(self, *args):
        calls.append(1)
        if len(calls) == 5:  # a worker killed mid-load
            self._procs[0].kill()
            self._procs[0].wait()
        return real(self, *args)

    monkeypatch.setattr(ingest_mod.StagerProcesses, "submit", submit)
    store = LogStore(tmp_path / "logs.db")
    with pytest.raises(Exception, match="parser process"):
        store.load_files([src], batch_size=50)
    assert psutil.Process().children(recursive=True) == []
    with sqlite3.connect(tmp_path / "logs.db") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = c.execute("SELECT count(*) FROM logs").fetchone()[0]
    monkeypatch.setattr(ingest_mod.StagerProcesses, "submit", real)
    again = store.load_files([src], batch_size=50)  # the re-run finishes it, no line twice
    assert again.loaded + stored == 2_000 and store.count() == 2_000
