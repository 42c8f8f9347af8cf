"""No speech is dropped silently, none is invented: token splitting of every shape, the tail
retries and their fallback, speech evidence, one language per upload, and the upload loop,
all without a model or a server (the engine is a function returning window results)."""

from __future__ import annotations

import asyncio
from typing import List

import numpy as np
import pytest

from whisper_service.languages import CONFIDENT_LANGUAGE, disagreeing_windows, upload_language
from whisper_service.options import DecodeOptions, Limits
from whisper_service.pipeline import MAX_TAIL_ROUNDS, Job, Pipeline
from whisper_service.segments import split_by_timestamps
from whisper_service.upload import Cancelled, transcribe
from whisper_service.window_result import WindowResult
from whisper_service.windows import (SAMPLE_RATE, Window, region_windows, speech_regions,
                                     speech_seconds)

pytestmark = pytest.mark.unit

TS = 50364  # <|0.00|> of the multilingual tokenizer
T = lambda seconds: TS + int(round(seconds / 0.02))  # noqa: E731


# ------------------------------------------------------------------ tokens of every shape
def test_one_opening_timestamp_then_text_is_one_segment_to_the_window_end():
    # The shape that lost 29 s of speech: Whisper read to the end of the window and never
    # closed the segment.
    segments, covered = split_by_timestamps([T(0), 1, 2, 3, 4], TS, 29.4)
    assert [(s["start"], s["end"], s["tokens"]) for s in segments] == [(0.0, 29.4, [1, 2, 3, 4])]
    assert segments[0]["unfinished"] and covered == 0.0


def test_text_without_any_timestamp_is_one_complete_segment():
    segments, covered = split_by_timestamps([5, 6], TS, 4.0)
    assert segments == [{"start": 0.0, "end": 4.0, "tokens": [5, 6]}]
    assert covered == 4.0
    assert split_by_timestamps([], TS, 4.0) == ([], 4.0)


def test_single_timestamp_ending_covers_the_window():
    segments, covered = split_by_timestamps([T(0), 1, 2, T(1), T(1), 3, T(2)], TS, 5.0)
    assert [(s["start"], s["end"], s["tokens"]) for s in segments] == [
        (0.0, 1.0, [1, 2]), (1.0, 2.0, [3])]
    assert covered == 5.0 and not any(s.get("unfinished") for s in segments)


def test_consecutive_timestamps_at_the_end_cover_up_to_them():
    segments, covered = split_by_timestamps([T(0), 1, T(3), T(3)], TS, 20.0)
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 3.0)]
    assert covered == 3.0


def test_unfinished_last_segment_is_kept_marked_and_reported():
    segments, covered = split_by_timestamps([T(0), 1, 2, T(1), T(1), 3, 4], TS, 10.0)
    assert [(s["tokens"], s.get("unfinished", False)) for s in segments] == [
        ([1, 2], False), ([3, 4], True)]
    assert segments[1]["start"] == 1.0 and segments[1]["end"] == 10.0
    assert covered == 1.0


def test_text_after_a_single_closing_timestamp_opens_the_next_segment():
    segments, covered = split_by_timestamps([T(0), 1, T(2), 3, 4], TS, 10.0)
    assert [(s["start"], s["end"], s["tokens"]) for s in segments] == [
        (0.0, 2.0, [1]), (2.0, 10.0, [3, 4])]
    assert covered == 2.0


def test_text_before_the_first_timestamp_is_kept():
    segments, _ = split_by_timestamps([7, 8, T(1), 1, T(2)], TS, 10.0)
    assert [s["tokens"] for s in segments] == [[7, 8], [1]]


def test_timestamps_past_the_window_are_clamped_to_it():
    segments, covered = split_by_timestamps([T(0), 1, T(12)], TS, 8.0)
    assert segments[0]["end"] == 8.0 and covered == 8.0


# --------------------------------------------------------------------- tails and fallback
def _window(seconds: float, start: float = 0.0) -> Window:
    audio = (0.1 * np.sin(np.arange(int(seconds * SAMPLE_RATE)) * 0.05)).astype(np.float32)
    return Window(audio=audio, spans=[(0, int(start * SAMPLE_RATE), audio.size)])


def _job(windows: List[Window], evidence=None, options=DecodeOptions()) -> Job:
    total = max(w.spans[0][1] + w.audio.size for w in windows)
    evidence = [(0, total)] if evidence is None else evidence
    return Job(options, total / SAMPLE_RATE, windows, list(range(len(windows))),
               results=[None] * len(windows), evidence=evidence)


