"""A server-wide budget for decoded audio: how many bytes of samples all uploads in flight may
hold at once, shared by every front process of one Triton server.

An upload of a few megabytes (hours of low-bitrate Opus) decodes to hundreds of megabytes of
samples; eight at once ran a 24 GB machine out of memory. Each upload claims the bytes its
samples need before they are allocated, and waits while the budget is spent: short clips
(a megabyte each) keep flowing past long uploads, and the server's memory stays bounded
whatever arrives.

The budget is a lock file with one byte per megabyte unit: a process holds a unit by holding
an fcntl lock on its byte. The kernel drops a dead process's locks, so a killed stub gives its
share back by itself. fcntl locks belong to the process, not the thread, so units held by this
process are also tracked here (threads of one process must not take the same unit twice).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Set

from whisper_service.errors import InvalidInputError, ServerBusyError

log = logging.getLogger(__name__)

UNIT = 1 << 20
# Without a setting: this share of the memory the server may use, within these bounds. The
# floor holds one upload of the longest allowed length (4 h of float32 samples: 922 MB).
DEFAULT_SHARE = 1 / 8
MIN_DEFAULT_BYTES = 1 << 30
MAX_DEFAULT_BYTES = 3 << 29
# How long an upload waits for its first claim (it holds nothing while it waits), and for a
# later, larger one (it holds memory then, so it must not wait for long).
WAIT_S = 1800.0
GROW_WAIT_S = 30.0
POLL_S = 0.05


def memory_limit_bytes(root: Path = Path("/")) -> int:
    """What the server may use: the cgroup's memory limit (v2 or v1), else the machine's."""
    limits = []
    for name in ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = (root / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            limits.append(int(text))
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    return min(limits) if limits else MAX_DEFAULT_BYTES / DEFAULT_SHARE


def budget_bytes(env: Mapping[str, str], limit: Optional[int] = None) -> int:
    """WHISPER_AUDIO_BUDGET_MB if set, else a share of memory_limit_bytes()."""
    text = env.get("WHISPER_AUDIO_BUDGET_MB", "").strip()
    if text:
        try:
            megabytes = float(text)
        except ValueError:
            raise ValueError(f"WHISPER_AUDIO_BUDGET_MB={text!r} is not a number of megabytes")
        if megabytes <= 0:
            raise ValueError("WHISPER_AUDIO_BUDGET_MB must be positive")
        return int(megabytes * UNIT)
    limit = memory_limit_bytes() if limit is None else limit
    return int(min(MAX_DEFAULT_BYTES, max(MIN_DEFAULT_BYTES, limit * DEFAULT_SHARE)))


_SHARED: dict = {}
_SHARED_LOCK = threading.Lock()


class AudioBudget:
    def __init__(self, path: Path, total_bytes: int, wait_s: float = WAIT_S,
                 grow_wait_s: float = GROW_WAIT_S,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.path = path
        self.units = max(1, total_bytes // UNIT)
        self.wait_s, self.grow_wait_s = wait_s, grow_wait_s
        self._sleep, self._clock = sleep, clock
        # Opened once per process: closing any descriptor of the file would drop every lock
        # this process holds on it.
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._mine: Set[int] = set()
        self._lock = threading.Lock()
        self._next = 0

    @classmethod
    def for_server(cls, env: Mapping[str, str], server_pid: Optional[int] = None
                   ) -> "AudioBudget":
        """The budget shared by the front processes of one Triton server (its pid), sized by
        budget_bytes(env); WHISPER_AUDIO_BUDGET_WAIT_S is how long an upload waits for it.
        One object per file and process: fcntl locks cannot tell two apart."""
        pid = os.getppid() if server_pid is None else server_pid
        path = Path(tempfile.gettempdir()) / f"whisper-audio-budget-{pid}.lock"
        with _SHARED_LOCK:
            if path not in _SHARED:
                wait_s = float(env.get("WHISPER_AUDIO_BUDGET_WAIT_S", "") or WAIT_S)
                _SHARED[path] = cls(path, budget_bytes(env), wait_s=wait_s)
            return _SHARED[path]

    @property
    def total_bytes(self) -> int:
        return self.units * UNIT

    def claim(self) -> "Claim":
        return Claim(self)

    def held_here(self) -> int:
        """Units held by this process."""
        with self._lock:
            return len(self._mine)

    def _take(self, count: int) -> Optional[List[int]]:
        """`count` free units, or None (and nothing taken)."""
        taken: List[int] = []
        with self._lock:
            for step in range(self.units):
                if len(taken) == count:
                    break
                unit = (self._next + step) % self.units
                if unit in self._mine:
                    continue
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, unit, os.SEEK_SET)
                except OSError:
                    continue
                self._mine.add(unit)
                taken.append(unit)
            if len(taken) < count:
                self._give_locked(taken)
                return None
            self._next = (taken[-1] + 1) % self.units if taken else self._next
            return taken

    def _give(self, units: List[int]) -> None:
        with self._lock:
            self._give_locked(units)

    def _give_locked(self, units: List[int]) -> None:
        for unit in units:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, unit, os.SEEK_SET)
            self._mine.discard(unit)

    def close(self) -> None:
        os.close(self._fd)


class Claim:
    """The units one upload holds; `ensure(nbytes)` before allocating that many bytes."""

    def __init__(self, budget: AudioBudget):
        self.budget = budget
        self.units: List[int] = []
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        return len(self.units) * UNIT

    def ensure(self, nbytes: int) -> None:
        """Hold enough units for `nbytes` in all (fewer: give the rest back), waiting while the
        budget is spent; ServerBusyError when the wait runs out, InvalidInputError when the
        budget could never hold it."""
        need = max(1, math.ceil(nbytes / UNIT))
        budget = self.budget
        if need > budget.units:
            raise InvalidInputError(
                f"AUDIO decodes to {nbytes / UNIT:.0f} MB of samples, more than this server "
                f"holds for all uploads at once ({budget.total_bytes / UNIT:.0f} MB, "
                "WHISPER_AUDIO_BUDGET_MB): split it into shorter files.", "audio_over_budget")
        with self._lock:
            if need <= len(self.units):
                budget._give(self.units[need:])
                del self.units[need:]
                return
            wait_s = budget.grow_wait_s if self.units else budget.wait_s
            deadline = budget._clock() + wait_s
            waited = False
            while True:
                taken = budget._take(need - len(self.units))
                if taken is not None:
                    self.units.extend(taken)
                    if waited:
                        log.info("upload waited for %d MB of the decoded-audio budget", need)
                    return
                if budget._clock() >= deadline:
                    raise ServerBusyError(
                        f"the server is busy decoding other long uploads (all "
                        f"{budget.total_bytes / UNIT:.0f} MB of its decoded-audio budget are "
                        f"in use for {wait_s:.0f} s); retry later.", "audio_budget_busy")
                waited = True
                budget._sleep(POLL_S)

    def release(self) -> None:
        with self._lock:
            self.budget._give(self.units)
            self.units = []

    def release_with(self, owner: object) -> None:
        """Give the units back when `owner` (the samples they pay for) is garbage collected,
        on every path an upload can end by (answer, refusal, cancellation, failure)."""
        weakref.finalize(owner, self.release)
