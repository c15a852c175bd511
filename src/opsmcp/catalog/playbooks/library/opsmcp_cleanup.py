"""Ansible module: find, and optionally delete, old regular files under a directory.

Options: ``directory`` (absolute path), ``pattern`` (glob matched against the file name,
case-sensitive), ``age_days`` (modification time at least this many days ago),
``recurse`` (also look in subdirectories), ``delete`` (false: only list).

Safe against planted links and swaps (``opsmcp_safefs``): ``directory`` is opened without
following any symlink in its path; subdirectories are entered only when they are real
directories (a symlinked directory is never entered, even if swapped in after the listing);
a file is matched on its ``lstat`` (symbolic links, FIFOs, sockets are not regular files and
are left alone) and deleted with ``unlinkat`` relative to the descriptor of the directory it
was found in. Unlinking removes that one name, never data reachable through a link. Hidden
names are skipped.

In check mode, and with ``delete: false``, nothing is deleted: the files that would be are
listed, and (``delete: true``, check mode) reported as ``changed`` with one diff per file
(``state: file`` -> ``state: absent``).

Returns ``matched`` (count), ``files`` (their paths, the first ``LISTED``),
``files_truncated``, ``deleted`` (count), ``links_skipped`` (symbolic links seen and left
alone: never followed, never deleted), ``diff``.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.opsmcp_safefs import UnsafePath, explain, open_dir, walk_files

LISTED = 500
DAY = 86_400


def cleanup(directory: str, pattern: str, age_days: int, recurse: bool, delete: bool) -> dict:
    """Find (and with ``delete``, unlink) the matching files; the module's result fields.
    Raises UnsafePath / OSError for ``directory`` itself."""
    cutoff = time.time() - age_days * DAY
    top = open_dir(directory)
    matched, deleted, links = 0, 0, 0
    files: list[str] = []
    try:
        for dir_fd, dir_path, name, st in walk_files(top, directory, recurse=recurse):
            if stat.S_ISLNK(st.st_mode):
                links += 1  # left alone: never followed, never deleted
            if not stat.S_ISREG(st.st_mode) or st.st_mtime > cutoff or not fnmatch.fnmatchcase(name, pattern):
                continue
            matched += 1
            if len(files) < LISTED:
                files.append(f"{dir_path.rstrip('/')}/{name}")
            if delete:
                try:
                    os.unlink(name, dir_fd=dir_fd)  # this name, in the directory we hold open
                    deleted += 1
                except FileNotFoundError:
                    pass
    finally:
        os.close(top)
    return {"matched": matched, "files": files, "files_truncated": matched > len(files), "deleted": deleted,
            "links_skipped": links}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directory": {"type": "str", "required": True},
            "pattern": {"type": "str", "required": True},
            "age_days": {"type": "int", "required": True},
            "recurse": {"type": "bool", "default": False},
            "delete": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    if "/" in p["pattern"]:
        module.fail_json(msg=f"pattern {p['pattern']!r} must not contain '/'")
    acting = p["delete"] and not module.check_mode
    try:
        result = cleanup(p["directory"], p["pattern"], p["age_days"], p["recurse"], acting)
    except (OSError, UnsafePath) as exc:
        module.fail_json(msg=explain(exc, f"directory {p['directory']}"))
    changed = bool(p["delete"] and (result["deleted"] if acting else result["matched"]))
    if p["delete"]:
        result["diff"] = [{"before": {"path": f, "state": "file"}, "after": {"path": f, "state": "absent"}}
                          for f in result["files"]]
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
