"""The log store under faults: `opsmcp logs load` killed with SIGKILL mid-way.

After the kill the store passes ``PRAGMA integrity_check`` and holds whole batches only; a
re-run of the same file continues after the stored lines, so every line is stored exactly
once. Loading a finished file again stores nothing; a file that grew loads only its new
lines.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path

from opsmcp.backends.logstore import LogStore
from opsmcp.errors import OpsError

LINES = 200_000
BATCH = 20_000  # the loader's batch size (LogStore.load_files' default)
KILL_AFTER_LINES = 40_000  # kill once at least two batches are committed
T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def _write(path: Path, first: int, count: int, mode: str = "w") -> None:
    with path.open(mode) as fh:
        for i in range(first, first + count):
            t = (T0 + timedelta(milliseconds=i * 37)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            fh.write(json.dumps({"@timestamp": t, "level": "ERROR" if i % 50 == 0 else "INFO",
                                 "service": f"svc-{i % 7}", "message": f"line {i:06d} done"}) + "\n")


def _count(db: Path) -> int:
    try:
        return LogStore(db, readonly=True).count()
    except OpsError:  # not created yet, or the schema is being written
        return 0


def _distinct_and_total(db: Path) -> tuple[int, int, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        distinct, total = conn.execute("SELECT count(DISTINCT message), count(*) FROM logs").fetchone()
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        return int(distinct), int(total), check
    finally:
        conn.close()


def test_sigkill_mid_load_then_rerun_stores_every_line_once(tmp_path):
    src = tmp_path / "big.jsonl"
    db = tmp_path / "logs.db"
    _write(src, 0, LINES)
    cmd = [sys.executable, "-m", "opsmcp.cli", "logs", "load", str(src), "--store", str(db), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240  # generous: a loaded 2-core machine loads ~8k lines/s
    try:
        while _count(db) < KILL_AFTER_LINES:
            assert proc.poll() is None, f"the load ended before the kill: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "the load made no progress in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    distinct, stored, check = _distinct_and_total(db)
    assert check == "ok"
    assert stored == distinct and stored % BATCH == 0 and 0 < stored < LINES, stored  # whole batches only

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{stored:,} lines already stored by an earlier load skipped" in rerun.stderr
    distinct, total, check = _distinct_and_total(db)
    assert check == "ok" and total == distinct == LINES

    again = LogStore(db).load_files([str(src)])
    assert again.loaded == 0 and again.skipped == LINES
    _write(src, LINES, 10, mode="a")  # the file grew
    grown = LogStore(db).load_files([str(src)])
    assert grown.loaded == 10 and grown.skipped == LINES
    assert _distinct_and_total(db)[:2] == (LINES + 10, LINES + 10)


def test_a_different_file_with_the_same_name_loads_in_full(tmp_path):
    src, db = tmp_path / "a.jsonl", tmp_path / "logs.db"
    _write(src, 0, 100)
    assert LogStore(db).load_files([str(src)]).loaded == 100
    src.write_text(json.dumps({"@timestamp": "2026-11-22T00:00:00Z", "message": "another file"}) + "\n")
    assert LogStore(db).load_files([str(src)]).loaded == 1
    LogStore(db).reset()
    _write(src, 0, 100)
    assert LogStore(db).load_files([str(src)]).loaded == 100  # reset forgets what was loaded
