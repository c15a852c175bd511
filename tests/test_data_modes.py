"""Data files are private to the server's user: the data directory 0700, the files opsmcp
creates in it 0600, and `opsmcp doctor` warns about looser modes it finds (it does not
change them).

Regression (issue 19 item 14): audit.jsonl, alerts.json and logs.db were 0644 and the data
directory 0755 under the usual umask 022.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The common default umask, under which files were 0644 and directories 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_every_data_file_is_created_0600_in_a_0700_directory(tmp_path: Path, umask_022: None) -> None:
    from opsmcp.backends.alertstore import FileAlertStore, parse_webhook
    from opsmcp.backends.logstore import LogStore
    from opsmcp.calls.audit import FileAudit
    from opsmcp.sandbox.files import SandboxFiles
    from opsmcp.transport.auth import add_token

    data = tmp_path / "nested" / "data"
    anyio.run(FileAudit(data / "audit.jsonl").append, {"tool": "t", "phase": "intent"})
    assert mode(data) == 0o700
    alerts = FileAlertStore(data / "alerts.json")
    anyio.run(alerts.record, parse_webhook({"version": "4", "alerts": [{"status": "firing",
                                                                       "labels": {"alertname": "A"}}]}))
    lines = tmp_path / "lines.jsonl"
    lines.write_text('{"timestamp": "2026-11-21T10:00:00Z", "level": "ERROR", "service": "api", "message": "boom"}\n')
    LogStore(data / "logs.db").load_files([str(lines)], show_progress=False)
    add_token(data / "tokens.jsonl", "alice", ["ops:read"])
    sandbox = SandboxFiles(data)
    sandbox.make()
    lock = sandbox.lock(sandbox.users_lock, fcntl.LOCK_SH)
    sandbox.write_state({"pid": os.getpid()})
    try:
        with sqlite3.connect(data / "logs.db") as held:  # an open connection keeps -wal and -shm
            held.execute("SELECT count(*) FROM sqlite_master").fetchall()
            created = sorted(p.name for p in data.iterdir())
            assert {"audit.jsonl", "logs.db", "logs.db-wal", "logs.db-shm", "tokens.jsonl",
                    "sandbox"} <= set(created), created
            loose = {p.name: oct(mode(p)) for p in data.iterdir() if mode(p) != (0o700 if p.is_dir() else 0o600)}
            assert loose == {}, loose
            shared = {p.name: oct(mode(p)) for p in sandbox.dir.iterdir()}  # the shared sandbox's lock and state
            assert shared == {"users.lock": "0o600", "state.json": "0o600"}, shared
    finally:
        lock.close()
    assert mode(data) == 0o700


def test_doctor_warns_about_loose_modes_and_changes_nothing(tmp_path: Path, umask_022: None,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from opsmcp.calls.audit import FileAudit
    from opsmcp.cli import main as cli_main

    data = tmp_path / "data"
    anyio.run(FileAudit(data / "audit.jsonl").append, {"tool": "t", "phase": "intent"})
    monkeypatch.setenv("OPSMCP_DATA_DIR", str(data))
    monkeypatch.setenv("OPSMCP_AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("OPSMCP_TOOLSETS", "logs")
    cli_main(["doctor"])
    out = capsys.readouterr().out
    assert "OK   file modes:" in out and "WARN file modes" not in out, out
    os.chmod(data, 0o755)
    os.chmod(data / "audit.jsonl", 0o644)
    (data / "old-export.json").write_text("{}")  # any file in the data directory counts
    os.chmod(data / "old-export.json", 0o640)
    cli_main(["doctor"])
    out = capsys.readouterr().out
    assert f"WARN file modes: {data} is 0755: other users may read it; `chmod 700 {data}`" in out, out
    assert f"WARN file modes: {data / 'audit.jsonl'} is 0644: other users may read it; " \
           f"`chmod 600 {data / 'audit.jsonl'}`" in out, out
    assert f"{data / 'old-export.json'} is 0640" in out
    assert mode(data) == 0o755 and mode(data / "audit.jsonl") == 0o644  # warned, not changed
