"""Files only the server's user may read: the data directory 0700, the files in it 0600.

Audit records, alerts, log lines and token hashes are operational data; another user of
the machine has no business reading them. Everything opsmcp creates under the data
directory (``OPSMCP_DATA_DIR``; also ``OPSMCP_AUDIT_LOG``, ``OPSMCP_LOG_STORE`` and
``OPSMCP_TOKENS_FILE`` where they point elsewhere) is created through the helpers here,
with these modes from the start (no window in which the file is readable). SQLite gives a
database's ``-wal`` and ``-shm`` files the database file's own mode.

Files and directories that already exist keep their modes: opsmcp does not change them
behind the operator's back. ``opsmcp doctor`` warns about looser ones (:func:`loose_modes`)
with the ``chmod`` that fixes them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opsmcp.config import Settings

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create directory ``path`` with mode 0700 if it is missing (missing parents get the
    default mode); return it. An existing directory is left as it is."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open(path, flags)``; a file this creates gets mode 0600, and its directory is
    created 0700 when missing. Returns the descriptor.

    Raises:
        OSError: as ``os.open``.
    """
    private_dir(Path(path).parent)
    return os.open(path, flags, FILE_MODE)


def create_private(path: Path) -> None:
    """Create an empty file ``path`` with mode 0600 unless it exists (for files another
    library opens by name, such as a SQLite database)."""
    with contextlib.suppress(FileExistsError):
        os.close(open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL))


def replace_private(path: Path, data: bytes) -> None:
    """Replace file ``path`` with ``data`` atomically: written to a temporary file beside it
    (mode 0600, in a 0700 directory made when missing), fsynced, renamed over ``path``, and the
    directory fsynced. A reader sees the old file or the new one, never part of one; a
    failure leaves ``path`` as it was and no temporary file.

    Raises:
        OSError: the directory or the file cannot be written.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=private_dir(path.parent), prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def data_paths(settings: Settings) -> list[Path]:
    """The data directory, every file directly in it, and the data files configured
    elsewhere (audit log, log store with its ``-wal``/``-shm``, tokens file)."""
    data_dir = Path(settings.data_dir)
    paths = [data_dir]
    if data_dir.is_dir():
        paths += sorted(p for p in data_dir.iterdir() if p.is_file() and not p.is_symlink())
    store = settings.log_store_path
    extra = [settings.audit_log_path, store, Path(f"{store}-wal"), Path(f"{store}-shm")]
    if settings.tokens_file is not None:
        extra.append(Path(settings.tokens_file))
    return paths + [p for p in extra if p not in paths and p.exists()]


def loose_modes(settings: Settings) -> list[str]:
    """One line per data directory or file that users other than the owner may read,
    write or enter (any group or other permission bit), with the command that fixes it."""
    out = []
    for path in data_paths(settings):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        want = DIR_MODE if path.is_dir() else FILE_MODE
        if mode & 0o077:
            out.append(f"{path} is {mode:04o}: other users may read it; `chmod {want:o} {path}`")
    return out
