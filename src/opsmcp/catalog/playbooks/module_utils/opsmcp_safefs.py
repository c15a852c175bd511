"""Symlink-safe file primitives for the opsmcp playbook modules (stdlib only, Linux).

The threat: playbooks run as the server's user (often root) on paths inside directories
other users can write to (``/tmp``, ``/var/tmp``). Such a user can plant a symbolic link
or a hard link at any name a playbook opens, creates or renames (including names derived
from a variable: ``<pid_file>.out``, ``<log>.<UTC second>.gz``), or swap a file for a link
between a check and the act. ``validate_vars`` resolves and checks the variable itself;
this module makes every later file operation safe on its own:

* a directory is reached by walking from ``/`` one component at a time with
  ``O_NOFOLLOW|O_DIRECTORY`` (:func:`open_dir`): variables arrive already resolved, so a
  symlink anywhere in the path appeared after validation and is refused;
* an existing file is opened once, with ``O_NOFOLLOW`` (never through a link) and
  ``O_NONBLOCK`` (never hangs on a FIFO); the checks (regular file, exactly one link) are
  made on the open descriptor, and the caller reads, copies and truncates through that
  descriptor (:func:`open_file`), so no later swap of the name changes what is acted on;
* a file is created only under a fresh unpredictable name with
  ``O_CREAT|O_EXCL|O_NOFOLLOW`` (:func:`create_temp`), filled through its descriptor, then
  moved into place with ``rename`` (replaces the directory entry itself, never writes
  through a link standing there) or ``link`` + ``unlink`` (fails when the name exists)
  (:func:`move_into_place`);
* a directory tree is listed through directory descriptors, descending only into real
  directories opened with ``O_NOFOLLOW`` (:func:`walk_files`), so a file found there is
  deleted with ``unlinkat`` relative to the directory it was found in.

Shipped in the catalog's ``module_utils/``: Ansible bundles it into the modules in
``library/`` that import ``ansible.module_utils.opsmcp_safefs``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: How deep :func:`walk_files` descends below the directory it starts in.
MAX_DEPTH = 64


class UnsafePath(Exception):
    """A path the helpers refuse: a symbolic link, a file that is not regular or has more
    than one hard link, a relative path or one with ``.``/``..`` components."""


def split_path(path: str) -> tuple[str, str]:
    """``/a/b/name`` -> (``/a/b``, ``name``).

    Raises:
        UnsafePath: ``path`` is relative, ends with ``/``, or has a ``.``/``..`` component.
    """
    if not path.startswith("/") or path.endswith("/"):
        raise UnsafePath(f"{path} must be an absolute path to a file")
    if any(part in (".", "..") for part in path.split("/")):
        raise UnsafePath(f"{path} must not contain '.' or '..' components")
    parent, name = path.rsplit("/", 1)
    return parent or "/", name


def open_dir(path: str) -> int:
    """Open directory ``path`` (absolute) without following any symlink; return its fd.

    Each component is opened relative to the previous one with ``O_NOFOLLOW|O_DIRECTORY``.
    The caller closes the descriptor.

    Raises:
        UnsafePath: a component is a symbolic link or not a directory, or the path is
            relative or holds ``.``/``..``.
        FileNotFoundError: a component does not exist (``filename``: the path up to it).
    """
    if not path.startswith("/") or any(part in (".", "..") for part in path.split("/")):
        raise UnsafePath(f"{path} must be an absolute path without '.' or '..'")
    fd = os.open("/", _DIR_FLAGS)
    walked = ""
    try:
        for part in (p for p in path.split("/") if p):
            walked += "/" + part
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePath(f"{walked} is a symbolic link or not a directory (refused)") from None
                if exc.errno == errno.ENOENT:
                    raise FileNotFoundError(errno.ENOENT, "does not exist", walked) from None
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_file(dir_fd: int, name: str, *, write: bool = False) -> tuple[int, os.stat_result]:
    """Open the existing file ``name`` in ``dir_fd`` once, never through a link.

    Args:
        dir_fd: the directory, from :func:`open_dir`.
        name: a file name (no ``/``).
        write: open read-write (to truncate through the descriptor); else read-only.
            ``O_TRUNC`` is never used: nothing is changed before the checks pass.

    Returns:
        (fd, fstat of fd), the descriptor in blocking mode. The checks were made on this
        descriptor, so acting on it acts on the file that passed them.

    Raises:
        UnsafePath: ``name`` is a symbolic link, not a regular file, or has more than
            one hard link (the data would also be reachable, and changed, elsewhere).
        FileNotFoundError: ``name`` does not exist.
    """
    if "/" in name or name in ("", ".", ".."):
        raise UnsafePath(f"{name!r} is not a plain file name")
    flags = (os.O_RDWR if write else os.O_RDONLY) | _FILE_FLAGS
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{name} is a symbolic link (refused)") from None
        if exc.errno in (errno.EISDIR, errno.ENXIO, errno.ENODEV):
            raise UnsafePath(f"{name} is not a regular file (refused)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{name} is not a regular file (refused)")
        if st.st_nlink != 1:
            raise UnsafePath(f"{name} has {st.st_nlink} hard links (refused: its data is reachable elsewhere)")
        os.set_blocking(fd, True)
        return fd, st
    except BaseException:
        os.close(fd)
        raise


def create_temp(dir_fd: int, base: str, mode: int = 0o600) -> tuple[int, str]:
    """Create a new, empty file in ``dir_fd`` under an unpredictable name.

    The name is ``.<base>.<32 random hex digits>.part`` (``base`` cut to 100 characters);
    it is created with ``O_CREAT|O_EXCL|O_NOFOLLOW``, so a link planted at any name is
    never opened. Returns (write-only fd, name); the caller fills it and calls
    :func:`move_into_place`, or :func:`remove_quietly` on failure.
    """
    for _ in range(10):
        name = f".{base[:100]}.{secrets.token_hex(16)}.part"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=dir_fd)
        except FileExistsError:
            continue
        os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
        return fd, name
    raise FileExistsError(errno.EEXIST, f"no free temporary name for {base}")


def move_into_place(dir_fd: int, temp: str, name: str, *, replace: bool) -> None:
    """Give the file ``temp`` (from :func:`create_temp`) its final ``name`` in ``dir_fd``.

    ``replace=True`` renames over whatever entry ``name`` is (a link standing there is
    replaced, never written through; a directory makes it fail). ``replace=False`` links
    the file to ``name`` and fails with ``FileExistsError`` when anything (a planted link
    included) already has that name; the temporary name is removed either way.
    """
    if replace:
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return
    try:
        os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        remove_quietly(dir_fd, temp)


def remove_quietly(dir_fd: int, name: str) -> None:
    """Unlink ``name`` in ``dir_fd`` if it is still there (removes a name, never follows it)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def explain(exc: OSError | UnsafePath, what: str) -> str:
    """One line for a module's failure message about ``what`` (e.g. ``log_file /x/app.log``):
    missing, refused (and why), or the operating system's reason."""
    if isinstance(exc, FileNotFoundError):
        return f"{what}: {exc.filename or 'a part of the path'} does not exist"
    if isinstance(exc, OSError):
        return f"{what}: {exc.strerror or exc}"
    return f"{what}: {exc}"


def walk_files(
    dir_fd: int, path: str, *, recurse: bool, depth: int = 0
) -> Iterator[tuple[int, str, str, os.stat_result]]:
    """List the non-directory entries under ``dir_fd`` (display path ``path``) without
    following links.

    Yields (fd of the directory holding the entry, its display path, the entry's name,
    ``lstat`` of the entry); the fd is valid until the next item is requested. Hidden names (leading ``.``) are
    skipped. With ``recurse``, only real subdirectories are entered: each is opened with
    ``O_NOFOLLOW|O_DIRECTORY`` relative to its parent's descriptor, so a symlinked
    directory, or one swapped for a link after listing, is not entered. At most
    :data:`MAX_DEPTH` levels are entered.
    """
    with os.scandir(dir_fd) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith("."))
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # gone since the listing
        if not stat.S_ISDIR(st.st_mode):
            yield dir_fd, path, name, st
        elif recurse and depth < MAX_DEPTH:
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError:
                continue  # swapped for a link or removed since the lstat: not entered
            try:
                yield from walk_files(sub, f"{path.rstrip('/')}/{name}", recurse=True, depth=depth + 1)
            finally:
                os.close(sub)
