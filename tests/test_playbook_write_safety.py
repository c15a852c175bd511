"""Playbooks never act through a link another user planted inside an allowed root.

Someone who can write into a root (``/tmp``) can put a symbolic link or a hard link at any
name a playbook opens, creates or renames, including names derived from a variable
(``<pid_file>.out``, ``<log>.<UTC second>.gz``), or swap a file for a link after the
variable was validated. Every test here runs the shipped playbooks for real (real
ansible-runner) against such plants and checks that the files they point at (the
"victims", outside the entry's allowed roots) are never read, written, truncated, renamed
or deleted. None of them depends on the kernel's ``fs.protected_symlinks``: the links
are planted in directories the test owns, and the playbooks refuse links themselves.

Three ways to plant:

* before the run, at derived names (``.out``, ``.pid.part``, ``.gz.part``, ``.gz``);
* at the variable itself, with validation relaxed for it (as if the link was swapped in
  after validation), so the playbook is what must refuse;
* between the check and the act: when the ``Plan`` task starts (after every check task
  has reported, before the acting task starts), or repeatedly from a thread during real
  runs (bounded in count and time).

The primitives the playbooks' modules use (``module_utils/opsmcp_safefs.py``) are also
tested in-process, with hypothesis over what is planted at a name.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import signal
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_playbooks import catalog, make_old, sleepers  # noqa: F401  (fixture)

from opsmcp.backends import ansible as backend
from opsmcp.backends.ansible import VarSpec, run_playbook
from opsmcp.catalog import packaged_dir
from opsmcp.errors import InvalidInput

SAFEFS_PATH = packaged_dir() / "playbooks" / "module_utils" / "opsmcp_safefs.py"


@pytest.fixture(scope="module")
def safefs():
    """The modules' primitives, loaded from the shipped file (Ansible bundles the same file)."""
    spec = importlib.util.spec_from_file_location("opsmcp_safefs", SAFEFS_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): the entry's only allowed root, and a directory of victims."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    return root, outside


def only_root(catalog: backend.Catalog, name: str, root: Path) -> backend.PlaybookEntry:  # noqa: F811
    """The shipped entry with ``root`` as its only allowed root."""
    return catalog.get(name).model_copy(update={"allowed_roots": [str(root)]})


def relaxed(entry: backend.PlaybookEntry, var: str) -> backend.PlaybookEntry:
    """``entry`` with ``var`` an unconstrained string: the value reaches the playbook as
    given, as if a link had been swapped in after validation."""
    vars_ = {**entry.vars, var: VarSpec(type="string", required=entry.vars[var].required)}
    return entry.model_copy(update={"vars": vars_})


