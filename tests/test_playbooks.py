"""Playbook runner: real ansible-runner runs against localhost inside pytest tmp dirs.

No mocks: every run below is ansible-playbook started by ansible-runner with our own
inventory (localhost, connection local). Each run costs ~1.5-3 s, so tests share runs
where they can (check, real, real-again in one test).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path

import anyio
import psutil
import pytest
import yaml

from opsmcp.backends import ansible as backend
from opsmcp.backends.ansible import PlaybookEntry, load_catalog, run_playbook, validate_vars
from opsmcp.catalog import packaged_catalog
from opsmcp.config import Settings
from opsmcp.errors import InvalidInput, NotFound, OpsError, WritesDisabled
from opsmcp.toolsets.playbooks import PlaybookRunResult, PlaybookTools, _fit, _to_result

CATALOG = packaged_catalog()
MARKER_ENV = "OPSMCP_TEST_MARKER"
DAY = 86_400


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def catalog() -> backend.Catalog:
    return load_catalog(CATALOG)


def entry_for(catalog: backend.Catalog, name: str, root: Path) -> PlaybookEntry:
    """The shipped entry, with ``root`` added to its allowed roots (in case TMPDIR is
    somewhere the catalog does not allow)."""
    entry = catalog.get(name)
    return entry.model_copy(update={"allowed_roots": [*entry.allowed_roots, str(root)]})


def catalog_copy(where: Path, root: Path) -> Path:
    """Write a copy of the shipped catalog into ``where`` with ``root`` added to every
    entry's allowed roots; return its path."""
    data = yaml.safe_load(CATALOG.read_text())
    data["defaults"]["allowed_roots"].append(str(root))
    for item in data["playbooks"]:
        item["file"] = str(CATALOG.parent / item["file"])
        if "allowed_roots" in item:
            item["allowed_roots"].append(str(root))
    path = where / "catalog.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: type, size, mtime (ns), content hash, inode."""
    snap: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            snap[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns, digest, st.st_ino)
    return snap


