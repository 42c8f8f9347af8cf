"""The decoded-audio budget across processes: what one front process holds, another cannot
take, and a killed process's share comes back by itself (the kernel drops its locks)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from whisper_service.audio_budget import UNIT, AudioBudget
from whisper_service.errors import ServerBusyError

pytestmark = pytest.mark.slow

HOLDER = """
import sys, time
from pathlib import Path
from whisper_service.audio_budget import AudioBudget, UNIT
budget = AudioBudget(Path(sys.argv[1]), 4 * UNIT)
claim = budget.claim()
claim.ensure(3 * UNIT)
print("held", flush=True)
time.sleep(600)
"""


def test_units_held_by_another_process_are_taken_back_when_it_dies(tmp_path):
    path = tmp_path / "budget.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        here = AudioBudget(path, 4 * UNIT, wait_s=0.3)
        claim = here.claim()
        claim.ensure(UNIT)  # the one unit left
        with pytest.raises(ServerBusyError):
            here.claim().ensure(UNIT)
        holder.kill()
        holder.wait(10)
        started = time.monotonic()
        claim.ensure(4 * UNIT)
        assert time.monotonic() - started < 5
        assert here.held_here() == 4
        here.close()
    finally:
        holder.kill()