def _result(segments, covered, language="en", probability=0.99, **extra) -> WindowResult:
    # Detected languages come with runners-up; a given one alone, at 1.0.
    probs = {language: probability}
    if probability < 1.0:
        probs["nn"] = round((1.0 - probability) / 2, 4)
        probs.setdefault("zh", round((1.0 - probability) / 2, 4))
    return WindowResult.from_dict(dict(
        {"language": language, "language_probability": probability, "language_probs": probs,
         "avg_logprob": -0.3, "no_speech_prob": 0.01, "compression_ratio": 1.2,
         "temperature": 0.0, "segments": segments, "covered": covered}, **extra))


def _seg(start, end, text, unfinished=False):
    seg = {"start": start, "end": end, "text": text}
    if unfinished:
        seg["unfinished"] = True
    return seg


PIPELINE = Pipeline(Limits(), 80)


def test_a_window_never_closed_is_not_decoded_again_and_its_text_is_kept():
    job = _job([_window(29.4)])
    job.settle(0, _result([_seg(0.0, 29.4, " all of it", unfinished=True)], 0.0))
    assert PIPELINE.retry_tails(job, [0]) == []  # the identical window would come back
    text = PIPELINE.finish(job).text
    assert text == "all of it"


def test_a_tail_that_finds_nothing_gives_the_unfinished_text_back():
    job = _job([_window(28.0)])
    job.settle(0, _result([_seg(0.0, 10.0, " first."), _seg(10.0, 28.0, " second", True)], 10.0))
    tails = PIPELINE.retry_tails(job, [0])
    assert len(tails) == 1 and job.windows[tails[0]].start == pytest.approx(10.0)
    job.settle(tails[0], _result([], job.windows[tails[0]].duration))
    assert PIPELINE.retry_tails(job, tails) == []
    assert PIPELINE.finish(job).text == "first. second"


def test_a_tail_that_finds_the_text_replaces_the_unfinished_one():
    job = _job([_window(28.0)])
    job.settle(0, _result([_seg(0.0, 10.0, " first."), _seg(10.0, 28.0, " seco", True)], 10.0))
    tail = PIPELINE.retry_tails(job, [0])[0]
    job.settle(tail, _result([_seg(0.0, 5.0, " second sentence.")], 18.0))
    PIPELINE.retry_tails(job, [tail])
    result = PIPELINE.finish(job)
    assert result.text == "first. second sentence."
    assert [s.start for s in result.segments] == [0.0, 10.0]


def test_tails_stop_after_a_few_rounds_and_each_starts_later():
    job = _job([_window(29.0)])
    index, starts = 0, []
    job.settle(0, _result([_seg(0.0, 3.0, " a"), _seg(3.0, 29.0, " b", True)], 3.0))
    for _ in range(MAX_TAIL_ROUNDS + 2):
        tails = PIPELINE.retry_tails(job, [index])
        if not tails:
            break
        index = tails[0]
        starts.append(job.windows[index].start)
        duration = job.windows[index].duration
        job.settle(index, _result([_seg(0.0, 3.0, " x"), _seg(3.0, duration, " y", True)], 3.0))
    assert len(starts) == MAX_TAIL_ROUNDS
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert PIPELINE.finish(job).text.endswith("y")  # the last unfinished text is kept


def test_done_early_is_retried_only_where_the_vad_hears_speech():
    quiet_rest = _job([_window(20.0)], evidence=[(0, 5 * SAMPLE_RATE)])
    quiet_rest.settle(0, _result([_seg(0.0, 5.0, " hello.")], 20.0))
    assert PIPELINE.retry_tails(quiet_rest, [0]) == []

    speech_rest = _job([_window(20.0)], evidence=[(0, 5 * SAMPLE_RATE),
                                                  (9 * SAMPLE_RATE, 15 * SAMPLE_RATE)])
    speech_rest.settle(0, _result([_seg(0.0, 5.0, " hello.")], 20.0))
    tails = PIPELINE.retry_tails(speech_rest, [0])
    assert len(tails) == 1 and speech_rest.windows[tails[0]].start == pytest.approx(5.5)


def test_a_window_with_speech_and_no_text_is_counted():
    job = _job([_window(10.0), _window(10.0, start=20.0)],
               evidence=[(0, 10 * SAMPLE_RATE)])
    job.settle(0, _result([], 10.0))
    job.settle(1, _result([], 10.0))
    assert PIPELINE.check_coverage(job) == 1 and job.windows_without_text == 1


