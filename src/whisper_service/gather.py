"""Let uploads that arrive together reach the engine together.

Twenty front instances decode uploads in parallel; when a burst arrives, the first one ready
would otherwise reach an idle engine alone and be decoded in a batch of one (no packing, one
CPU worker idle) while the rest queue behind it. Each front marks on a shared board, for the
time it decodes an upload and computes its first features, that it is preparing; before its
first engine call a front waits, briefly and boundedly, while others are still preparing, or
while uploads are still arriving (another one arrived less than a quiet period ago): a client
sends the next uploads of a burst over tens of milliseconds, as its answers come in, and an
upload that arrives after the others have left would reach the engine alone, after their batch.
A lone request sees an empty board and never waits.

The board also says how many other fronts have an upload in flight, so that a long upload
takes a fair share of each engine batch instead of filling it (see Front.windows_per_call_now).

The board is a small file of float64 slots, three per front instance, mapped into every
instance: the monotonic time until which its owner counts as preparing (0 when not), when its
last upload arrived, and until when it counts as having an upload in flight (renewed at each
engine call). A stub killed mid-upload leaves slots that go stale by themselves.

The clock and the sleep are injectable (real time by default): the tests drive the waiting
with a stand-in clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable, Optional

import numpy as np

SLOTS = 64
# A slot older than this no longer counts: a preparation takes milliseconds, a dead stub's
# slot must not make the others wait forever.
STALE_AFTER_S = 2.0
# An upload in flight renews its slot at every engine call; one call can take tens of seconds
# under load, and a dead stub's slot only costs the others some of their share until then.
IN_FLIGHT_STALE_AFTER_S = 120.0
ARRAYS = 3  # preparing until, last arrival, in flight until
POLL_S = 0.01


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


class PreparationBoard:
    def __init__(self, path: Path, slot: int, clock: Optional[Clock] = None,
                 sleep: Optional[Sleep] = None):
        """clock: monotonic seconds (time.monotonic); sleep: awaits that many seconds
        (asyncio.sleep). Every board on one file must use the same clock."""
        self.path = Path(path)
        self.slot = slot % SLOTS
        self._clock: Clock = time.monotonic if clock is None else clock
        self._sleep: Sleep = asyncio.sleep if sleep is None else sleep
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < ARRAYS * SLOTS * 8:
                # The same size from every instance: idempotent.
                os.ftruncate(fd, ARRAYS * SLOTS * 8)
            self._map = mmap.mmap(fd, ARRAYS * SLOTS * 8)
        finally:
            os.close(fd)
        values = np.frombuffer(self._map, dtype=np.float64)
        self._slots, self._arrivals, self._in_flight = (
            values[:SLOTS], values[SLOTS:2 * SLOTS], values[2 * SLOTS:])

    @classmethod
    def for_server(cls, instance_name: str, server_pid: Optional[int] = None,
                   clock: Optional[Clock] = None, sleep: Optional[Sleep] = None
                   ) -> "PreparationBoard":
        """The board shared by the front instances of one Triton server (its pid)."""
        pid = os.getppid() if server_pid is None else server_pid
        path = Path(tempfile.gettempdir()) / f"whisper-fronts-{pid}.board"
        return cls(path, _instance_index(instance_name), clock=clock, sleep=sleep)

    def mark(self, preparing: bool) -> None:
        """True when an upload arrives and its preparation starts, False when it ends."""
        now = self._clock()
        self._slots[self.slot] = now + STALE_AFTER_S if preparing else 0.0
        if preparing:
            self._arrivals[self.slot] = now

    def mark_in_flight(self, in_flight: bool) -> None:
        """True while this instance has an upload in flight (renew it at each engine call),
        False when it has none left."""
        self._in_flight[self.slot] = self._clock() + IN_FLIGHT_STALE_AFTER_S if in_flight else 0.0

    def others_in_flight(self) -> int:
        live = self._in_flight > self._clock()
        live[self.slot] = False
        return int(live.sum())

    def others_preparing(self) -> int:
        live = self._slots > self._clock()
        live[self.slot] = False
        return int(live.sum())

    def others_arrived_within(self, seconds: float) -> int:
        recent = self._arrivals > self._clock() - seconds
        recent[self.slot] = False
        return int(recent.sum())

    async def wait_for_others(self, limit_s: float, quiet_s: float = 0.0) -> float:
        """Wait while other fronts are preparing, or another upload arrived less than quiet_s
        ago; at most limit_s. Returns the time waited."""
        started = self._clock()
        while limit_s > 0 and (self.others_preparing()
                               or (quiet_s > 0 and self.others_arrived_within(quiet_s))):
            if self._clock() - started >= limit_s:
                break
            await self._sleep(POLL_S)
        return self._clock() - started

    def close(self, remove: bool = False) -> None:
        self._slots = self._arrivals = self._in_flight = None  # type: ignore[assignment]
        self._map.close()
        if remove:
            self.path.unlink(missing_ok=True)


def _instance_index(instance_name: str) -> int:
    """whisper_0_13 -> 13 (Triton names instances <model>_<group>_<index>)."""
    tail = instance_name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else os.getpid()
