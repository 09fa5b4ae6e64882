"""Giving a large request's memory back to the OS once it is done (glibc; a no-op elsewhere).

glibc keeps freed memory in its heaps and raises its mmap threshold after the first large
free, so after a few 60 MiB requests RSS stays hundreds of MiB high. Two remedies: every
allocation over 1 MiB gets its own mmap (returned on free), and shortly after a large
request finishes `malloc_trim` hands the free pages of every arena back, at most once per
`TRIM_DELAY` seconds however many large requests arrive.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Any

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20
LARGE_REQUEST_BYTES = 1 << 20
TRIM_DELAY = 0.5


def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
_pending: asyncio.TimerHandle | None = None


def tune_allocator() -> None:
    """Serve every allocation over 1 MiB with its own mmap, so it goes back to the OS when freed."""
    if _LIBC is None:
        log.debug("not glibc: allocator left as it is")
        return
    _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def request_done(size: int) -> None:
    """A request of `size` bytes finished (answered or refused); trim soon if it was large."""
    global _pending
    if _LIBC is None or size <= LARGE_REQUEST_BYTES or _pending is not None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    _pending = loop.call_later(TRIM_DELAY, _trim)


def _trim() -> None:
    global _pending
    _pending = None
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