# ------------------------------------------------------------------------ speech evidence
def test_regions_pad_the_evidence_and_join_short_pauses_only():
    audio = np.zeros(60 * SAMPLE_RATE, dtype=np.float32)
    evidence = [(5 * SAMPLE_RATE, 8 * SAMPLE_RATE), (9 * SAMPLE_RATE, 12 * SAMPLE_RATE),
                (30 * SAMPLE_RATE, 33 * SAMPLE_RATE)]
    assert speech_regions(audio, evidence) == [(4 * SAMPLE_RATE, 13 * SAMPLE_RATE),
                                               (29 * SAMPLE_RATE, 34 * SAMPLE_RATE)]
    assert speech_regions(audio, []) == []


def test_region_windows_never_join_two_regions():
    audio = (0.1 * np.sin(np.arange(90 * SAMPLE_RATE) * 0.05)).astype(np.float32)
    regions = [(4 * SAMPLE_RATE, 13 * SAMPLE_RATE), (20 * SAMPLE_RATE, 75 * SAMPLE_RATE)]
    windows = region_windows(audio, regions)
    assert [len(w.spans) for w in windows] == [1] * len(windows)
    assert windows[0].start == 4.0 and windows[0].duration == 9.0
    assert all(w.duration <= 30.0 for w in windows)
    inside = sum(w.duration for w in windows[1:])
    assert inside == pytest.approx(55.0)


def test_speech_seconds_counts_evidence_inside_a_window():
    window = _window(10.0, start=20.0)
    assert speech_seconds(window, [(0, 22 * SAMPLE_RATE), (29 * SAMPLE_RATE, 40 * SAMPLE_RATE)]
                          ) == pytest.approx(3.0)


# ------------------------------------------------------------------ one language per upload
def test_the_upload_language_is_where_most_speech_is():
    windows = [_window(25.0), _window(5.0, 25.0), _window(25.0, 30.0)]
    evidence = [(0, 55 * SAMPLE_RATE)]
    results = [_result([], 25.0, "zh", 0.95), _result([], 5.0, "ja", 0.6),
               _result([], 25.0, "zh", 0.7)]
    detected = {i: r.language_probs for i, r in enumerate(results)}
    assert upload_language(windows, detected, [0, 1, 2], evidence) == "zh"
    assert disagreeing_windows(results, [0, 1, 2], "zh") == [1]


def test_an_unsure_window_keeps_its_language_when_the_uploads_is_implausible_for_it():
    unsure = _result([], 16.0, "la", 0.5)
    unsure.language_probs = {"la": 0.5, "en": 0.34, "fr": 0.02}
    assert disagreeing_windows([unsure], [0], "fr") == []
    assert disagreeing_windows([unsure], [0], "en") == [0]


def test_a_confident_window_keeps_its_own_language():
    results = [_result([], 25.0, "en", 0.99), _result([], 8.0, "de", CONFIDENT_LANGUAGE + 0.1)]
    assert disagreeing_windows(results, [0, 1], "en") == []


def test_noise_windows_carry_no_weight():
    windows = [_window(20.0), _window(20.0, 40.0)]
    evidence = [(0, 20 * SAMPLE_RATE)]  # the second window is noise
    detected = {0: {"zh": 0.6, "ja": 0.3}, 1: {"ja": 0.9, "zh": 0.05}}
    assert upload_language(windows, detected, [0, 1], evidence) == "zh"


def test_the_vote_uses_what_was_detected_not_what_was_forced():
    job = _job([_window(10.0)])
    job.settle(0, _result([], 10.0, "ja", 0.6))
    job.settle(0, _result([], 10.0, "zh", 1.0))  # decoded again in the upload's language
    assert job.detected[0]["ja"] == 0.6


