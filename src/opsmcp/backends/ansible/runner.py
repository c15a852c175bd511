"""Running one catalog entry with ansible-runner (the library, not a subprocess we spawn).

:func:`run_playbook` validates the variables again, builds a fresh private data dir with
an inventory of its own (``localhost``, connection local), gives the run a minimal
environment (never the server's: see :func:`_run_env`), runs the playbook in check or
real mode with ``--diff``, streams task events to a callback, honours a timeout and a
cancel event, and returns a bounded :class:`~.results.PlaybookRun`. Processes a timed-out
or cancelled run leaves behind (ansible's workers start their own sessions, so
ansible-runner's kill misses them) are found by a per-run environment marker and killed
with psutil.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from opsmcp.backends.ansible.catalog import PlaybookEntry, validate_vars
from opsmcp.backends.ansible.results import EventCollector, PlaybookRun, TaskEvent
from opsmcp.catalog import packaged_dir
from opsmcp.errors import InvalidInput, OpsError
from opsmcp.private import private_dir

log = logging.getLogger(__name__)

STDOUT_TAIL_LINES = 60
STDOUT_TAIL_BYTES = 8_192
# How often ansible-runner's loop polls the cancel callback and the timeout, seconds.
POLL_SECONDS = 0.2
# Environment variable carrying a per-run id into every process of the run, so processes
# that escaped ansible-playbook's process group (ansible workers call setsid) can be
# found and killed after a timeout or cancel. Playbooks that start long-lived processes
# on purpose (restart_worker) unset it for them.
RUN_MARKER_ENV = "OPSMCP_RUN_ID"


def _run_path() -> str:
    """PATH for runs: the interpreter's bin dir (the venv's) first, then the inherited PATH."""
    venv_bin = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p and p != venv_bin]
    return os.pathsep.join([venv_bin, *rest])


def check_ansible_available() -> None:
    """Check that ``ansible-playbook`` and ansible-runner can be found; call at server start.

    Looks in the directory of the running interpreter (the venv's ``bin``) and on PATH,
    the same PATH :func:`run_playbook` gives its runs.

    Raises:
        OpsError: ``ansible-playbook`` is not found, or ``ansible_runner`` is not installed;
            the hint says how to install them.
    """
    hint = (
        f"install them into the Python environment that runs opsmcp ({sys.executable}): "
        "pip install 'opsmcp[playbooks]' (ansible-core, ansible-runner), or disable the playbooks toolset."
    )
    if shutil.which("ansible-playbook", path=_run_path()) is None:
        raise OpsError("ansible-playbook was not found next to the Python interpreter or on PATH.", hint)
    import importlib.util

    if importlib.util.find_spec("ansible_runner") is None:
        raise OpsError("The ansible_runner package is not installed.", hint)


# --------------------------------------------------------------------------- running


def run_playbook(
    entry: PlaybookEntry,
    vars: Mapping[str, Any] | None,
    *,
    check: bool,
    limit: str | None = None,
    timeout_seconds: float,
    on_event: Callable[[TaskEvent], None] | None = None,
    cancel_event: threading.Event | None = None,
) -> PlaybookRun:
    """Run one catalog entry with ansible-runner and wait for it; blocking.

    Args:
        entry: the catalog entry to run.
        vars: variables; validated again with :func:`validate_vars` (so unvalidated input
            never reaches ansible) and passed as extra vars.
        check: True adds ``--check --diff`` (nothing is changed); False runs for real,
            still with ``--diff``.
        limit: one of ``entry.targets``, or None for all of them.
        timeout_seconds: wall-clock limit, seconds; the run is killed when it is reached
            (ansible-runner counts whole seconds, so it is rounded up) and its status is
            ``timeout``.
        on_event: called (in this thread) at each task start and each task result per
            host; exceptions it raises are logged and ignored.
        cancel_event: when set, the run is killed within ~0.2 s and its status is
            ``canceled``.

    Returns:
        A :class:`PlaybookRun` built from ansible-runner's events: per-task results, the
        recap, diffs, a stdout tail and the first failed task. Failures inside the
        playbook are reported there (status ``failed``), not raised.

    Raises:
        InvalidInput: bad ``vars`` or a ``limit`` that is not one of the entry's targets.
        OpsError: ansible is not installed, or ansible-runner could not start.
    """
    clean_vars = validate_vars(entry, vars)
    if limit is not None and limit not in entry.targets:
        raise InvalidInput(
            f"limit {limit!r} is not a target of playbook {entry.name!r}.",
            "use one of " + ", ".join(repr(t) for t in entry.targets) + " or omit limit.",
        )
    if timeout_seconds <= 0:
        raise InvalidInput(f"timeout_seconds must be positive; got {timeout_seconds!r}.")
    check_ansible_available()
    import ansible_runner.interface  # imported lazily: ~0.1 s, not needed at server start

    collector = EventCollector(entry, on_event, _estimate_tasks(entry.file))
    cancel = cancel_event or threading.Event()
    run_id = uuid.uuid4().hex
    status = "error"  # until ansible-runner returns
    started = time.monotonic()
    pdd = tempfile.mkdtemp(prefix="opsmcp-playbook-")
    try:
        _prepare_data_dir(pdd)
        inventory = {
            "all": {
                "hosts": {
                    "localhost": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": sys.executable,
                    }
                }
            }
        }
        inv_path = os.path.join(pdd, "inventory", "hosts.json")
        with open(inv_path, "w", encoding="utf-8") as fh:
            json.dump(inventory, fh)
        env = {**_run_env(pdd), RUN_MARKER_ENV: run_id}
        try:
            runner = ansible_runner.interface.init_runner(
                private_data_dir=pdd,
                project_dir=str(entry.file.parent),
                playbook=entry.file.name,
                inventory=inv_path,
                extravars=clean_vars,
                limit=limit or ":".join(entry.targets),
                cmdline="--check --diff" if check else "--diff",
                envvars=env,
                settings={"pexpect_timeout": POLL_SECONDS},
                ident="run",
                quiet=True,
                timeout=max(1, math.ceil(timeout_seconds)),
                event_handler=collector.handle,
                cancel_callback=cancel.is_set,
            )
            runner.config.env = _isolated_env(runner.config.env, env)
            runner.run()
        except OpsError:
            raise
        except Exception as exc:  # ansible-runner configuration/start-up failures
            raise OpsError(
                f"ansible-runner could not run playbook {entry.name!r}: {exc}",
                "check the playbook file and the ansible installation (opsmcp doctor).",
            ) from exc
        stdout_tail, stdout_truncated = _tail(os.path.join(pdd, "artifacts", "run", "stdout"))
        status = runner.status if runner.status in ("successful", "failed", "timeout", "canceled") else "failed"
        rc = runner.rc
    finally:
        if status in ("timeout", "canceled", "error"):
            # ansible-runner killed ansible-playbook's process group only; ansible's
            # workers run in their own sessions, so their commands may still be running.
            _kill_marked(run_id)
        shutil.rmtree(pdd, ignore_errors=True)
    duration = round(time.monotonic() - started, 3)
    return collector.result(
        check=check,
        status=status,
        rc=rc,
        duration=duration,
        stdout_tail=stdout_tail,
        stdout_truncated=stdout_truncated,
        timeout_seconds=timeout_seconds,
    )


def _prepare_data_dir(pdd: str) -> None:
    for sub in ("inventory", "env", "tmp", "home"):
        private_dir(Path(pdd) / sub)
    # An empty config so no ansible.cfg from the cwd or home is picked up.
    with open(os.path.join(pdd, "ansible.cfg"), "w", encoding="utf-8") as fh:
        fh.write("[defaults]\n")


def _run_env(pdd: str) -> dict[str, str]:
    """The whole environment a run starts from (:func:`_isolated_env` adds only what
    ansible-runner sets itself): PATH, a UTF-8 LANG (ansible needs one), a private HOME,
    the ansible settings (the shipped modules on the module path). Nothing else of the
    server's environment (credentials, the approval secret) reaches ansible or anything
    it starts."""
    return {
        "PATH": _run_path(),
        "LANG": _run_lang(),
        "HOME": os.path.join(pdd, "home"),
        # Pinned so that ansible-runner builds its own from ours, not from the server's:
        # it appends its callback plugin dir to the first and wraps the second.
        "ANSIBLE_CALLBACK_PLUGINS": "",
        "ANSIBLE_STDOUT_CALLBACK": "default",
        # The shipped modules (opsmcp_*) and their file primitives, for every catalog's
        # playbooks (the shipped playbooks also find them beside themselves).
        "ANSIBLE_LIBRARY": str(packaged_dir() / "playbooks" / "library"),
        "ANSIBLE_MODULE_UTILS": str(packaged_dir() / "playbooks" / "module_utils"),
        "ANSIBLE_CONFIG": os.path.join(pdd, "ansible.cfg"),
        "ANSIBLE_HOME": os.path.join(pdd, "home"),
        "ANSIBLE_LOCAL_TEMP": os.path.join(pdd, "tmp"),
        "ANSIBLE_REMOTE_TMP": os.path.join(pdd, "tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
        "ANSIBLE_SYSTEM_WARNINGS": "0",
        "ANSIBLE_LOCALHOST_WARNING": "0",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
        "ANSIBLE_PIPELINING": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _run_lang() -> str:
    """The server's LANG when it names a UTF-8 locale, else ``C.UTF-8``."""
    lang = os.environ.get("LANG", "")
    return lang if lang.replace("-", "").lower().endswith(".utf8") else "C.UTF-8"


def _isolated_env(prepared: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """The environment of a run: ``prepared`` (what ansible-runner built: a copy of the
    server's ``os.environ``, then ``ours``, then its own settings such as its callback
    plugin) minus every variable inherited unchanged from ``os.environ``. What remains is
    ``ours`` and what ansible-runner set itself."""
    return {k: v for k, v in prepared.items() if k in ours or os.environ.get(k) != v}


def _kill_marked(run_id: str) -> int:
    """SIGKILL every process whose environment holds ``RUN_MARKER_ENV=run_id`` (psutil; a
    process whose environment cannot be read, e.g. another user's, is skipped). Repeats
    until none is left, so children forked meanwhile die too. Returns how many processes
    were signalled."""
    import psutil  # imported here: only a cancelled run needs it, never `tools/list`

    me = os.getpid()
    killed = 0
    for _ in range(10):
        found: list[psutil.Process] = []
        for proc in psutil.process_iter():
            if proc.pid == me:
                continue
            try:
                if proc.environ().get(RUN_MARKER_ENV) == run_id and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        if not found:
            break
        for proc in found:
            try:
                proc.kill()
                killed += 1
            except psutil.Error:
                pass
        time.sleep(0.02)  # no wait(): a process may be another component's child to reap
    if killed:
        log.info("killed %d leftover process(es) of playbook run %s", killed, run_id)
    return killed


def _estimate_tasks(playbook: Path) -> int | None:
    """Count the tasks a playbook declares (blocks flattened; rescue not counted)."""

    def count(tasks: Any) -> int:
        n = 0
        for t in tasks or []:
            if isinstance(t, dict) and "block" in t:
                n += count(t.get("block")) + count(t.get("always"))
            elif isinstance(t, dict):
                n += 1
        return n

    import yaml

    try:
        plays = yaml.safe_load(playbook.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(plays, list):
        return None
    total = 0
    for play in plays:
        if not isinstance(play, dict):
            continue
        if play.get("gather_facts", True) not in (False, "false", "no"):
            total += 1
        for key in ("pre_tasks", "tasks", "post_tasks"):  # handlers run only when notified
            total += count(play.get(key))
    return total or None


def _tail(path: str) -> tuple[str, bool]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - STDOUT_TAIL_BYTES * 2))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "", False
    data = re.sub(r"\x1b\[[0-9;]*m", "", data).replace("\r\n", "\n")
    lines = data.rstrip("\n").split("\n")
    truncated = size > STDOUT_TAIL_BYTES * 2
    if len(lines) > STDOUT_TAIL_LINES:
        lines, truncated = lines[-STDOUT_TAIL_LINES:], True
    text = "\n".join(lines)
    if len(text.encode()) > STDOUT_TAIL_BYTES:
        text = text.encode()[-STDOUT_TAIL_BYTES:].decode("utf-8", errors="ignore")
        text, truncated = text[text.find("\n") + 1 :], True
    return text, truncated