class Victim:
    """A file outside the allowed roots; :meth:`intact` checks nothing touched it."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        path.write_text(text)
        st_ = path.stat()
        self.before = (text.encode(), st_.st_ino, st_.st_mtime_ns)

    def intact(self) -> bool:
        st_ = self.path.stat()
        return (self.path.read_bytes(), st_.st_ino, st_.st_mtime_ns) == self.before


def plant(path: Path, kind: str, victim: Path) -> None:
    """Put a symbolic link or a hard link to ``victim`` at ``path``."""
    if kind == "symlink":
        path.symlink_to(victim)
    else:
        os.link(victim, path)


def at_plan(action):
    """An ``on_event`` callback running ``action`` once, when the ``Plan`` task starts: after
    every check task has reported and before the acting task starts. Returns (callback,
    event set once the action ran)."""
    done = threading.Event()

    def on_event(ev: backend.TaskEvent) -> None:
        if ev.kind == "task_start" and ev.task == "Plan" and not done.is_set():
            action()
            done.set()

    return on_event, done


def utc_names(prefix: str, suffix: str, seconds: int = 120) -> list[str]:
    """``<prefix><UTC second><suffix>`` for every second from 2 s ago to ``seconds`` ahead."""
    now = time.time()
    return [f"{prefix}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now + s))}{suffix}" for s in range(-2, seconds)]


def kill_workers(pids: list[int]) -> None:
    for pid in pids:
        if pid in sleepers("infinity"):  # never signal a pid that may have been reused
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- restart_worker


def test_restart_worker_never_writes_through_planted_links(catalog, dirs) -> None:  # noqa: F811
    """A symlink at ``<pid_file>.out`` and at the old temp name ``<pid_file>.part`` before the
    run, a hard link at ``.out`` planted between the check and the act: all are replaced,
    none is written through."""
    root, outside = dirs
    victims = [Victim(outside / n, f"victim {n}\n") for n in ("out", "part", "hard")]
    entry = only_root(catalog, "restart_worker", root)
    pid_file, out_file = root / "w.pid", root / "w.out"
    args = {"pid_file": str(pid_file), "start_command": "sleep infinity", "stop_timeout": 5}
    out_file.symlink_to(victims[0].path)
    (root / "w.pid.part").symlink_to(victims[1].path)
    started: list[int] = []
    try:
        first = run_playbook(entry, args, check=False, timeout_seconds=120)
        assert first.status == "successful", first.stdout_tail
        started.append(int(pid_file.read_text()))
        assert all(v.intact() for v in victims)
        assert not out_file.is_symlink() and out_file.stat().st_nlink == 1
        assert not pid_file.is_symlink() and started[0] in sleepers("infinity")

        def hard_link_out() -> None:
            out_file.unlink()
            os.link(victims[2].path, out_file)

        on_event, planted = at_plan(hard_link_out)
        second = run_playbook(entry, args, check=False, timeout_seconds=120, on_event=on_event)
        assert planted.is_set()
        assert second.status == "successful", second.stdout_tail
        started.append(int(pid_file.read_text()))
        assert all(v.intact() for v in victims), [v.path.read_bytes() for v in victims]
        assert victims[2].path.stat().st_nlink == 1  # the planted name was replaced
        assert started[0] not in sleepers("infinity") and started[1] in sleepers("infinity")
        assert (root / "w.pid.part").is_symlink()  # the old temp name is no longer used
        assert sorted(p.name for p in root.iterdir()) == ["w.out", "w.pid", "w.pid.part"]  # no temp left
    finally:
        kill_workers(started)


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_restart_worker_refuses_a_linked_pid_file(catalog, dirs, kind: str) -> None:  # noqa: F811
    """A pid file that is a link to another service's pid file is refused: that service's
    process (running the same command) is not stopped, its pid file not touched."""
    root, outside = dirs
    other = subprocess.Popen(["sleep", "infinity"], start_new_session=True)
    try:
        victim = Victim(outside / "other.pid", f"{other.pid}\n")
        plant(root / "w.pid", kind, victim.path)
        entry = relaxed(only_root(catalog, "restart_worker", root), "pid_file")
        run = run_playbook(entry, {"pid_file": str(root / "w.pid"), "start_command": "sleep infinity"},
                           check=False, timeout_seconds=120)
        assert other.poll() is None and victim.intact()
        assert run.status == "failed" and run.failed_task == "Inspect the pid file and its process"
        assert "refused" in (run.message or "")
        assert sorted(p.name for p in root.iterdir()) == ["w.pid"]
    finally:
        other.kill()
        other.wait()
        pid_file = root / "w.pid"
        if not pid_file.is_symlink() and pid_file.read_text().strip().isdigit():  # a worker it started
            kill_workers([int(pid_file.read_text())] if pid_file.stat().st_nlink == 1 else [])


# --------------------------------------------------------------------------- rotate_log


def test_rotate_log_never_writes_through_planted_part_names(catalog, dirs) -> None:  # noqa: F811
    """122 symlinks at ``app.log.<UTC second>.gz.part`` (every name the old playbook could
    use in the next two minutes): the copy goes to an unpredictable name instead."""
    root, outside = dirs
    victim = Victim(outside / "victim", "victim\n")
    log = root / "app.log"
    content = "".join(f"line {i}\n" for i in range(300)).encode()
    log.write_bytes(content)
    log.chmod(0o640)
    inode = log.stat().st_ino
    planted = utc_names("app.log.", ".gz.part")
    for name in planted:
        (root / name).symlink_to(victim.path)
    run = run_playbook(only_root(catalog, "rotate_log", root), {"log_file": str(log)}, check=False,
                       timeout_seconds=120)
    assert run.status == "successful", run.stdout_tail
    assert victim.intact()
    rotated = [p for p in root.iterdir() if p.name.endswith(".gz")]
    assert len(rotated) == 1 and not rotated[0].is_symlink()
    assert gzip.decompress(rotated[0].read_bytes()) == content
    assert stat.S_IMODE(rotated[0].stat().st_mode) == 0o640  # the log's permissions, not the umask's
    assert log.stat().st_size == 0 and log.stat().st_ino == inode
    assert sorted(p.name for p in root.iterdir()) == sorted(["app.log", rotated[0].name, *planted])


def test_rotate_log_keeps_the_log_when_the_rotated_name_is_taken(catalog, dirs) -> None:  # noqa: F811
    """Links planted at every ``app.log.<UTC second>.gz`` name: the rotation fails without
    truncating the log (the old playbook skipped the copy and truncated anyway)."""
    root, outside = dirs
    victim = Victim(outside / "victim", "victim\n")
    log = root / "app.log"
    log.write_text("keep me\n")
    planted = utc_names("app.log.", ".gz")
    for name in planted:
        (root / name).symlink_to(victim.path)
    entry = only_root(catalog, "rotate_log", root)
    for check in (False, True):  # the preview fails the same way
        run = run_playbook(entry, {"log_file": str(log)}, check=check, timeout_seconds=120)
        assert log.read_text() == "keep me\n" and victim.intact()
        assert run.status == "failed" and "already exists" in (run.message or "")
    assert sorted(p.name for p in root.iterdir()) == sorted(["app.log", *planted])  # no temp left


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_rotate_log_refuses_a_linked_log(catalog, dirs, kind: str) -> None:  # noqa: F811
    root, outside = dirs
    victim = Victim(outside / "victim.log", "victim data\n")
    plant(root / "app.log", kind, victim.path)
    entry = relaxed(only_root(catalog, "rotate_log", root), "log_file")
    for check in (False, True):
        run = run_playbook(entry, {"log_file": str(root / "app.log")}, check=check, timeout_seconds=120)
        assert victim.intact() and sorted(p.name for p in root.iterdir()) == ["app.log"]
        assert run.status == "failed" and run.failed_task == "Check the log file", run.stdout_tail
        assert "refused" in (run.message or "")


def test_rotate_log_swapped_for_a_link_during_real_runs(catalog, dirs) -> None:  # noqa: F811
    """A thread swaps the log for a symlink to the victim and back, every ~2 ms, while real
    rotations run (validation included; five runs get past it) and a writer appends to the
    real log before each. Every run rotates the real log or refuses; the victim is never
    read into a copy, never truncated."""
    root, outside = dirs
    victim = Victim(outside / "victim.log", "SECRET victim line\n" * 50)
    log, stash = root / "app.log", root / "stash.log"
    log.write_text("")
    writer = open(log, "a")  # noqa: SIM115  (a writer holding the real log open, as servers do)
    entry = only_root(catalog, "rotate_log", root)
    stop, swaps = threading.Event(), [0]

    errors: list[BaseException] = []

    def swapper() -> None:
        deadline = time.monotonic() + 90
        try:
            while not stop.is_set() and time.monotonic() < deadline and swaps[0] < 50_000:
                os.rename(log, stash)
                log.symlink_to(victim.path)
                time.sleep(0.002)
                os.rename(stash, log)  # the real log back, over the link
                swaps[0] += 1
                time.sleep(0.002)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    outcomes: list[str] = []
    deadline = time.monotonic() + 75
    try:  # five runs that get past validation, within 75 s
        while sum(o != "invalid" for o in outcomes) < 5 and time.monotonic() < deadline:
            writer.write("real line\n" * 200)  # something to rotate in every run
            writer.flush()
            try:
                run = run_playbook(entry, {"log_file": str(log)}, check=False, timeout_seconds=120)
            except InvalidInput:  # a link at validation time: refused before ansible ran
                outcomes.append("invalid")
                time.sleep(0.003)
                continue
            outcomes.append(f"{run.status}: {run.message}")
    finally:
        stop.set()
        thread.join(10)
        writer.close()
    assert victim.intact(), outcomes
    for gz in root.glob("*.gz"):
        assert b"SECRET" not in gzip.decompress(gz.read_bytes())
    assert swaps[0] > 100 and not errors, (swaps, errors)  # the race was exercised
    assert sum(o != "invalid" for o in outcomes) == 5, outcomes
    for outcome in outcomes:  # rotated the real log, or refused the link
        assert outcome.startswith("successful") or outcome == "invalid" or "refused" in outcome \
            or "does not exist" in outcome, outcomes


# --------------------------------------------------------------------------- cleanup_old_files


def test_cleanup_refuses_a_symlinked_directory(catalog, dirs) -> None:  # noqa: F811
    root, outside = dirs
    (outside / "logs").mkdir()
    victims = [outside / "logs" / f"old{i}.log" for i in range(3)]
    for v in victims:
        v.write_text("victim")
        make_old(v, 30)
    (root / "logs").symlink_to(outside / "logs", target_is_directory=True)
    entry = relaxed(only_root(catalog, "cleanup_old_files", root), "directory")
    run = run_playbook(entry, {"directory": str(root / "logs"), "age_days": 7}, check=False, timeout_seconds=120)
    assert all(v.exists() for v in victims)
    assert run.status == "failed" and "refused" in (run.message or ""), run.stdout_tail


def test_cleanup_never_enters_a_directory_link_even_one_swapped_in_after_the_listing(
    catalog, dirs, tmp_path: Path  # noqa: F811
) -> None:
    """``logs/sub`` is a real directory when the files are listed and a symlink to a
    directory of victims (same names) when they are deleted; ``logs/link.log`` is a symlink
    to an old victim. Only the regular old file under ``logs`` is deleted."""
    root, outside = dirs
    logs = root / "logs"
    (logs / "sub").mkdir(parents=True)
    (outside / "sub").mkdir()
    for d in (logs / "sub", outside / "sub"):
        (d / "old.log").write_text(str(d))
        make_old(d / "old.log", 30)
    (logs / "old.log").write_text("mine")
    make_old(logs / "old.log", 30)
    lone = outside / "lone.log"
    lone.write_text("victim")
    make_old(lone, 30)
    (logs / "link.log").symlink_to(lone)

    def swap_sub() -> None:
        os.rename(logs / "sub", tmp_path / "stashed-sub")
        (logs / "sub").symlink_to(outside / "sub", target_is_directory=True)

    on_event, planted = at_plan(swap_sub)
    entry = only_root(catalog, "cleanup_old_files", root)
    run = run_playbook(entry, {"directory": str(logs), "age_days": 7, "recurse": True}, check=False,
                       timeout_seconds=120, on_event=on_event)
    assert planted.is_set()
    assert run.status == "successful", run.stdout_tail
    plan = next(t.output for t in run.tasks if t.task == "Plan")
    assert f"{logs}/sub/old.log" in plan  # listed while it was a real directory
    assert (outside / "sub" / "old.log").exists() and lone.exists() and (logs / "link.log").is_symlink()
    assert not (logs / "old.log").exists()
    deleted = {line.split('"')[1] for d in run.diffs for line in d.diff.splitlines() if line.startswith(" path:")}
    assert deleted == {f"{logs}/old.log"}  # the result names what was deleted, nothing else


# --------------------------------------------------------------------------- collect_diagnostics


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_collect_diagnostics_never_reads_through_a_link(catalog, dirs, kind: str) -> None:  # noqa: F811
    """collect_diagnostics writes no file; what it reads is the log, and a link there (to a
    file outside the roots) is refused rather than read."""
    root, outside = dirs
    secret = Victim(outside / "secret.log", "ERROR token=SECRET-123\n")
    plant(root / "app.log", kind, secret.path)
    entry = relaxed(only_root(catalog, "collect_diagnostics", root), "log_file")
    run = run_playbook(entry, {"log_file": str(root / "app.log")}, check=False, timeout_seconds=120)
    assert "SECRET-123" not in run.model_dump_json()
    assert secret.intact() and sorted(p.name for p in root.iterdir()) == ["app.log"]
    assert run.status == "failed" and run.failed_task == "Last matching log lines", run.stdout_tail
    assert "refused" in (run.message or "")


# --------------------------------------------------------------------------- the primitives, in-process

KINDS = ["absent", "regular", "symlink", "hardlink", "dangling", "dir", "dir_symlink", "fifo"]


def _plant_kind(path: Path, kind: str, victim: Path, victim_dir: Path) -> None:
    if kind == "regular":
        path.write_text("planted")
    elif kind == "symlink":
        path.symlink_to(victim)
    elif kind == "hardlink":
        os.link(victim, path)
    elif kind == "dangling":
        path.symlink_to(victim_dir / "created-through-link")
    elif kind == "dir":
        path.mkdir()
    elif kind == "dir_symlink":
        path.symlink_to(victim_dir, target_is_directory=True)
    elif kind == "fifo":
        os.mkfifo(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), replace=st.booleans(), data=st.binary(max_size=64))
def test_create_and_move_never_write_through_what_is_planted(safefs, kind: str, replace: bool, data: bytes) -> None:
    """Whatever stands at the final name, writing a new file there either replaces the
    entry or fails; the victim (and the victim directory) never changes."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "root").mkdir()
        (base / "vdir").mkdir()
        victim = Victim(base / "vdir" / "victim", "victim\n")
        target = base / "root" / "w.out"
        _plant_kind(target, kind, victim.path, base / "vdir")
        dir_fd = safefs.open_dir(str(base / "root"))
        try:
            fd, tmp_name = safefs.create_temp(dir_fd, "w.out")
            os.write(fd, data)
            os.close(fd)
            outcome = "moved"
            try:
                safefs.move_into_place(dir_fd, tmp_name, "w.out", replace=replace)
            except (FileExistsError, IsADirectoryError, OSError):
                outcome = "refused"
                safefs.remove_quietly(dir_fd, tmp_name)
        finally:
            os.close(dir_fd)
        assert victim.intact() and sorted(p.name for p in (base / "vdir").iterdir()) == ["victim"]
        if outcome == "moved":
            st_ = target.lstat()
            assert stat.S_ISREG(st_.st_mode) and st_.st_nlink == 1 and target.read_bytes() == data
        else:
            assert kind != "absent" and (not replace or kind == "dir")
        assert [p.name for p in (base / "root").iterdir()] == ["w.out"] or kind == "absent"


