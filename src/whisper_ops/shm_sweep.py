"""Triton Python-backend shared-memory regions that no process maps any more.

Every stub process talks to Triton through a region in /dev/shm. Triton removes it when it
unloads the model instance cleanly; a stub killed (by the kernel's OOM killer, by the
watchdog's retirement, by a test) or a server killed leaves it behind, in memory until the
machine restarts: one CI run of the test suite left 14 regions of 3 MiB or more. The launcher
sweeps them when it starts, every minute while it runs, and when the server has exited.

A region is removed only when it is ours (same user), no process maps it, and it has not been
written for `min_age_s`: a region Triton has just created is not yet mapped.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable, List, Optional, Set

log = logging.getLogger("whisper.shm_sweep")

SHM_DIR = Path("/dev/shm")
REGION_PREFIX = "triton_python_backend_shm_region_"
MIN_AGE_S = 60.0


def mapped_files(proc: Path = Path("/proc")) -> Set[str]:
    """Names of the files under /dev/shm that some process we may read maps."""
    names: Set[str] = set()
    for maps in proc.glob("[0-9]*/maps"):
        try:
            text = maps.read_text(errors="replace")
        except OSError:
            continue  # gone, or another user's process (it cannot map our 0644 regions rw)
        for line in text.splitlines():
            marker = line.find("/dev/shm/")
            if marker >= 0:
                names.add(line[marker + len("/dev/shm/"):].split(" (deleted)")[0].strip())
    return names


def orphaned_regions(shm_dir: Path, mapped: Iterable[str], now: float,
                     min_age_s: float = MIN_AGE_S, uid: Optional[int] = None) -> List[Path]:
    """Our regions in shm_dir that nothing maps and nothing wrote for min_age_s."""
    uid = os.getuid() if uid is None else uid
    mapped = set(mapped)
    found = []
    for path in shm_dir.glob(REGION_PREFIX + "*"):
        try:
            info = path.stat()
        except OSError:
            continue
        if info.st_uid == uid and path.name not in mapped and now - info.st_mtime >= min_age_s:
            found.append(path)
    return found


def sweep(shm_dir: Path = SHM_DIR, proc: Path = Path("/proc"), min_age_s: float = MIN_AGE_S
          ) -> int:
    """Remove the orphaned regions; returns how many were removed."""
    if not shm_dir.is_dir():
        return 0
    removed = 0
    for path in orphaned_regions(shm_dir, mapped_files(proc), time.time(), min_age_s):
        try:
            size = path.stat().st_size
            path.unlink()
        except OSError:
            continue
        removed += 1
        log.info("removed %s (%d MiB): no process maps it", path, size >> 20)
    return removed
