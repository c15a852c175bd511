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


_paused = False


def pause_for_start_up() -> None:
    """Turn the cyclic garbage collector off while a server process starts (the console
    script's ``opsmcp serve``; :func:`started` turns it back on).

    Importing the MCP SDK and building the server create ~150,000 objects that live as long
    as the process and almost no garbage: with the collector on, start-up spends ~0.1 s of a
    ~0.7 s cold start in collections that free nearly nothing (measured: docs/performance.md,
    "Cold start").
    """
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def started() -> None:
    """End of start-up: if :func:`pause_for_start_up` turned the collector off, move every
    object so far to the permanent generation (``gc.freeze()``: later collections never scan
    them again, so the first requests pay no ~0.1 s collection of start-up objects) and turn
    it back on. The few thousand cyclic garbage objects start-up leaves (well under 1 MB)
    stay. Does nothing otherwise (a server built in a test or another program)."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False