@pytest.mark.parametrize("kind", KINDS)
def test_open_file_opens_only_a_regular_single_link_file(safefs, tmp_path: Path, kind: str) -> None:
    victim = Victim(tmp_path / "victim", "victim\n")
    (tmp_path / "root").mkdir()
    _plant_kind(tmp_path / "root" / "f", kind, victim.path, tmp_path)
    dir_fd = safefs.open_dir(str(tmp_path / "root"))
    try:
        if kind == "regular":
            fd, st_ = safefs.open_file(dir_fd, "f", write=True)
            os.close(fd)
            assert stat.S_ISREG(st_.st_mode)
        elif kind == "absent":
            with pytest.raises(FileNotFoundError):
                safefs.open_file(dir_fd, "f")
        else:
            with pytest.raises(safefs.UnsafePath, match="refused"):
                safefs.open_file(dir_fd, "f", write=True)  # a FIFO does not block either
    finally:
        os.close(dir_fd)
    assert victim.intact()


def test_open_dir_refuses_a_symlink_anywhere_in_the_path(safefs, tmp_path: Path) -> None:
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    os.close(safefs.open_dir(str(tmp_path / "real" / "sub")))
    with pytest.raises(safefs.UnsafePath, match=f"{tmp_path}/link is a symbolic link"):
        safefs.open_dir(str(tmp_path / "link" / "sub"))
    with pytest.raises(FileNotFoundError) as missing:
        safefs.open_dir(str(tmp_path / "missing" / "sub"))
    assert safefs.explain(missing.value, "log_file x") == f"log_file x: {tmp_path}/missing does not exist"
    with pytest.raises(safefs.UnsafePath):
        safefs.open_dir(str(tmp_path / "real" / ".." / "real"))