def make_old(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


def sleepers(arg: str) -> list[int]:
    """Pids of live processes whose command line is exactly ``sleep <arg>``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", arg] and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def marked(marker: str) -> list[int]:
    """Pids of live processes started with ``OPSMCP_TEST_MARKER=<marker>`` in their
    environment: the processes of this test's own runs, never another test's or user's."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER_ENV) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def wait_until(cond, timeout: float = 5.0) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.fixture
def marker() -> str:
    """A marker unique to this test: the slow playbook's sleep carries it in its environment."""
    return uuid.uuid4().hex


@pytest.fixture
def test_catalog(tmp_path: Path, marker: str) -> backend.Catalog:
    """A tiny test-only catalog: a slow playbook (its sleep is tagged with ``marker``) and
    one that fails mid-way."""
    (tmp_path / "slow.yml").write_text(
        textwrap.dedent(
            f"""\
            - hosts: all
              gather_facts: false
              tasks:
                - name: Before
                  ansible.builtin.debug: {{msg: starting}}
                - name: Sleep
                  ansible.builtin.command: "sleep {{{{ seconds }}}}"
                  environment: {{{MARKER_ENV}: "{marker}"}}
                - name: After
                  ansible.builtin.debug: {{msg: never}}
            """
        )
    )
    (tmp_path / "fails.yml").write_text(
        textwrap.dedent(
            """\
            - hosts: all
              gather_facts: false
              tasks:
                - name: Write marker
                  ansible.builtin.copy: {content: "step 1\\n", dest: "{{ marker }}"}
                - name: Break here
                  ansible.builtin.command: "sh -c 'echo disk on fire >&2; exit 3'"
                - name: Never runs
                  ansible.builtin.debug: {msg: unreachable}
            """
        )
    )
    (tmp_path / "catalog.yml").write_text(
        textwrap.dedent(
            f"""\
            version: 1
            defaults: {{targets: [localhost], allowed_roots: ["{tmp_path}"]}}
            playbooks:
              - name: slow
                file: slow.yml
                risk: read
                description: Sleeps.
                vars:
                  seconds: {{type: integer, min: 1, max: 60, default: 30}}
              - name: fails_midway
                file: fails.yml
                risk: change
                description: Writes a marker, then fails.
                vars:
                  marker: {{type: path, required: true}}
            """
        )
    )
    return load_catalog(tmp_path / "catalog.yml")


# --------------------------------------------------------------------------- catalog


def test_shipped_catalog_loads(catalog: backend.Catalog) -> None:
    assert {"collect_diagnostics", "cleanup_old_files", "rotate_log", "restart_worker"} <= set(catalog.names)
    assert catalog.get("collect_diagnostics").risk == "read"
    assert catalog.get("cleanup_old_files").risk == "destructive"
    for e in catalog.playbooks:
        assert e.file.is_absolute() and e.file.is_file()
        assert e.targets == ["localhost"]


def test_catalog_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(OpsError, match=str(missing)):
        load_catalog(missing)
    bad = tmp_path / "bad.yml"
    bad.write_text("playbooks: [\n")
    with pytest.raises(OpsError, match="not valid YAML"):
        load_catalog(bad)
    bad.write_text("playbooks:\n  - {name: x, file: gone.yml, description: d, risk: read}\n")
    with pytest.raises(OpsError, match=r"gone\.yml does not exist"):
        load_catalog(bad)
    (tmp_path / "p.yml").write_text("- hosts: all\n  tasks: []\n")
    bad.write_text("playbooks:\n  - {name: x, file: p.yml, description: d, risk: extreme}\n")
    with pytest.raises(OpsError, match=r"bad\.yml.*risk"):
        load_catalog(bad)
    bad.write_text(
        "playbooks:\n  - {name: x, file: p.yml, description: d, risk: read,"
        " vars: {n: {type: integer, min: 1, max: 5, default: 9}}}\n"
    )
    with pytest.raises(OpsError, match="at most 5"):
        load_catalog(bad)


def test_unknown_playbook_suggests_closest(catalog: backend.Catalog) -> None:
    with pytest.raises(NotFound) as err:
        catalog.get("cleanup_old")
    assert "cleanup_old_files" in str(err.value)
    with pytest.raises(NotFound, match="list_playbooks"):
        catalog.get("zzzzzz")


# --------------------------------------------------------------------------- validation


def test_validate_coerces_and_fills_defaults(catalog: backend.Catalog, tmp_path: Path) -> None:
    entry = entry_for(catalog, "cleanup_old_files", tmp_path)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    out = validate_vars(entry, {"directory": str(link), "age_days": "42", "recurse": "TRUE"})
    assert out == {
        "directory": os.path.realpath(tmp_path / "real"),
        "pattern": "*.log",
        "age_days": 42,
        "recurse": True,
    }
    assert validate_vars(entry, out) == out  # idempotent
    assert validate_vars(entry, {"directory": str(tmp_path), "recurse": "false", "pattern": None})["recurse"] is False


@pytest.mark.parametrize(
    ("name", "extra", "match"),
    [
        ("cleanup_old_files", {"directory": "{tmp}", "age_days": "abc"}, r"'age_days'.*integer"),
        ("cleanup_old_files", {"directory": "{tmp}", "age_days": 0}, r"'age_days'.*at least 1"),
        ("cleanup_old_files", {"directory": "{tmp}", "recurse": "maybe"}, r"'recurse'.*boolean"),
        ("cleanup_old_files", {"directory": "{tmp}", "colour": "red"}, r"no variable 'colour'"),
        ("cleanup_old_files", {}, r"needs variable 'directory'"),
        ("cleanup_old_files", {"directory": "{tmp}/../../etc"}, r"'directory'.*'\.\.'"),
        ("cleanup_old_files", {"directory": "etc/logs"}, r"'directory'.*absolute"),
        ("cleanup_old_files", {"directory": "/etc"}, r"'directory'.*must lie under"),
        ("cleanup_old_files", {"directory": "{tmp}/to_etc"}, r"'directory'.*resolves to /etc"),
        ("cleanup_old_files", {"directory": "{tmp}", "pattern": "../*"}, r"'pattern'.*must match"),
        ("cleanup_old_files", {"directory": "{tmp}", "pattern": "@/etc/passwd"}, r"'pattern'.*'@'"),
        ("cleanup_old_files", {"directory": "@{tmp}"}, r"'directory'.*'@'"),
        ("collect_diagnostics", {"match": "{{ lookup('pipe', 'id') }}"}, r"'match'.*Jinja"),
        ("collect_diagnostics", {"match": "{% raw %}"}, r"'match'.*Jinja"),
        ("collect_diagnostics", {"match": "DEBUG"}, r"'match'.*one of 'ERROR'"),
        ("collect_diagnostics", {"log_file": "{tmp}/a\n.log"}, r"'log_file'.*control characters"),
        ("restart_worker", {"pid_file": "{tmp}/w.pid", "start_command": "rm -rf /"}, r"'start_command'.*one of"),
        ("restart_worker", {"pid_file": "{tmp}/w.txt", "start_command": "sleep infinity"}, r"'pid_file'.*match"),
    ],
)
def test_validation_failures_run_nothing(
    catalog: backend.Catalog, tmp_path: Path, name: str, extra: dict, match: str
) -> None:
    (tmp_path / "to_etc").symlink_to("/etc")
    entry = entry_for(catalog, name, tmp_path)
    extra = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in extra.items()}
    before = snapshot(tmp_path)
    started = time.monotonic()
    with pytest.raises(InvalidInput, match=match) as err:
        run_playbook(entry, extra, check=True, timeout_seconds=30)
    assert time.monotonic() - started < 0.5  # refused before ansible started
    assert err.value.hint  # says what is allowed
    assert snapshot(tmp_path) == before


