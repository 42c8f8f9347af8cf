"""The preparation board on the real clock, as the server runs it (real waiting: not unit).

tests/test_gather.py checks the waiting itself on a stand-in clock; this checks that the
default clock and sleep really wait, and that two boards on one file see each other.
"""

from __future__ import annotations

import asyncio

import pytest

from whisper_service.gather import PreparationBoard

pytestmark = pytest.mark.slow


def test_boards_wait_on_the_real_clock(tmp_path):
    path = tmp_path / "fronts.board"
    first, second = PreparationBoard(path, 0), PreparationBoard(path, 1)
    try:
        assert asyncio.run(first.wait_for_others(0.5)) < 0.5  # nobody else: no waiting
        second.mark(True)

        async def scenario():
            async def finish_later():
                await asyncio.sleep(0.1)
                second.mark(False)

            task = asyncio.create_task(finish_later())
            waited = await first.wait_for_others(30.0)
            await task
            return waited

        # It waited for the other board, and stopped when the other was ready (not at the
        # limit: the other board is no longer preparing).
        waited = asyncio.run(scenario())
        assert 0.1 <= waited < 30.0
        assert first.others_preparing() == 0
        second.mark(True)
        assert asyncio.run(first.wait_for_others(0.05)) >= 0.05  # bounded
    finally:
        first.close()
        second.close()
