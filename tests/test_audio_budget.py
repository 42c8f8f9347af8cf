"""The decoded-audio budget (whisper_service.audio_budget) and the decoder's claims on it."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import soundfile

import corpus
from whisper_service import audio_budget
from whisper_service.audio import SAMPLE_RATE, decode_audio, decode_samples
from whisper_service.audio_budget import UNIT, AudioBudget, budget_bytes, memory_limit_bytes
from whisper_service.errors import InvalidInputError, ServerBusyError
from whisper_service.options import DecodeOptions, Limits
from whisper_service.pipeline import Pipeline

pytestmark = []


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def budget(tmp_path, fake_time):
    made = AudioBudget(tmp_path / "budget.lock", 10 * UNIT, wait_s=5.0, grow_wait_s=1.0,
                       sleep=fake_time.sleep, clock=fake_time.clock)
    yield made
    made.close()


def _wav(samples: np.ndarray, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _tone(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (level * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


@pytest.mark.unit
def test_claims_grow_shrink_and_release(budget):
    first, second = budget.claim(), budget.claim()
    first.ensure(3 * UNIT + 1)
    assert first.held_bytes == 4 * UNIT
    second.ensure(6 * UNIT)
    assert budget.held_here() == 10
    first.ensure(UNIT)
    assert first.held_bytes == UNIT and budget.held_here() == 7
    second.release()
    first.release()
    assert budget.held_here() == 0


@pytest.mark.unit
def test_a_claim_waits_while_the_budget_is_spent_then_gives_up_with_a_sentence(budget, fake_time):
    holder = budget.claim()
    holder.ensure(8 * UNIT)
    waiting = budget.claim()
    with pytest.raises(ServerBusyError, match="busy decoding other long uploads"):
        waiting.ensure(3 * UNIT)
    assert fake_time.slept >= 5.0
    assert waiting.held_bytes == 0 and budget.held_here() == 8
    # a later, larger claim of an upload that already holds memory waits only briefly
    holder.ensure(8 * UNIT)
    small = budget.claim()
    small.ensure(UNIT)
    before = fake_time.slept
    with pytest.raises(ServerBusyError):
        small.ensure(5 * UNIT)
    assert fake_time.slept - before < 2.0
    assert small.held_bytes == UNIT


@pytest.mark.unit
def test_what_the_budget_could_never_hold_is_refused_at_once(budget, fake_time):
    with pytest.raises(InvalidInputError, match="split it into shorter files"):
        budget.claim().ensure(11 * UNIT)
    assert fake_time.slept == 0


@pytest.mark.unit
def test_units_are_given_back_when_the_samples_are_freed(budget):
    claim = budget.claim()
    claim.ensure(2 * UNIT)
    samples = np.zeros(10, dtype=np.int16)
    view = samples[:5]
    claim.release_with(samples)
    del samples
    gc.collect()
    assert budget.held_here() == 2  # a view still refers to the samples
    del view
    gc.collect()
    assert budget.held_here() == 0


@pytest.mark.unit
def test_budget_setting_and_its_default_from_the_memory_limit(tmp_path):
    assert budget_bytes({"WHISPER_AUDIO_BUDGET_MB": "300"}) == 300 * UNIT
    with pytest.raises(ValueError, match="not a number"):
        budget_bytes({"WHISPER_AUDIO_BUDGET_MB": "lots"})
    with pytest.raises(ValueError, match="positive"):
        budget_bytes({"WHISPER_AUDIO_BUDGET_MB": "0"})
    assert budget_bytes({}, limit=8 << 30) == 1 << 30
    assert budget_bytes({}, limit=4 << 30) == audio_budget.MIN_DEFAULT_BYTES
    assert budget_bytes({}, limit=64 << 30) == audio_budget.MAX_DEFAULT_BYTES

    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal:       25165824 kB\nMemFree: 1 kB\n")
    assert memory_limit_bytes(tmp_path) == 24 << 30
    cgroup = tmp_path / "sys/fs/cgroup"
    cgroup.mkdir(parents=True)
    (cgroup / "memory.max").write_text("max\n")
    assert memory_limit_bytes(tmp_path) == 24 << 30
    (cgroup / "memory.max").write_text(f"{8 << 30}\n")
    assert memory_limit_bytes(tmp_path) == 8 << 30


@pytest.mark.unit
def test_decoding_claims_the_samples_bytes_before_allocating_them():
    claims = []
    samples = decode_samples(_wav(_tone(20.0)), 60, claims.append)
    assert samples.dtype == np.float32 and samples.size == 20 * SAMPLE_RATE
    assert claims and max(claims) >= 4 * samples.size
    assert claims[-1] <= 4 * samples.size + 4 * 2 * SAMPLE_RATE


@pytest.mark.unit
def test_a_refused_claim_stops_decoding_with_its_own_error():
    def refuse(nbytes):
        raise ServerBusyError("busy", "audio_budget_busy")

    with pytest.raises(ServerBusyError):
        decode_samples(_wav(_tone(2.0)), 60, refuse)


@pytest.mark.unit
def test_the_pipeline_holds_its_claim_while_the_job_lives(tmp_path, fake_time):
    budget = AudioBudget(tmp_path / "b.lock", 64 * UNIT, sleep=fake_time.sleep,
                         clock=fake_time.clock)
    pipeline = Pipeline(Limits(), 80, budget)
    job = pipeline.prepare(corpus.JFK.read_bytes(), DecodeOptions())
    assert job.to_send and budget.held_here() == 1  # 11 s of float32 samples: 0.7 MB
    del job
    gc.collect()
    assert budget.held_here() == 0
    with pytest.raises(InvalidInputError):
        pipeline.prepare(b"not audio at all", DecodeOptions())
    assert budget.held_here() == 0


@pytest.mark.model
@pytest.mark.parametrize("vad", [None, "evidence"])
@pytest.mark.parametrize("piece_seconds", [17, 31])
def test_vad_in_pieces_finds_what_it_finds_on_the_whole(vad, piece_seconds):
    """speech_spans reads long audio a piece at a time: on 120 s of joined speech in pieces
    of 17 or 31 s every span of one float pass is found within 0.4 s, and
    what else is found is a blip under 0.3 s (the VAD's state starts afresh each piece)."""
    from whisper_service.windows import EVIDENCE_VAD, speech_spans

    parameters = EVIDENCE_VAD if vad else None
    audio, _ = corpus.joined(list(corpus.ALL), min_seconds=100)
    whole = speech_spans(audio, parameters, piece_samples=audio.size)
    pieces = speech_spans(audio, parameters, piece_samples=piece_seconds * SAMPLE_RATE,
                          whole_seconds=0)
    unmatched = list(pieces)
    for a, b in whole:
        match = [(c, d) for c, d in unmatched
                 if abs(a - c) < 0.4 * SAMPLE_RATE and abs(b - d) < 0.4 * SAMPLE_RATE]
        assert match, ((a, b), pieces)
        unmatched.remove(match[0])
    assert all(d - c < 0.3 * SAMPLE_RATE for c, d in unmatched), unmatched


@pytest.mark.unit
def test_freed_memory_is_given_back_without_failing_where_there_is_no_glibc():
    from whisper_service import memory

    memory.give_back_freed_memory()  # glibc here: trims
    original = memory._LIBC
    try:
        memory._LIBC = None  # musl: nothing to call
        memory.give_back_freed_memory()
        assert memory.map_large_buffers_apart() is False
        assert memory.map_large_buffers_apart_until_ready() is False
        assert memory.serve_from_the_heaps() is False
    finally:
        memory._LIBC = original
    assert original is not None
