"""Ansible module: copytruncate rotation of one log file, acting on one descriptor.

Options: ``log_file`` (absolute path); ``timestamp`` (``YYYYmmddTHHMMSSZ``, default: now
in UTC), so that a run's check step and its rotation name the same file.

The log is opened once, read-write, with ``O_NOFOLLOW`` (``opsmcp_safefs.open_file``): a
symbolic link, a hard link or a non-regular file at ``log_file`` (or a symlink anywhere in
its directory path) is refused. The size check, the copy and the truncation all go through
that descriptor, so swapping the name for a link at any moment changes nothing outside
the log. The compressed copy is written to a new file with an unpredictable name
(``O_CREAT|O_EXCL|O_NOFOLLOW``) in the log's directory, given the log's permission bits and owner,
synced, and then linked to ``<log_file>.<UTC timestamp>.gz`` without replacing anything:
when that name exists (a link planted there included) the module fails and the log is not
truncated. Only after the copy is on disk is the log truncated (through the descriptor);
lines written between the end of the copy and the truncation are lost (as with
logrotate's copytruncate). An empty log is left alone.

Check mode opens the log read-only and reports what a real run would do (``changed`` when
the log is not empty, a diff of sizes). Returns ``rotated`` (the new file's path),
``timestamp``, ``size`` (bytes of the log when checked), ``copied`` (bytes compressed),
``diff``.
"""

from __future__ import annotations

import errno
import gzip
import os
import re
import shutil
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


def rotate(log_file: str, check: bool, timestamp: str | None = None) -> dict:
    """Rotate ``log_file`` (or, with ``check``, say what would be done); the module's result
    fields. Raises UnsafePath / OSError (see the module docstring)."""
    timestamp = timestamp or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    if not re.fullmatch(r"\d{8}T\d{6}Z", timestamp):
        raise UnsafePath(f"timestamp {timestamp!r} must look like 20240131T235959Z")
    parent, name = split_path(log_file)
    dir_fd = open_dir(parent)
    try:
        fd, st = open_file(dir_fd, name, write=not check)
        try:
            rotated = f"{name}.{timestamp}.gz"
            result = {"rotated": f"{parent.rstrip('/')}/{rotated}", "timestamp": timestamp, "size": st.st_size,
                      "copied": 0}
            if st.st_size == 0:
                return {**result, "changed": False, "msg": f"{log_file} is empty: nothing to rotate"}
            result["diff"] = {
                "before_header": log_file, "after_header": log_file,
                "before": {"size": st.st_size},
                "after": {"size": 0, "compressed copy": result["rotated"]},
            }
            if _taken(dir_fd, rotated):  # also in check mode, so that the preview fails the same way
                raise FileExistsError(errno.EEXIST, "exists", result["rotated"])
            if check:
                return {**result, "changed": True, "msg": f"would rotate {log_file} ({st.st_size} bytes)"}
            try:
                result["copied"] = _compressed_copy(fd, st, dir_fd, rotated)
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "exists", result["rotated"]) from None
            os.ftruncate(fd, 0)
            return {**result, "changed": True, "msg": f"rotated {log_file} ({result['copied']} bytes)"}
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _taken(dir_fd: int, name: str) -> bool:
    """Whether anything (a link included) has ``name`` in ``dir_fd``."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _compressed_copy(src_fd: int, st: os.stat_result, dir_fd: int, final: str) -> int:
    """gzip everything readable from ``src_fd`` into a new file named ``final`` in
    ``dir_fd`` (mode and owner of ``st``); return the bytes copied. The new file exists
    under ``final`` only when complete and synced."""
    tmp_fd, tmp = create_temp(dir_fd, final)
    try:
        if os.geteuid() == 0:
            os.fchown(tmp_fd, st.st_uid, st.st_gid)
        os.fchmod(tmp_fd, st.st_mode & 0o777)
        os.lseek(src_fd, 0, os.SEEK_SET)
        src = os.fdopen(os.dup(src_fd), "rb")
        with src, os.fdopen(tmp_fd, "wb") as out:
            tmp_fd = -1  # owned by ``out`` now
            with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=int(st.st_mtime)) as gz:
                shutil.copyfileobj(src, gz, 1 << 20)
            copied = src.tell()
            out.flush()
            os.fsync(out.fileno())
        move_into_place(dir_fd, tmp, final, replace=False)
        os.fsync(dir_fd)
        return copied
    except BaseException:
        if tmp_fd >= 0:
            os.close(tmp_fd)
        remove_quietly(dir_fd, tmp)
        raise


def main() -> None:
    module = AnsibleModule(
        argument_spec={"log_file": {"type": "str", "required": True}, "timestamp": {"type": "str"}},
        supports_check_mode=True,
    )
    log_file = module.params["log_file"]
    try:
        result = rotate(log_file, module.check_mode, module.params["timestamp"])
    except FileExistsError as exc:
        module.fail_json(msg=f"{exc.filename} already exists (refused to replace it): the log was not "
                             "truncated; remove that name or try again in a second")
    except (OSError, UnsafePath) as exc:
        module.fail_json(msg=explain(exc, f"log_file {log_file}") + "; the log was not truncated")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
