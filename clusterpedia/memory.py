"""The process's memory as the operating system sees it (glibc's malloc; elsewhere no-ops).

Python frees objects by reference counting, but the C library keeps the freed memory for
later: a burst of large responses or list pages leaves the process holding its peak. These
ask glibc to keep less, and to hand back what is free.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from typing import Any

_M_ARENA_MAX = -8  # from glibc's malloc.h
TRIM_INTERVAL = 30.0  # seconds


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 (both exist only in glibc)
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Give glibc's malloc two arenas instead of up to eight per core. Every thread that
    allocates (the database read threads, the operator's loop) otherwise gets an arena of its
    own, and what each fragments stays resident. Call before any thread starts; does nothing
    when ``MALLOC_ARENA_MAX`` is set or the C library is not glibc."""
    libc = _libc()
    if libc is not None and not os.environ.get("MALLOC_ARENA_MAX"):
        libc.mallopt(_M_ARENA_MAX, arenas)


async def trim_freed_memory(interval: float = TRIM_INTERVAL) -> None:
    """Every ``interval`` seconds, return the heap's free pages to the system
    (``malloc_trim``, in a thread: it takes milliseconds on a large heap)."""
    libc = _libc()
    if libc is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(libc.malloc_trim, 0)
