"""Long uploads a section at a time: blocks of decoded samples, sections cut at pauses, their
transcriptions moved to upload time and joined, and the front's answer for an upload of
several sections."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import corpus
from whisper_service import sections
from whisper_service.audio import SAMPLE_RATE, decode_blocks, decode_samples
from whisper_service.audio_budget import UNIT, AudioBudget
from whisper_service.options import DecodeOptions, Limits
from whisper_service.pipeline import Pipeline
from whisper_service.windows import EVIDENCE_VAD, speech_spans
from whisper_triton.result import Segment, Transcription, Word


def _noise(seconds: float, level: float = 3e-4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, level, int(seconds * SAMPLE_RATE)).astype(
        np.float32)


def _speech_with_pauses(copies: int, pause_seconds: float = 6.0):
    """jfk.flac said `copies` times, each followed by a pause of room noise; with offsets."""
    speech = corpus.samples(corpus.JFK)
    pieces, offsets, position = [], [], 0
    for copy in range(copies):
        offsets.append(position / SAMPLE_RATE)
        pause = _noise(pause_seconds, seed=copy)
        pieces += [speech, pause]
        position += speech.size + pause.size
    return np.concatenate(pieces), offsets


@pytest.mark.unit
def test_blocks_add_up_to_the_whole_upload_and_claim_a_block_not_the_upload():
    audio = _noise(95, level=0.05)
    data = corpus.encode(audio, "flac")
    whole = decode_samples(data, 3600)
    claims = []
    blocks = list(decode_blocks(data, 3600, 20 * SAMPLE_RATE, claims.append))
    assert [b.size for b in blocks] == [20 * SAMPLE_RATE] * 4 + [15 * SAMPLE_RATE]
    assert np.array_equal(np.concatenate(blocks), whole)
    # The block being filled and the one handed out, never the whole 95 s.
    assert max(claims) <= 2 * 4 * 20 * SAMPLE_RATE
    exact = list(decode_blocks(corpus.encode(audio[:40 * SAMPLE_RATE], "flac"), 3600,
                               20 * SAMPLE_RATE))
    assert [b.size for b in exact] == [20 * SAMPLE_RATE] * 2


@pytest.mark.unit
def test_what_the_caller_sends_back_starts_the_next_block_and_nothing_is_lost():
    audio = _noise(95, level=0.05)
    whole = decode_samples(corpus.encode(audio, "flac"), 3600)
    blocks = decode_blocks(corpus.encode(audio, "flac"), 3600, 20 * SAMPLE_RATE)
    kept, sizes = [], []
    block = next(blocks)
    while True:
        sizes.append(block.size)
        back = block[-3 * SAMPLE_RATE:].copy()
        kept.append(block[:-3 * SAMPLE_RATE])
        try:
            block = blocks.send(back)
        except StopIteration:
            break
        if block.size < 23 * SAMPLE_RATE:
            kept.append(block)
            sizes.append(block.size)
            assert next(blocks, None) is None
            break
    assert sizes == [20 * SAMPLE_RATE] + [23 * SAMPLE_RATE] * 3 + [18 * SAMPLE_RATE]
    assert np.array_equal(np.concatenate(kept), whole)


@pytest.mark.unit
def test_a_blocked_upload_longer_than_the_limit_is_refused_after_the_blocks_before_it():
    data = corpus.encode(_noise(50, level=0.05), "mp3")  # no exact duration to refuse it unread
    blocks = decode_blocks(data, 30, 20 * SAMPLE_RATE)
    assert next(blocks).size == 20 * SAMPLE_RATE
    with pytest.raises(Exception, match="longer than the limit"):
        list(blocks)


@pytest.mark.unit
def test_sections_move_to_upload_time_and_join_in_order():
    def part(start, text, language):
        words = [Word(start, start + 0.5, text.split()[0], 0.9)]
        return Transcription(text, language, 0.8, 30.0, "transcribe",
                             [Segment(0, start, start + 2.0, " " + text, language=language,
                                      words=words)])

    first = part(1.0, "hello there", "en")
    second = sections.shifted(part(0.5, "你好 世界", "zh"), 600.0)
    third = sections.shifted(part(3.0, "good bye", "en"), 1230.5)
    assert second.segments[0].start == 600.5 and second.segments[0].words[0].end == 601.0
    joined = sections.joined([first, second, third], DecodeOptions(), 1260.0, None)
    assert joined.text == "hello there 你好 世界 good bye"
    assert [s.id for s in joined.segments] == [0, 1, 2]
    assert [s.start for s in joined.segments] == [1.0, 600.5, 1233.5]
    assert joined.language == "en" and joined.duration == 1260.0
    assert sections.joined([first], DecodeOptions(), 30.0, None) is first
    assert sections.shifted(first, 0.0) is first


@pytest.mark.model
def test_a_long_upload_is_cut_in_its_pauses_and_a_short_one_is_one_job(tmp_path):
    audio, offsets = _speech_with_pauses(8)  # 8 x 17 s = 136 s
    data = corpus.encode(audio, "flac")
    budget = AudioBudget(tmp_path / "budget.lock", 64 * UNIT)
    pipeline = Pipeline(Limits(), 80, budget)
    pipeline.section_seconds, pipeline.section_slack_seconds = 40.0, 10.0

    parts = []
    for section in pipeline.sections(data, DecodeOptions()):
        parts.append((section.offset, section.job.duration, len(section.job.to_send)))
        assert budget.held_here() >= 1
        del section
    # Consecutive, covering the whole upload, each within its bounds.
    starts = [offset for offset, _, _ in parts]
    ends = [offset + duration for offset, duration, _ in parts]
    assert starts[0] == 0.0 and starts[1:] == pytest.approx(ends[:-1])
    assert ends[-1] == pytest.approx(audio.size / SAMPLE_RATE)
    assert all(30.0 <= d <= 50.0 for _, d, _ in parts[:-1]) and len(parts) == 4
    assert all(sent for _, _, sent in parts)
    # Every cut is in a pause: outside what the VAD calls speech on the whole upload.
    speech = speech_spans(audio, EVIDENCE_VAD)
    for cut in starts[1:]:
        sample = int(cut * SAMPLE_RATE)
        assert not any(start <= sample < end for start, end in speech), cut
    gc.collect()
    assert budget.held_here() == 0

    short = corpus.JFK.read_bytes()
    (only,) = list(pipeline.sections(short, DecodeOptions()))
    whole = pipeline.prepare(short, DecodeOptions())
    assert only.job.duration == whole.duration
    assert [w.spans for w in only.job.windows] == [w.spans for w in whole.windows]
    del only, whole
    gc.collect()
    assert budget.held_here() == 0
    budget.close()


@pytest.mark.model
def test_a_section_that_is_mostly_pauses_does_not_keep_its_samples_alive():
    # 11 s of speech, then 60 s of room noise, three times: each 60 s section holds one
    # window of about 13 s.
    audio, _ = _speech_with_pauses(3, pause_seconds=60.0)
    data = corpus.encode(audio, "flac")
    whole = decode_samples(data, 3600)
    pipeline = Pipeline(Limits(), 80)
    pipeline.section_seconds, pipeline.section_slack_seconds = 60.0, 15.0

    windows = 0
    for section in pipeline.sections(data, DecodeOptions()):
        start = int(round(section.offset * SAMPLE_RATE))
        for window in section.job.windows:
            windows += 1
            # Samples of its own (the 60 s section can be freed), the upload's samples.
            assert window.audio.flags.owndata and window.audio.base is None
            (_, at, length), = window.spans
            assert np.array_equal(window.audio, whole[start + at:start + at + length])
        del section
    assert windows >= 3

    # A section that is mostly speech keeps views: no copy for nothing.
    speech, _ = _speech_with_pauses(6, pause_seconds=1.0)
    pipeline.section_seconds, pipeline.section_slack_seconds = 40.0, 10.0
    first = next(pipeline.sections(corpus.encode(speech, "flac"), DecodeOptions()))
    assert all(w.audio.base is not None for w in first.job.windows)