def test_check_and_act_go_through_one_descriptor(safefs, tmp_path: Path) -> None:
    """The deterministic form of the stat/truncate race: the name is swapped for a link to
    the victim after the file passed its checks; truncating acts on the checked file."""
    victim = Victim(tmp_path / "victim", "victim\n")
    (tmp_path / "root").mkdir()
    log = tmp_path / "root" / "app.log"
    log.write_text("log data\n")
    dir_fd = safefs.open_dir(str(tmp_path / "root"))
    fd, _ = safefs.open_file(dir_fd, "app.log", write=True)
    try:
        os.rename(log, tmp_path / "moved.log")
        log.symlink_to(victim.path)  # swapped in between the check and the act
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
        os.close(dir_fd)
    assert victim.intact() and (tmp_path / "moved.log").read_text() == ""


def test_walk_does_not_enter_a_directory_swapped_for_a_link_after_its_lstat(
    safefs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hook swaps ``b`` for a link right after the walk's lstat saw a real directory: the
    walk still never yields an entry from the link's target."""
    (tmp_path / "top" / "b").mkdir(parents=True)
    (tmp_path / "top" / "a.log").write_text("a")
    (tmp_path / "top" / "b" / "in_b.log").write_text("b")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "victim.log").write_text("victim")
    real_stat = os.stat

    def stat_then_swap(name, *args, **kwargs):
        result = real_stat(name, *args, **kwargs)
        if name == "b" and kwargs.get("follow_symlinks") is False and stat.S_ISDIR(result.st_mode):
            os.rename(tmp_path / "top" / "b", tmp_path / "b-moved")
            (tmp_path / "top" / "b").symlink_to(tmp_path / "outside", target_is_directory=True)
        return result

    monkeypatch.setattr(os, "stat", stat_then_swap)
    top = safefs.open_dir(str(tmp_path / "top"))
    try:
        seen = [f"{d}/{n}" for _, d, n, _ in safefs.walk_files(top, str(tmp_path / "top"), recurse=True)]
    finally:
        os.close(top)
    assert (tmp_path / "top" / "b").is_symlink()  # the hook ran
    assert seen == [f"{tmp_path}/top/a.log"]


