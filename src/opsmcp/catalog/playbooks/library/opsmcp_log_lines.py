"""Ansible module: the last lines of a log file that contain a literal text (read-only).

Options: ``log_file`` (absolute path), ``match`` (literal text), ``lines`` (how many of the
most recent matching lines to return, 1..1000).

The log is opened once with ``O_NOFOLLOW`` and read through that descriptor
(``opsmcp_safefs.open_file``): a symbolic link, a hard link (the data of another file) or a
non-regular file at ``log_file``, or anywhere in its directory path, is refused, so a link
swapped in after validation cannot make the playbook read a file outside the allowed
roots. The file is read in pieces of at most ``PIECE`` bytes, so a line without newlines
cannot grow memory; a longer line is matched piece by piece.

Returns ``lines`` (the matching lines, oldest first, each cut to ``PIECE`` bytes and
decoded as UTF-8 with replacement), ``scanned_bytes``; never changes anything.
"""

from __future__ import annotations

import collections
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.opsmcp_safefs import UnsafePath, explain, open_dir, open_file, split_path

PIECE = 4_096


def matching_lines(log_file: str, match: str, count: int) -> tuple[list[str], int]:
    """The last ``count`` lines (pieces) of ``log_file`` containing ``match``, and the
    number of bytes read. Raises UnsafePath / OSError (see the module docstring)."""
    parent, name = split_path(log_file)
    dir_fd = open_dir(parent)
    try:
        fd, _ = open_file(dir_fd, name)
    finally:
        os.close(dir_fd)
    needle = match.encode()
    found: collections.deque[bytes] = collections.deque(maxlen=count)
    with os.fdopen(fd, "rb") as fh:
        while piece := fh.readline(PIECE):
            if needle in piece:
                found.append(piece.rstrip(b"\r\n"))
        scanned = fh.tell()
    return [line.decode("utf-8", errors="replace") for line in found], scanned


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "log_file": {"type": "str", "required": True},
            "match": {"type": "str", "required": True},
            "lines": {"type": "int", "default": 20},
        },
        supports_check_mode=True,  # read-only: runs the same in check mode
    )
    p = module.params
    if not 1 <= p["lines"] <= 1000:
        module.fail_json(msg=f"lines must be 1..1000; got {p['lines']}")
    try:
        lines, scanned = matching_lines(p["log_file"], p["match"], p["lines"])
    except (OSError, UnsafePath) as exc:
        module.fail_json(msg=explain(exc, f"log_file {p['log_file']}"))
    module.exit_json(changed=False, lines=lines, scanned_bytes=scanned)


if __name__ == "__main__":
    main()
