"""Giving freed memory back to the system.

glibc keeps what a process frees in its heaps (one per thread that allocated) for reuse; after
an upload of hours, the front held ~50 MB more than before it for good, the engine more after a
busy spell. malloc_trim hands the free pages back, so that the server's memory returns to its
baseline once the work is done.
"""

from __future__ import annotations

import ctypes
from typing import Callable, Optional


def _malloc_trim() -> Optional[Callable[[int], int]]:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_TRIM = _malloc_trim()


def give_back_freed_memory() -> None:
    if _TRIM is not None:
        _TRIM(0)
