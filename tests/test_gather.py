"""The board on which front instances say they are preparing an upload (no server needed).

The boards run on a stand-in clock: waiting advances it instead of time passing, so the tests
state exactly how long the waiting lasts, and take no time. tests/test_gather_realtime.py
checks the real clock.
"""

from __future__ import annotations

import asyncio

import pytest

from whisper_service import gather
from whisper_service.gather import POLL_S, PreparationBoard

pytestmark = pytest.mark.unit
# Waiting polls every POLL_S: it ends at the first poll after the reason to wait has gone.
# (The stand-in clock adds POLL_S in floating point, hence the 1e-9.)
ONE_POLL = POLL_S + 1e-9


class FakeTime:
    """A monotonic clock that moves only when a board sleeps; things happen at set times."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list = []
        self._events: list = []

    def __call__(self) -> float:
        return self.now

    def after(self, seconds: float, action) -> None:
        self._events.append((self.now + seconds, action))

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        due = [event for event in self._events if event[0] <= self.now]
        for event in sorted(due, key=lambda e: e[0]):
            self._events.remove(event)
            event[1]()
        await asyncio.sleep(0)


@pytest.fixture
def clock():
    return FakeTime()


@pytest.fixture
def boards(tmp_path, clock):
    path = tmp_path / "fronts.board"
    made = [PreparationBoard(path, slot, clock=clock, sleep=clock.sleep) for slot in (0, 1, 2)]
    yield made
    for board in made:
        board.close()


def wait(board, limit_s, quiet_s=0.0) -> float:
    return asyncio.run(board.wait_for_others(limit_s, quiet_s))


def test_others_see_who_is_preparing_and_not_themselves(boards):
    first, second, third = boards
    assert first.others_preparing() == 0
    first.mark(True)
    second.mark(True)
    assert first.others_preparing() == 1
    assert third.others_preparing() == 2
    first.mark(False)
    assert third.others_preparing() == 1


def test_a_lone_upload_does_not_wait(boards, clock):
    assert wait(boards[0], 0.5) == 0.0
    assert clock.sleeps == []


def test_waiting_ends_when_the_others_are_ready(boards, clock):
    first, second, _ = boards
    second.mark(True)
    clock.after(0.1, lambda: second.mark(False))
    waited = wait(first, 2.0)
    assert 0.1 <= waited + 1e-9 and waited <= 0.1 + ONE_POLL
    assert clock.sleeps and set(clock.sleeps) == {POLL_S}


def test_waiting_lasts_while_uploads_keep_arriving(boards, clock):
    """A client sends the rest of a burst as its answers come in: an upload that arrived a
    moment ago (and is already prepared) still holds the others for the quiet period."""
    first, second, _ = boards
    second.mark(True)
    second.mark(False)
    waited = wait(first, 1.0, quiet_s=0.1)
    assert 0.1 <= waited + 1e-9 and waited <= 0.1 + ONE_POLL
    # Without a quiet period, or once it is over, nobody waits.
    assert wait(first, 1.0) == 0.0
    assert wait(first, 1.0, quiet_s=0.1) == 0.0


def test_a_new_arrival_restarts_the_quiet_period(boards, clock):
    first, second, third = boards
    second.mark(True)
    second.mark(False)
    clock.after(0.05, lambda: (third.mark(True), third.mark(False)))
    waited = wait(first, 1.0, quiet_s=0.1)
    assert 0.15 <= waited + 1e-9 and waited <= 0.15 + ONE_POLL


def test_a_lone_upload_does_not_wait_for_its_own_arrival(boards, clock):
    boards[0].mark(True)
    boards[0].mark(False)
    assert wait(boards[0], 1.0, quiet_s=0.2) == 0.0
    assert clock.sleeps == []


def test_waiting_is_bounded(boards, clock):
    boards[1].mark(True)
    waited = wait(boards[0], 0.15)
    assert 0.15 <= waited + 1e-9 and waited <= 0.15 + ONE_POLL
    assert boards[0].others_preparing() == 1  # it stopped waiting, not the other preparing


def test_no_limit_means_no_waiting(boards, clock):
    boards[1].mark(True)
    assert wait(boards[0], 0.0, quiet_s=0.1) == 0.0
    assert clock.sleeps == []


def test_a_dead_instances_mark_goes_stale(boards, clock):
    boards[1].mark(True)
    assert boards[0].others_preparing() == 1
    clock.now += gather.STALE_AFTER_S - 0.01
    assert boards[0].others_preparing() == 1
    clock.now += 0.02
    assert boards[0].others_preparing() == 0
    # so a dead instance holds the others at most STALE_AFTER_S, however long they would wait
    boards[1].mark(True)
    waited = wait(boards[0], 10.0)
    assert gather.STALE_AFTER_S <= waited + 1e-9 and waited <= gather.STALE_AFTER_S + ONE_POLL


def test_real_time_by_default(tmp_path):
    board = PreparationBoard(tmp_path / "fronts.board", 0)
    try:
        assert board._clock is gather.time.monotonic
        assert board._sleep is gather.asyncio.sleep
    finally:
        board.close()


def test_instances_of_one_server_share_a_board(tmp_path, monkeypatch):
    monkeypatch.setattr(gather.tempfile, "gettempdir", lambda: str(tmp_path))
    a = PreparationBoard.for_server("whisper_0_3", server_pid=4242)
    b = PreparationBoard.for_server("whisper_0_17", server_pid=4242)
    other_server = PreparationBoard.for_server("whisper_0_5", server_pid=4343)
    try:
        a.mark(True)
        assert b.others_preparing() == 1
        assert other_server.others_preparing() == 0
    finally:
        for board in (a, b, other_server):
            board.close(remove=True)
    assert not list(tmp_path.iterdir())


def test_others_see_who_has_an_upload_in_flight_until_it_ends_or_goes_stale(boards, clock):
    first, second, third = boards
    assert first.others_in_flight() == 0
    second.mark_in_flight(True)
    third.mark_in_flight(True)
    assert first.others_in_flight() == 2 and second.others_in_flight() == 1
    third.mark_in_flight(False)
    assert first.others_in_flight() == 1
    # In flight is not preparing: the gathering does not wait for it.
    assert first.others_preparing() == 0 and wait(first, 0.5) == 0.0
    # A stub killed mid-upload never clears its slot; renewing keeps a live one counted.
    clock.now += gather.IN_FLIGHT_STALE_AFTER_S - 1
    assert first.others_in_flight() == 1
    second.mark_in_flight(True)
    clock.now += 2
    assert first.others_in_flight() == 1
    clock.now += gather.IN_FLIGHT_STALE_AFTER_S
    assert first.others_in_flight() == 0


def test_a_long_upload_takes_a_share_of_the_engine_while_others_are_in_flight(boards, clock):
    from types import SimpleNamespace

    from whisper_service.front import Front

    first, second, third = boards
    front = SimpleNamespace(board=first, windows_per_call=8)
    assert Front.windows_per_call_now(front) == 8  # alone: all of it
    second.mark_in_flight(True)
    assert Front.windows_per_call_now(front) == 4
    third.mark_in_flight(True)
    assert Front.windows_per_call_now(front) == 2
    crowd = [PreparationBoard(first.path, slot, clock=clock) for slot in range(3, 23)]
    for board in crowd:
        board.mark_in_flight(True)
    assert Front.windows_per_call_now(front) == 1  # never nothing
    for board in crowd:
        board.close()
    assert Front.windows_per_call_now(SimpleNamespace(board=None, windows_per_call=8)) == 8