# ------------------------------------------------------------------------ the upload loop
class FakeEngine:
    """Answers windows from a script: f(window start, duration, options) -> result."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def __call__(self, job):
        async def call(indices, features, frames, options):
            self.calls.append((list(indices), options.language))
            return [self.answer(job.windows[i], options) for i in indices]
        return call


class FakeFeatures(Pipeline):
    """The real pipeline with features replaced by zeros (no mel computation needed)."""

    def chunks(self, job, size, indices=None):
        todo = list(job.to_send if indices is None else indices)
        for first in range(0, len(todo), size):
            chosen = todo[first:first + size]
            yield chosen, np.zeros((len(chosen), 1, 1), np.float32), [1] * len(chosen)


def test_the_loop_decodes_an_unsure_window_again_in_the_upload_language():
    job = _job([_window(25.0), _window(5.0, 30.0), _window(25.0, 40.0)],
               evidence=[(0, 6 * SAMPLE_RATE), (30 * SAMPLE_RATE, 33 * SAMPLE_RATE),
                         (40 * SAMPLE_RATE, 46 * SAMPLE_RATE)])

    def answer(window, options):
        if options.language:
            return _result([_seg(0.0, window.duration, f" {options.language} text")],
                           window.duration, options.language, 1.0)
        language, p = ("ja", 0.5) if window.start == 30.0 else ("zh", 0.99)
        return _result([_seg(0.0, window.duration, f" {language} text")], window.duration,
                       language, p)

    engine = FakeEngine(answer)
    result = asyncio.run(transcribe(FakeFeatures(Limits(), 1), job, engine(job)))
    assert [s.language for s in result.segments] == ["zh", "zh", "zh"]
    assert result.language == "zh"
    assert engine.calls[-1] == ([1], "zh")


def test_the_loop_sends_tails_and_keeps_text_a_tail_misses():
    job = _job([_window(28.0)], evidence=[(0, 3 * SAMPLE_RATE), (9 * SAMPLE_RATE, 12 * SAMPLE_RATE)])

    def answer(window, options):
        if window.start == 0.0:
            return _result([_seg(0.0, 9.0, " one."), _seg(9.0, 28.0, " two", True)], 9.0)
        return _result([], window.duration)

    engine = FakeEngine(answer)
    result = asyncio.run(transcribe(FakeFeatures(Limits(), 1), job, engine(job)))
    assert result.text == "one. two"
    assert len(engine.calls) == 2


def test_a_window_far_too_short_for_its_speech_is_decoded_again_in_halves():
    # 28 s of speech, one short sentence back (Whisper decoded the window in the language of
    # its last seconds and skipped the rest): the halves say more and replace it.
    job = _job([_window(28.0)])

    def answer(window, options):
        if window.duration > 20:
            return _result([_seg(0.0, 27.0, " Die Werbung.")], window.duration, "de", 0.93)
        words = " ".join(["word"] * int(window.duration * 2.5))
        return _result([_seg(0.0, window.duration, " " + words)], window.duration, "en", 0.9)

    engine = FakeEngine(answer)
    result = asyncio.run(transcribe(FakeFeatures(Limits(), 1), job, engine(job)))
    assert "Werbung" not in result.text and result.text.count("word") >= 60
    assert [s.language for s in result.segments] == ["en", "en"]
    assert result.segments[0].start == 0.0 and result.segments[1].start > 9.0


def test_halves_that_say_no_more_are_dropped():
    job = _job([_window(28.0)])
    job.settle(0, _result([_seg(0.0, 27.0, " la la la")], 28.0))
    halves = PIPELINE.split_sparse(job, [0])
    assert len(halves) == 2
    assert sum(job.windows[i].duration for i in halves) == pytest.approx(28.0)
    for i in halves:
        job.settle(i, _result([_seg(0.0, 2.0, " la")], job.windows[i].duration))
    assert PIPELINE.keep_better_halves(job) == [0]
    assert all(job.results[i] is None for i in halves)
    assert PIPELINE.finish(job).text == "la la la"


def test_the_loop_asks_before_every_call_how_many_windows_it_may_send():
    # A long upload's share of the engine shrinks while other uploads arrive (Front
    # .windows_per_call_now): each call takes the share of the moment.
    job = _job([_window(25.0, 30.0 * k) for k in range(7)])
    shares = iter([4, 1, 2])
    words = " ".join(["word"] * 60)
    engine = FakeEngine(lambda w, o: _result([_seg(0.0, w.duration, " " + words)], w.duration))
    result = asyncio.run(transcribe(FakeFeatures(Limits(), 1), job, engine(job),
                                    windows_per_call=lambda: next(shares, 8), calls_in_flight=1))
    assert [indices for indices, _ in engine.calls] == [[0, 1, 2, 3], [4], [5, 6]]
    assert result.text.count("word") == 7 * 60


def test_the_loop_stops_when_the_caller_is_gone():
    job = _job([_window(10.0)])
    engine = FakeEngine(lambda w, o: _result([], w.duration))
    with pytest.raises(Cancelled):
        asyncio.run(transcribe(FakeFeatures(Limits(), 1), job, engine(job),
                               cancelled=lambda: True))
    assert engine.calls == []


def test_text_heard_twice_over_the_same_time_comes_back_once():
    from whisper_service.stitch import stitch

    windows = [_window(20.0), _window(10.0, start=10.0)]
    results = [_result([_seg(0.0, 5.0, " one."), _seg(9.0, 12.0, " Two!")], 20.0),
               _result([_seg(0.0, 2.0, " two"), _seg(4.0, 6.0, " two")], 10.0)]
    text = stitch(windows, results, DecodeOptions(), 20.0).text
    # The tail's first "two" repeats the window's over the same seconds; its second one is
    # said later and stays.
    assert text == "one. Two! two"
