"""Ansible module: inspect, stop or start a background worker tracked by a pid file.

Options: ``action`` (inspect | stop | start), ``pid_file`` (absolute path ending in
``.pid``; inspect, start), ``pid`` and ``stop_timeout`` (seconds; stop), ``command`` (the
worker's command line, split on whitespace into argv, never given to a shell; stop, start).

* ``inspect`` (read-only, also in check mode): reads the pid file through a descriptor
  opened with ``O_NOFOLLOW`` (a symlink, hard link or non-regular file there is refused)
  and returns ``pid`` ('' when there is no pid file or no pid in it) and ``command``: the
  process's command line, words joined by spaces ('' when it is gone or a zombie).
* ``stop``: pins the process with a pidfd, checks that its command line is ``command``
  (a reused pid is never signalled), then SIGTERM, SIGKILL after ``stop_timeout`` seconds;
  signals go through the pidfd, so they reach that process or none.
* ``start``: output goes to ``<pid_file minus .pid>.out`` and the pid to ``pid_file``,
  both written as new files under unpredictable names (``O_CREAT|O_EXCL|O_NOFOLLOW``) and
  renamed over the final names: a link planted at either name is replaced, never written
  through. The worker runs in its own session (it outlives the run) with ``/`` as its
  working directory and a minimal environment (:data:`WORKER_ENV`: PATH and LANG only, so
  no secret of the server or of this run reaches it).

Check mode changes nothing: ``stop`` and ``start`` report ``changed`` for what they would do.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.opsmcp_safefs import (
    UnsafePath,
    create_temp,
    explain,
    move_into_place,
    open_dir,
    open_file,
    remove_quietly,
    split_path,
)

#: The environment variables a worker receives (from this module's own environment).
WORKER_ENV = ("PATH", "LANG")


def inspect(pid_file: str) -> dict:
    """Read the pid in ``pid_file`` and the command line of that process (see ``inspect``)."""
    parent, name = split_path(pid_file)
    dir_fd = open_dir(parent)
    try:
        fd, _ = open_file(dir_fd, name)
    except FileNotFoundError:
        return {"pid": "", "command": ""}
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as fh:
        text = fh.read(64).decode("ascii", errors="replace").strip()
    if not text.isdigit() or not 0 < int(text) < 2**22:
        return {"pid": "", "command": ""}
    return {"pid": text, "command": " ".join(_argv(int(text)) or [])}


def _argv(pid: int) -> list[str] | None:
    """The command line of live, non-zombie process ``pid``, or None."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            if any(line.startswith(b"State:") and b"Z" in line.split()[1:2] for line in fh):
                return None
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return [w.decode(errors="replace") for w in raw.split(b"\0")[:-1]] or None


def _exited(pidfd: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process behind ``pidfd`` to exit."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def stop(pid: int, command: str, timeout: int, check: bool) -> dict:
    """Stop process ``pid`` if it is still running ``command`` (see ``stop``)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return {"changed": False, "msg": f"pid {pid} is gone"}
    try:
        argv = _argv(pid)
        if _exited(pidfd, 0):
            return {"changed": False, "msg": f"pid {pid} has exited"}
        if argv != command.split():
            # Read while the pidfd was open and the process alive: argv is this process's.
            raise RuntimeError(f"pid {pid} is running {' '.join(argv or [])!r}, not {command!r}: refusing to stop it")
        if check:
            return {"changed": True, "msg": f"would stop pid {pid}"}
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if _exited(pidfd, timeout):
            return {"changed": True, "msg": f"stopped pid {pid}"}
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _exited(pidfd, 5)
        return {"changed": True, "msg": f"killed pid {pid} after {timeout} s"}
    finally:
        os.close(pidfd)


def start(pid_file: str, command: str, check: bool) -> dict:
    """Start ``command`` in the background and record its pid (see ``start``)."""
    if not command.split():
        raise RuntimeError("command is empty")
    parent, name = split_path(pid_file)
    out_name = (name[: -len(".pid")] if name.endswith(".pid") else name) + ".out"
    out_file = f"{parent.rstrip('/')}/{out_name}"
    dir_fd = open_dir(parent)
    try:
        if check:
            return {"changed": True, "pid": "", "out_file": out_file,
                    "msg": f"would start {command!r}, output to {out_file}, pid to {pid_file}"}
        out_fd, out_tmp = create_temp(dir_fd, out_name)
        try:
            move_into_place(dir_fd, out_tmp, out_name, replace=True)
            env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
            try:
                proc = subprocess.Popen(command.split(), stdin=subprocess.DEVNULL, stdout=out_fd, stderr=out_fd,
                                        cwd="/", env=env, close_fds=True, start_new_session=True)
            except OSError as exc:
                raise RuntimeError(f"cannot start {command!r}: {exc.strerror}") from None
        except BaseException:
            remove_quietly(dir_fd, out_tmp)
            raise
        finally:
            os.close(out_fd)
        pid_fd, pid_tmp = create_temp(dir_fd, name, 0o644)
        try:
            with os.fdopen(pid_fd, "w") as fh:
                fh.write(f"{proc.pid}\n")
                fh.flush()
                os.fsync(fh.fileno())
            move_into_place(dir_fd, pid_tmp, name, replace=True)
        except BaseException:
            remove_quietly(dir_fd, pid_tmp)
            raise
        time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited at once (exit code {proc.returncode}); see {out_file}")
        return {"changed": True, "pid": str(proc.pid), "out_file": out_file,
                "msg": f"started pid {proc.pid}, output to {out_file}"}
    finally:
        os.close(dir_fd)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["inspect", "stop", "start"]},
            "pid_file": {"type": "str"},
            "pid": {"type": "int"},
            "command": {"type": "str"},
            "stop_timeout": {"type": "int", "default": 10},
        },
        required_if=[("action", "inspect", ["pid_file"]), ("action", "stop", ["pid", "command"]),
                     ("action", "start", ["pid_file", "command"])],
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["action"] == "inspect":
            result = {"changed": False, **inspect(p["pid_file"])}
        elif p["action"] == "stop":
            result = stop(p["pid"], p["command"], p["stop_timeout"], module.check_mode)
        else:
            result = start(p["pid_file"], p["command"], module.check_mode)
    except RuntimeError as exc:
        module.fail_json(msg=str(exc))
    except (OSError, UnsafePath) as exc:
        module.fail_json(msg=explain(exc, f"pid_file {p['pid_file']}" if p["pid_file"] else f"pid {p['pid']}"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
