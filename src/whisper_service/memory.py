"""Giving freed memory back to the system.

glibc keeps what a process frees in its heaps (one per thread that allocated) for reuse; after
an upload of hours, the front held ~50 MB more than before it for good, the engine more after a
busy spell. malloc_trim hands the free pages back, so that the server's memory returns to its
baseline once the work is done.

A front also asks glibc (mallopt) to map every buffer of 256 KiB or more on its own and to
keep at most two heaps. Without it, glibc raises its mapping threshold to the size of the
largest buffer freed so far (up to 32 MB), so the decoded sections, VAD batches and features
of a long upload were carved out of per-thread heaps that malloc_trim could not shrink while
anything small still lived in them. Measured on the served CPU default, one 2-hour Opus
upload: the front that served it held 52 MB more anonymous memory afterwards without this,
2 MB with it; its peak was 52 MB lower.

The engine does the same only while it loads and warms up its model: idle, it then holds
178 MiB PSS instead of 313 (served CPU default). While serving it takes buffers under 32 MiB
from the heaps again, as glibc's default would by then: mapping each apart cost it a quarter
of its speed (22 windows of base: 24 s against 19 s).
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
FRONT_MMAP_THRESHOLD = 256 << 10
FRONT_ARENA_MAX = 2
# The engine after its warm-up: where glibc's own adaptive threshold ends up once large
# buffers have been freed (its maximum, 32 MiB, and twice that for trimming).
SERVING_MMAP_THRESHOLD = 32 << 20
SERVING_TRIM_THRESHOLD = 64 << 20


def _libc() -> Optional[Any]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both must exist (glibc)
        return libc
    except (OSError, AttributeError):  # not glibc (musl has neither)
        return None


_LIBC = _libc()


def give_back_freed_memory() -> None:
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def map_large_buffers_apart() -> bool:
    """Large buffers in their own mappings (returned to the system when freed) and at most
    FRONT_ARENA_MAX heaps, for this process. Returns whether glibc took both settings."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, FRONT_MMAP_THRESHOLD)
                and _LIBC.mallopt(M_ARENA_MAX, FRONT_ARENA_MAX))


def map_large_buffers_apart_until_ready() -> bool:
    """For the engine, before it loads and warms up its model: large buffers in their own
    mappings, so that loading and warm-up leave no holes in the heaps. Call
    serve_from_the_heaps() once it is warm."""
    return _LIBC is not None and bool(_LIBC.mallopt(M_MMAP_THRESHOLD, FRONT_MMAP_THRESHOLD))


def serve_from_the_heaps() -> bool:
    """For the engine once warm: buffers under 32 MiB from the heaps again, as glibc's default
    would have them by now. Mapping each apart cost the engine a quarter of its speed (a
    generate step's logits and activations, mapped and faulted in at every step)."""
    if _LIBC is None:
        return False
    give_back_freed_memory()
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, SERVING_MMAP_THRESHOLD)
                and _LIBC.mallopt(M_TRIM_THRESHOLD, SERVING_TRIM_THRESHOLD))
