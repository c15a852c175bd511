"""Handing freed heap memory back to the operating system.

CPython returns its own small-object arenas when they empty, but the C allocator (glibc's
malloc) keeps freed blocks of its heaps for reuse: after a burst of connections closes
(thousands of ``/events`` listeners), RSS stays where the peak left it.
``malloc_trim(0)`` (glibc) releases the free pages at the top and inside every heap.
Elsewhere (musl, macOS, Windows) :func:`give_back` does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from functools import cache

log = logging.getLogger("opsmcp.calls.heap")


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def give_back() -> bool:
    """Collect garbage, then ask the C allocator to return free heap pages to the OS.

    Returns True when ``malloc_trim`` ran (glibc), False where there is none. Takes a few
    milliseconds per hundred MB of heap; call it after many objects were freed, not per request.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        log.debug("no malloc_trim here: freed heap stays with the process")
        return False
    trim(0)
    return True
