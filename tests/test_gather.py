"""The board on which front instances say they are preparing an upload (no server needed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from whisper_service import gather
from whisper_service.gather import PreparationBoard

pytestmark = pytest.mark.unit


@pytest.fixture
def boards(tmp_path):
    path = tmp_path / "fronts.board"
    made = [PreparationBoard(path, slot) for slot in (0, 1, 2)]
    yield made
    for board in made:
        board.close()


def test_others_see_who_is_preparing_and_not_themselves(boards):
    first, second, third = boards
    assert first.others_preparing() == 0
    first.mark(True)
    second.mark(True)
    assert first.others_preparing() == 1
    assert third.others_preparing() == 2
    first.mark(False)
    assert third.others_preparing() == 1


def test_a_lone_upload_does_not_wait(boards):
    waited = asyncio.run(boards[0].wait_for_others(0.5))
    assert waited < 0.05


def test_waiting_ends_when_the_others_are_ready(boards):
    first, second, _ = boards
    second.mark(True)

    async def scenario():
        async def finish_later():
            await asyncio.sleep(0.1)
            second.mark(False)
        task = asyncio.create_task(finish_later())
        waited = await first.wait_for_others(2.0)
        await task
        return waited

    waited = asyncio.run(scenario())
    assert 0.08 <= waited < 0.5


def test_waiting_lasts_while_uploads_keep_arriving(boards):
    """A client sends the rest of a burst as its answers come in: an upload that arrived a
    moment ago (and is already prepared) still holds the others for the quiet period."""
    first, second, _ = boards
    second.mark(True)
    second.mark(False)
    started = time.monotonic()
    asyncio.run(first.wait_for_others(1.0, quiet_s=0.1))
    assert 0.08 <= time.monotonic() - started < 0.5
    # Without a quiet period, or once it is over, nobody waits.
    assert asyncio.run(first.wait_for_others(1.0)) < 0.05
    assert asyncio.run(first.wait_for_others(1.0, quiet_s=0.1)) < 0.05


def test_a_lone_upload_does_not_wait_for_its_own_arrival(boards):
    boards[0].mark(True)
    boards[0].mark(False)
    assert asyncio.run(boards[0].wait_for_others(1.0, quiet_s=0.2)) < 0.05


def test_waiting_is_bounded(boards):
    boards[1].mark(True)
    started = time.monotonic()
    asyncio.run(boards[0].wait_for_others(0.15))
    assert 0.14 <= time.monotonic() - started < 0.6


def test_a_dead_instances_mark_goes_stale(boards, monkeypatch):
    boards[1].mark(True)
    assert boards[0].others_preparing() == 1
    later = time.monotonic() + gather.STALE_AFTER_S + 0.1
    monkeypatch.setattr(gather.time, "monotonic", lambda: later)
    assert boards[0].others_preparing() == 0


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