def test_modules_only_touch_files_through_the_safe_primitives() -> None:
    """A static guard over the shipped modules: no open() of a caller's path, no
    shutil/pathlib file writes; files are reached through opsmcp_safefs only."""
    library = packaged_dir() / "playbooks" / "library"
    modules = sorted(library.glob("*.py"))
    assert {p.stem for p in modules} >= {"opsmcp_cleanup", "opsmcp_log_lines", "opsmcp_rotate_log", "opsmcp_worker"}
    for path in modules:
        text = path.read_text()
        assert "from ansible.module_utils.opsmcp_safefs import" in text, path.name
        for banned in ("shutil.move", "shutil.copy(", "os.remove(", ".write_text(", ".write_bytes(", "os.truncate(",
                       "os.replace("):
            assert banned not in text, f"{path.name} uses {banned}"
        opened = [line.strip() for line in text.splitlines() if " open(" in line or line.strip().startswith("open(")]
        assert all("/proc/" in line for line in opened), (path.name, opened)


def test_the_modules_ship_as_package_data() -> None:
    """Every file of the catalog's ``library/`` and ``module_utils/`` matches a package-data
    glob, so the installed wheel carries them (the playbooks cannot run without them)."""
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["opsmcp.catalog"]
    shipped = [p for sub in ("library", "module_utils") for p in (packaged_dir() / "playbooks" / sub).glob("*.py")]
    assert len(shipped) == 5
    for path in shipped:
        rel = path.relative_to(packaged_dir()).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"