def test_limit_must_be_a_target(catalog: backend.Catalog) -> None:
    with pytest.raises(InvalidInput, match="limit 'db1'"):
        run_playbook(catalog.get("collect_diagnostics"), {}, check=True, limit="db1", timeout_seconds=30)


# --------------------------------------------------------------------------- real runs


async def test_collect_diagnostics_is_read_only(
    catalog: backend.Catalog, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    log = tmp_path / "app.log"
    log.write_text("".join(f"2024-01-01 INFO ok {i}\n2024-01-01 ERROR boom {i}\n" for i in range(30)))
    before = snapshot(tmp_path)
    entry = entry_for(catalog, "collect_diagnostics", tmp_path)

    tools = tools_for(catalog_copy(tmp_path_factory.mktemp("catalog"), tmp_path))
    runs: dict[str, object] = {}

    async def dry_run() -> None:
        runs["dry"] = await anyio.to_thread.run_sync(
            lambda: run_playbook(entry, {"log_file": str(log), "error_lines": "5"}, check=True, timeout_seconds=120)
        )

    async def real_run() -> None:
        # A real run of a read-risk playbook needs no confirmation.
        runs["real"] = await tools.execute("collect_diagnostics", {"log_file": str(log), "error_lines": 5}, check=False)

    async with anyio.create_task_group() as tg:  # independent runs: overlap them
        tg.start_soon(dry_run)
        tg.start_soon(real_run)
    dry, real = runs["dry"], runs["real"]
    assert dry.status == "successful", dry.stdout_tail
    assert dry.changed == 0 and dry.rc == 0
    assert real.status == "successful" and real.changed == 0 and not real.check
    report = next(t for t in real.tasks if t.task == "Report")
    for i in range(25, 30):
        assert f"ERROR boom {i}" in report.output
    assert "ERROR boom 24" not in report.output
    assert "load_average" in report.output and "Mem:" in report.output
    assert snapshot(tmp_path) == before


def test_cleanup_old_files_check_then_real_then_again(catalog: backend.Catalog, tmp_path: Path) -> None:
    d = tmp_path / "logs"
    (d / "sub").mkdir(parents=True)
    files = {
        "old.log": 10,
        "older.log": 400,
        "new.log": 1,
        "old.txt": 10,
        "sub/old.log": 30,
    }
    for rel, age in files.items():
        (d / rel).write_text(rel)
        make_old(d / rel, age)
    entry = entry_for(catalog, "cleanup_old_files", tmp_path)
    args = {"directory": str(d), "age_days": 7, "recurse": True}
    expect_gone = {str(d / "old.log"), str(d / "older.log"), str(d / "sub" / "old.log")}

    before = snapshot(tmp_path)
    dry = run_playbook(entry, args, check=True, timeout_seconds=120)
    assert dry.status == "successful", dry.stdout_tail
    assert snapshot(tmp_path) == before  # check mode changed nothing on disk
    assert dry.changed == 1  # the delete task, with one diff per file
    would_delete = {
        line.split('"')[1] for diff in dry.diffs for line in diff.diff.splitlines() if line.startswith(" path:")
    }
    assert would_delete == expect_gone
    assert all('+state: "absent"' in diff.diff for diff in dry.diffs)

    real = run_playbook(entry, args, check=False, timeout_seconds=120)
    assert real.status == "successful" and real.changed == dry.changed
    after = snapshot(tmp_path)
    assert {str(tmp_path / p) for p in set(before) - set(after)} == would_delete
    assert all(after[p] == before[p] for p in after if p != "logs" and p != "logs/sub")  # nothing else touched

    again = run_playbook(entry, args, check=False, timeout_seconds=120)
    assert again.status == "successful" and again.changed == 0 and not again.diffs
    assert snapshot(tmp_path) == after


async def test_rotate_log_check_then_real_and_empty_is_a_no_op(
    catalog: backend.Catalog, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    log = tmp_path / "a" / "app.log"
    content = "".join(f"line {i}\n" for i in range(500)).encode()
    log.write_bytes(content)
    inode = log.stat().st_ino
    empty = tmp_path / "b" / "empty.log"  # the state a rotated log is left in
    empty.touch()
    entry = entry_for(catalog, "rotate_log", tmp_path)
    tools = tools_for(catalog_copy(tmp_path_factory.mktemp("catalog"), tmp_path))
    before = snapshot(tmp_path)
    runs: dict[str, object] = {}

    async def preview() -> None:  # through the toolset: a check run needs no confirmation
        runs["dry"] = await tools.run_playbook("rotate_log", {"log_file": str(log)})

    async def rotate_empty() -> None:
        runs["empty"] = await anyio.to_thread.run_sync(
            lambda: run_playbook(entry, {"log_file": str(empty)}, check=False, timeout_seconds=120)
        )

    async with anyio.create_task_group() as tg:  # independent runs: overlap them
        tg.start_soon(preview)
        tg.start_soon(rotate_empty)
    dry, noop = runs["dry"], runs["empty"]
    assert dry.check and dry.status == "successful", dry.stdout_tail
    assert noop.status == "successful" and noop.changed == 0, noop.stdout_tail
    assert snapshot(tmp_path) == before  # neither run changed anything
    would = {t.task for t in dry.tasks if t.status == "changed"}
    assert would == {"Rotate the log"} and dry.changed == 1
    text = dry.preview_text()
    assert "Check-mode preview of playbook 'rotate_log'" in text and f"would rotate {log}" in text
    assert f"-size: {len(content)}" in text and "+size: 0" in text and "+compressed copy:" in text
    assert any("nothing was changed" in n for n in dry.notes)

    real = run_playbook(entry, {"log_file": str(log)}, check=False, timeout_seconds=120)
    assert real.status == "successful" and {t.task for t in real.tasks if t.status == "changed"} == would
    rotated = sorted(log.parent.glob("app.log.*.gz"))
    assert len(rotated) == 1
    assert f"to {rotated[0]}" in next(t.output for t in real.tasks if t.task == "Plan")  # the file the plan named
    assert gzip.decompress(rotated[0].read_bytes()) == content
    assert log.stat().st_size == 0 and log.stat().st_ino == inode  # truncated in place
    assert sorted(p.name for p in log.parent.iterdir()) == ["app.log", rotated[0].name]  # no .part left


def test_restart_worker(catalog: backend.Catalog, tmp_path: Path) -> None:
    entry = entry_for(catalog, "restart_worker", tmp_path)
    pid_file = tmp_path / "worker.pid"
    args = {"pid_file": str(pid_file), "start_command": "sleep infinity", "stop_timeout": 5}
    first = subprocess.Popen(["sleep", "infinity"], start_new_session=True)  # the running worker
    pid1 = first.pid
    pid_file.write_text(f"{pid1}\n")
    started: list[int] = []  # workers the playbook started
    try:
        before = snapshot(tmp_path)
        dry = run_playbook(entry, args, check=True, timeout_seconds=120)
        assert dry.status == "successful", dry.stdout_tail
        assert {t.task for t in dry.tasks if t.status == "changed"} == {
            "Stop the worker (SIGTERM, then SIGKILL after stop_timeout seconds)",
            "Start the worker",
        }
        assert snapshot(tmp_path) == before and sleepers("infinity").count(pid1) == 1

        real = run_playbook(entry, args, check=False, timeout_seconds=120)
        assert real.status == "successful", real.stdout_tail
        pid2 = int(pid_file.read_text())
        started.append(pid2)
        assert pid2 != pid1
        assert first.wait(10) == -signal.SIGTERM  # stopped by the playbook
        assert pid2 in sleepers("infinity")
        assert "running as pid" in next(t.output for t in real.tasks if t.task == "Report")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        for pid in started:
            if pid in sleepers("infinity"):  # never signal a pid that may have been reused
                os.kill(pid, signal.SIGKILL)


def test_restart_worker_refuses_unrelated_pid(catalog: backend.Catalog, tmp_path: Path) -> None:
    """Mid-way failure of a shipped playbook: partial results name the failed task."""
    entry = entry_for(catalog, "restart_worker", tmp_path)
    pid_file = tmp_path / "worker.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # pytest itself: must never be killed
    args = {"pid_file": str(pid_file), "start_command": "sleep infinity"}
    run = run_playbook(entry, args, check=False, timeout_seconds=120)
    assert run.status == "failed"
    assert run.failed_task == "Refuse to kill an unrelated process"
    assert "refusing to stop it" in run.message
    assert [t.status for t in run.tasks if t.task == "Inspect the pid file and its process"] == ["ok"]
    assert not any(t.task.startswith(("Stop", "Start")) for t in run.tasks)
    assert run.recap["localhost"].failed == 1


# --------------------------------------------------------------------------- environment

#: What the server's environment may hold and no playbook process may see.
SERVER_SECRETS = {
    "OPSMCP_APPROVAL_SECRET": "approval-secret-value",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
    "AWS_SESSION_TOKEN": "aws-session-value",
    "SERVER_ONLY_SETTING": "server-only",
}


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _assert_no_server_secret(env: dict[str, str], where: str) -> None:
    leaked = sorted(k for k in env if k in SERVER_SECRETS or k.startswith("AWS_")
                    or (k.startswith("OPSMCP_") and k != backend.RUN_MARKER_ENV))
    assert not leaked, f"{where} got {leaked}"
    assert not any(v in SERVER_SECRETS.values() for v in env.values()), where


def test_restart_worker_passes_no_server_secret_to_the_worker(
    catalog: backend.Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker a real restart_worker starts gets PATH and LANG, nothing of the server."""
    for k, v in SERVER_SECRETS.items():
        monkeypatch.setenv(k, v)
    entry = entry_for(catalog, "restart_worker", tmp_path)
    pid_file = tmp_path / "env.pid"
    run = run_playbook(entry, {"pid_file": str(pid_file), "start_command": "sleep infinity"}, check=False,
                       timeout_seconds=120)
    assert run.status == "successful", run.stdout_tail
    pid = int(pid_file.read_text())
    try:
        env = _environ(pid)
        _assert_no_server_secret(env, "the worker")
        assert set(env) == {"PATH", "LANG"} and "sleep" in Path(f"/proc/{pid}/cmdline").read_text()
    finally:
        if pid in sleepers("infinity"):
            os.kill(pid, signal.SIGKILL)


def test_playbook_processes_get_a_minimal_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process of a run, from ansible-playbook down to a task's shell, gets PATH, LANG,
    the run's own settings and the variables the playbook declares (``environment:``),
    and nothing of the server's environment. A task records the environment of its shell
    and of each ancestor up to this test's process."""
    for k, v in SERVER_SECRETS.items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "env"
    out.mkdir()
    (tmp_path / "probe.yml").write_text(textwrap.dedent(
        """\
        - hosts: all
          gather_facts: false
          tasks:
            - name: Record the environment of this shell and its ancestors
              ansible.builtin.shell: |
                p=$$
                echo "$$" > "$OUT/shell"
                while [ "$p" -gt 1 ] && [ "$p" != "$STOP_AT" ]; do
                  tr '\\0' '\\n' < "/proc/$p/environ" > "$OUT/$p"
                  p=$(awk '/^PPid:/ {print $2}' "/proc/$p/status")
                done
              environment:
                OUT: "{{ out }}"
                STOP_AT: "{{ stop_at }}"
                DECLARED_VAR: declared
        """))
    (tmp_path / "catalog.yml").write_text(textwrap.dedent(
        f"""\
        version: 1
        defaults: {{targets: [localhost], allowed_roots: ["{tmp_path}"]}}
        playbooks:
          - name: probe
            file: probe.yml
            risk: read
            description: Records environments.
            vars:
              out: {{type: path, required: true}}
              stop_at: {{type: integer, required: true}}
        """))
    entry = load_catalog(tmp_path / "catalog.yml").get("probe")
    run = run_playbook(entry, {"out": str(out), "stop_at": os.getpid()}, check=False, timeout_seconds=120)
    assert run.status == "successful", run.stdout_tail
    recorded = [p for p in out.iterdir() if p.name.isdigit()]
    assert len(recorded) >= 3  # the shell, the module's python, ansible-playbook (and its worker)
    envs = {p.name: dict(line.split("=", 1) for line in p.read_text().splitlines() if "=" in line)
            for p in recorded}
    for pid, env in envs.items():
        _assert_no_server_secret(env, f"process {pid}")
        assert "PATH" in env and env.get("LANG", "").lower().replace("-", "").endswith(".utf8"), (pid, env)
    shell = envs[(out / "shell").read_text().strip()]
    assert shell["DECLARED_VAR"] == "declared" and shell[backend.RUN_MARKER_ENV]


def test_failure_midway_returns_partial_results(test_catalog: backend.Catalog, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    run = run_playbook(test_catalog.get("fails_midway"), {"marker": str(marker)}, check=False, timeout_seconds=120)
    assert run.status == "failed" and run.rc not in (0, None)
    assert run.failed_task == "Break here"
    assert [(t.task, t.status) for t in run.tasks] == [("Write marker", "changed"), ("Break here", "failed")]
    assert "disk on fire" in run.tasks[1].message and "Break here" in run.message
    assert run.recap["localhost"].changed == 1 and run.recap["localhost"].failed == 1
    assert marker.read_text() == "step 1\n"
    assert any("+step 1" in d.diff for d in run.diffs)
    assert "Break here" in run.stdout_tail


def test_timeout_stops_the_run(test_catalog: backend.Catalog, marker: str) -> None:
    started = time.monotonic()
    run = run_playbook(test_catalog.get("slow"), {"seconds": 37}, check=False, timeout_seconds=2)
    assert run.status == "timeout"
    assert "time limit" in run.message and run.rc == 254
    assert time.monotonic() - started < 10
    assert not any(t.task == "After" for t in run.tasks)
    assert wait_until(lambda: not marked(marker))


def test_cancel_event_stops_the_run(test_catalog: backend.Catalog, marker: str) -> None:
    sleeping = threading.Event()
    cancel = threading.Event()
    events: list[backend.TaskEvent] = []

    def on_event(ev: backend.TaskEvent) -> None:
        events.append(ev)
        if ev.kind == "task_start" and ev.task == "Sleep":
            sleeping.set()

    result: list[backend.PlaybookRun] = []
    worker = threading.Thread(
        target=lambda: result.append(
            run_playbook(
                test_catalog.get("slow"), {"seconds": 38}, check=False, timeout_seconds=120,
                on_event=on_event, cancel_event=cancel,
            )
        )
    )
    worker.start()
    assert sleeping.wait(30)
    assert wait_until(lambda: bool(marked(marker)), 10)
    cancel.set()
    t0 = time.monotonic()
    worker.join(15)
    assert not worker.is_alive() and time.monotonic() - t0 < 5
    run = result[0]
    assert run.status == "canceled" and "canceled" in run.message
    assert [(t.task, t.status) for t in run.tasks] == [("Before", "ok")]
    assert [e.kind for e in events][:3] == ["task_start", "task_end", "task_start"]
    assert events[0].total == 3
    assert wait_until(lambda: not marked(marker))


# --------------------------------------------------------------------------- toolset


def tools_for(catalog_path: Path) -> PlaybookTools:
    return PlaybookTools(Settings(playbook_catalog=catalog_path, playbook_timeout_seconds=60))


async def test_list_playbooks() -> None:
    tools = tools_for(CATALOG)
    tools.check()  # catalog loads, ansible-playbook is installed
    result = await tools.list_playbooks()
    by_name = {p.name: p for p in result.playbooks}
    assert set(by_name) >= {"collect_diagnostics", "cleanup_old_files", "rotate_log", "restart_worker"}
    age = by_name["cleanup_old_files"].vars["age_days"]
    assert (age.type, age.default, age.min) == ("integer", 7, 1)
    assert by_name["cleanup_old_files"].vars["directory"].required
    assert "/tmp" in by_name["cleanup_old_files"].allowed_roots
    assert by_name["restart_worker"].allowed_roots == ["/tmp", "/var/tmp", "/run"]


async def test_real_run_of_a_change_playbook_needs_confirmation(test_catalog: backend.Catalog, tmp_path: Path) -> None:
    tools = tools_for(test_catalog.path)
    marker = tmp_path / "marker.txt"
    with pytest.raises(WritesDisabled, match="needs confirmation") as err:
        await tools.run_playbook("fails_midway", {"marker": str(marker)}, check=False)
    assert "check=true" in err.value.hint
    with pytest.raises(NotFound, match="fails_midwy"):
        await tools.run_playbook("fails_midwy", {})
    with pytest.raises(InvalidInput):
        await tools.run_playbook("fails_midway", {"marker": "/etc/passwd"})
    assert not marker.exists()


async def test_toolset_progress_and_cancellation(test_catalog: backend.Catalog, marker: str) -> None:
    tools = tools_for(test_catalog.path)
    seen: list[tuple[float, float | None, str]] = []
    sleeping = anyio.Event()

    async def progress(done: float, total: float | None, message: str) -> None:
        seen.append((done, total, message))
        if message.endswith("Sleep"):
            sleeping.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: tools.execute("slow", {"seconds": 39}, confirmed=True, progress=progress))
            await sleeping.wait()
            tg.cancel_scope.cancel()  # what MCP cancellation does to the request's task
    assert [m for _, _, m in seen] == ["task 1: Before", "Before: ok on localhost", "task 2: Sleep"]
    values = [d for d, _, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values) and seen[0][1] == 3
    # The abandoned worker thread saw the cancel event: ansible-runner killed the run.
    end = time.monotonic() + 10
    while marked(marker) and time.monotonic() < end:
        await anyio.sleep(0.05)
    assert not marked(marker)


# --------------------------------------------------------------------------- bounds


def test_diffs_and_outputs_are_bounded(test_catalog: backend.Catalog) -> None:
    collector = backend.EventCollector(test_catalog.get("slow"), None, None)
    big = "x" * 10_000
    for i in range(30):
        collector.handle(
            {
                "event": "runner_on_ok",
                "event_data": {
                    "task": f"t{i}",
                    "host": "localhost",
                    "task_action": "copy",
                    "res": {"changed": True, "diff": {"before": big + "\n", "after": big + "y\n"}},
                },
            }
        )
    run = collector.result(
        check=True, status="successful", rc=0, duration=1.0, stdout_tail="", stdout_truncated=False, timeout_seconds=1
    )
    assert len(run.diffs) == backend.MAX_DIFFS and run.diffs_truncated
    assert all(d.truncated and len(d.diff.encode()) <= backend.MAX_DIFF_BYTES + 20 for d in run.diffs)
    assert run.recap["localhost"].changed == 30


def _big_run(test_catalog: backend.Catalog) -> backend.PlaybookRun:
    """A run with 40 tasks, long debug outputs, 20 diffs and a long stdout tail."""
    collector = backend.EventCollector(test_catalog.get("slow"), None, None)
    for i in range(40):
        res = {"changed": True, "diff": {"before": f"old {i}\n" * 200, "after": f"new {i}\n" * 200}}
        collector.handle({"event": "runner_on_ok",
                          "event_data": {"task": f"copy {i}", "host": "localhost", "task_action": "copy", "res": res}})
        collector.handle({"event": "runner_on_ok",
                          "event_data": {"task": f"show {i}", "host": "localhost", "task_action": "debug",
                                         "res": {"msg": f"line {i} " * 500}}})
    return collector.result(check=True, status="successful", rc=0, duration=1.0,
                            stdout_tail="ok: [localhost]\n" * 500, stdout_truncated=False, timeout_seconds=1)


@pytest.mark.parametrize("budget", [60_000, 20_000, 4_000])
def test_result_size_budget(test_catalog: backend.Catalog, budget: int) -> None:
    """A run result is cut to the byte budget in a fixed order (stdout, diffs, debug outputs,
    tasks), every cut is flagged and named in notes, and what is kept is the start."""
    full = _to_result(_big_run(test_catalog))
    assert len(full.model_dump_json().encode()) > 60_000 and full.changed == 40
    fitted = _fit(full.model_copy(deep=True), budget)
    size = len(fitted.model_dump_json().encode())
    assert size <= budget, (size, fitted.notes)
    assert fitted.truncated and fitted.stdout_truncated and len(fitted.stdout_tail) <= 1_000
    assert fitted.diffs_truncated and len(fitted.diffs) < len(full.diffs)
    assert [d.task for d in fitted.diffs] == [d.task for d in full.diffs][: len(fitted.diffs)]
    assert [t.task for t in fitted.tasks] == [t.task for t in full.tasks][: len(fitted.tasks)]
    notes = " ".join(fitted.notes)
    assert "stdout_tail was cut" in notes and "diff(s) were dropped" in notes
    if budget < 20_000:
        assert "Debug outputs were cut" in notes and fitted.tasks_truncated
        assert f"of {len(full.tasks)} task results fit" in notes
    assert (fitted.changed, fitted.recap) == (full.changed, full.recap)  # totals are never cut
    PlaybookRunResult.model_validate(json.loads(fitted.model_dump_json()))  # still a valid result


def test_small_result_is_left_alone(test_catalog: backend.Catalog) -> None:
    run = backend.EventCollector(test_catalog.get("slow"), None, None).result(
        check=False, status="successful", rc=0, duration=0.5, stdout_tail="done", stdout_truncated=False,
        timeout_seconds=1)
    result = _to_result(run)
    assert _fit(result.model_copy(deep=True), 2_000) == result and not result.truncated


def test_leftover_processes_are_found_by_their_run_marker() -> None:
    """What a cancelled run leaves behind (processes in their own session, as ansible's
    workers are) is killed by its run id, and only that: a process with another run id
    (or none) lives on."""
    from opsmcp.backends.ansible.runner import _kill_marked

    run_id, other = uuid.uuid4().hex, uuid.uuid4().hex
    env = {**os.environ, backend.RUN_MARKER_ENV: run_id}
    mine = [subprocess.Popen(["sleep", "60"], env=env, start_new_session=True) for _ in range(2)]
    theirs = subprocess.Popen(["sleep", "60"], env={**os.environ, backend.RUN_MARKER_ENV: other},
                              start_new_session=True)
    try:
        assert _kill_marked(run_id) == 2
        assert all(p.wait(5) == -signal.SIGKILL for p in mine)
        assert theirs.poll() is None
        assert _kill_marked(run_id) == 0
    finally:
        for p in [*mine, theirs]:
            if p.poll() is None:
                p.kill()
                p.wait()
