"""The scheduler against a fake decoder (no model): packing, rounds, failures, workers, layouts;
plus the continuation's token rules and the window result's wire format."""

from __future__ import annotations

import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from whisper_service import continuation, packing, quality
from whisper_service.decoding import BatchLayout, DecodeWindow
from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions
from whisper_service.quality import Attempt
from whisper_service.scheduler import (TRUSTED_LANGUAGE_PROBABILITY, Scheduler, Unit, balanced,
                                       split_packed)
from whisper_service.window_result import WindowResult, WindowSegment, WordTiming

pytestmark = pytest.mark.unit

N_MELS = 4


def _clip(clip_id: int, frames: int) -> np.ndarray:
    """A window whose features carry the clip's id, so the fake decoder can tell who is where."""
    window = np.zeros((N_MELS, packing.FRAMES), dtype=np.float32)
    window[:, :frames + packing.GAP_FRAMES] = clip_id
    return window


class FakeDecoder:
    """Says " clip<id>" for every clip it finds, like a decoder that hears each upload."""

    def __init__(self, multilingual: bool = True, skipped_in_packs=(), failing=(),
                 improbable_packs: bool = False, cut_short_in_packs=(),
                 untranslated_in_packs=(), languages: Optional[Dict[int, Tuple[str, float]]] = None,
                 failing_detection: bool = False, hard=()):
        self.multilingual = multilingual
        # Clips whose first temperature is improbable alone; the fallback finds them.
        self.hard = set(hard)
        # What detect_languages finds per clip id (default: English, at 0.9).
        self.languages = languages or {}
        self.failing_detection = failing_detection
        self.detections: List[int] = []  # clip ids whose language was detected
        self.windows: List[DecodeWindow] = []  # every window decoded
        self.skipped_in_packs = set(skipped_in_packs)
        self.cut_short_in_packs = set(cut_short_in_packs)
        self.untranslated_in_packs = set(untranslated_in_packs)
        self.failing = set(failing)
        self.improbable_packs = improbable_packs
        self.calls: List[tuple] = []  # (clip ids per window, fallback, thread name)
        self._lock = threading.Lock()

    def encoded_frames(self, window: DecodeWindow) -> int:
        return packing.FRAMES

    def refusal(self, options: DecodeOptions) -> Optional[InvalidInputError]:
        if options.task == "translate" and not self.multilingual:
            return InvalidInputError("cannot translate", "unsupported_task")
        return None

    def decode(self, windows: Sequence[DecodeWindow], fallback: bool) -> List[WindowResult]:
        ids = [self._ids(w) for w in windows]
        with self._lock:
            self.calls.append((ids, fallback, threading.current_thread().name))
            self.windows.extend(windows)
        if any(i in self.failing for clip_ids in ids for i in clip_ids):
            raise RuntimeError("this window breaks the decoder")
        return [self._result(w, clip_ids, fallback) for w, clip_ids in zip(windows, ids)]

    def detect_languages(self, windows: Sequence[DecodeWindow]) -> List[Dict[str, float]]:
        ids = [self._ids(w)[0] for w in windows]
        with self._lock:
            self.detections.extend(ids)
        if self.failing_detection:
            raise RuntimeError("detection breaks")
        found = [self.languages.get(i, ("en", 0.9)) for i in ids]
        return [{language: p, "xx": round(1 - p, 4)} for language, p in found]

    @staticmethod
    def _ids(window: DecodeWindow) -> List[int]:
        starts = packing.offsets(window.clip_frames) if window.clip_frames else [0]
        return [int(window.features[0, start]) for start in starts]

    def _result(self, window: DecodeWindow, clip_ids: List[int], fallback: bool = True
                ) -> WindowResult:
        packed = window.clip_frames is not None
        if self.hard.intersection(clip_ids):
            logprob, temperature = (-0.5, 0.4) if fallback and not packed else (-2.0, 0.0)
            text = " ".join(f" clip{i}" for i in clip_ids)
            return WindowResult("en", 1.0, {"en": 1.0}, logprob, 0.01, 1.0, temperature,
                                [WindowSegment(0.0, window.num_frames / 100, text)])
        frames = window.clip_frames or [window.num_frames]
        segments = []
        for clip_id, start, length in zip(clip_ids, packing.offsets(frames), frames):
            if packed and clip_id in self.skipped_in_packs:
                continue
            # About what a reader says: 12 letters a second.
            cut_short = packed and clip_id in self.cut_short_in_packs
            words = "" if cut_short else " said it" * (length // 100)
            if packed and clip_id in self.untranslated_in_packs:
                words = "甚至出现交易" * (length // 100)
            segments.append(WindowSegment(start / 100, (start + length) / 100,
                                          f" clip{clip_id}{words}"))
        logprob = -2.0 if packed and self.improbable_packs else -0.2
        language = window.options.language or "en"
        return WindowResult(language, 1.0, {language: 1.0}, logprob, 0.01, 1.0, 0.0, segments)


def _batch(ids: Sequence[int], frames: int = 500):
    features = np.stack([_clip(i, frames) for i in ids])
    return features, [frames] * len(ids)


def _decoded(decoder: FakeDecoder) -> List[List[int]]:
    """The clip ids of every window decoded, whatever call it was in, sorted."""
    return sorted(ids for call, _, _ in decoder.calls for ids in call)


def _texts(outcomes) -> List[str]:
    """Each outcome's text without the fake decoder's filler words, or its exception's name."""
    return [o.text.replace(" said it", "").strip() if isinstance(o, WindowResult)
            else type(o).__name__ for o in outcomes]


def test_short_windows_of_a_known_language_share_one_window_and_get_their_own_text_back():
    decoder = FakeDecoder()
    features, frames = _batch([1, 2, 3])
    outcomes = Scheduler(decoder).transcribe_windows(features, frames,
                                                     [DecodeOptions(language="en")] * 3)
    assert _texts(outcomes) == ["clip1", "clip2", "clip3"]
    assert [ids for ids, _, _ in decoder.calls] == [[[1, 2, 3]]]
    # Back in each clip's own time.
    assert all((s.start, s.end) == (0.0, 5.0) for o in outcomes for s in o.segments)


def test_an_english_only_model_packs_windows_without_detecting_their_language():
    features, frames = _batch([1, 2])
    english_only = FakeDecoder(multilingual=False)
    Scheduler(english_only).transcribe_windows(features, frames, [DecodeOptions()] * 2)
    assert [ids for ids, _, _ in english_only.calls] == [[[1, 2]]]
    assert english_only.detections == []


def test_short_windows_of_unknown_language_are_packed_by_the_language_detected_for_each():
    decoder = FakeDecoder(languages={2: ("zh", 0.95), 3: ("en", 0.6), 4: ("zh", 0.8)})
    features, frames = _batch([1, 2, 3, 4])
    outcomes = Scheduler(decoder).transcribe_windows(features, frames, [DecodeOptions()] * 4)
    assert sorted(decoder.detections) == [1, 2, 3, 4]
    assert _decoded(decoder) == [[1, 3], [2, 4]]
    assert sorted((FakeDecoder._ids(w), w.options.language) for w in decoder.windows) == [
        ([1, 3], "en"), ([2, 4], "zh")]
    assert _texts(outcomes) == ["clip1", "clip2", "clip3", "clip4"]
    # Each window reports what was detected for it, not "given at 1.0".
    assert [(o.language, o.language_probability) for o in outcomes] == [
        ("en", 0.9), ("zh", 0.95), ("en", 0.6), ("zh", 0.8)]
    assert outcomes[2].language_probs == {"en": 0.6, "xx": 0.4}


def test_a_window_whose_detected_language_is_unsure_is_decoded_alone_and_detects_it_there():
    unsure = TRUSTED_LANGUAGE_PROBABILITY - 0.1
    decoder = FakeDecoder(languages={3: ("es", unsure)})
    features, frames = _batch([1, 2, 3])
    outcomes = Scheduler(decoder).transcribe_windows(features, frames, [DecodeOptions()] * 3)
    assert _decoded(decoder) == [[1, 2], [3]]
    alone = next(w for w in decoder.windows if w.clip_frames is None)
    assert alone.options.language is None
    assert _texts(outcomes) == ["clip1", "clip2", "clip3"]


def test_windows_whose_language_detection_failed_are_decoded_alone():
    decoder = FakeDecoder(failing_detection=True)
    features, frames = _batch([1, 2])
    outcomes = Scheduler(decoder).transcribe_windows(features, frames, [DecodeOptions()] * 2)
    assert _decoded(decoder) == [[1], [2]]
    assert all(w.options.language is None for w in decoder.windows)
    assert _texts(outcomes) == ["clip1", "clip2"]


def test_only_short_windows_of_unknown_language_with_something_to_pack_with_are_detected():
    decoder = FakeDecoder()
    short, short_frames = _batch([1, 2])
    long, long_frames = _batch([3], frames=packing.MAX_CLIP_FRAMES + 1)
    given, given_frames = _batch([4])
    Scheduler(decoder).transcribe_windows(
        np.concatenate([short, long, given]), short_frames + long_frames + given_frames,
        [DecodeOptions()] * 3 + [DecodeOptions(language="en")])
    assert sorted(decoder.detections) == [1, 2]
    assert _decoded(decoder) == [[1, 2, 4], [3]]
    lone = FakeDecoder()
    Scheduler(lone).transcribe_windows(*_batch([5]), [DecodeOptions()])
    assert lone.detections == []


def test_packing_can_be_turned_off():
    decoder = FakeDecoder()
    features, frames = _batch([1, 2])
    Scheduler(decoder, pack_windows=False).transcribe_windows(
        features, frames, [DecodeOptions(language="en")] * 2)
    assert [ids for ids, _, _ in decoder.calls] == [[[1], [2]]]


def test_an_improbable_packed_window_gives_its_clips_back_to_be_decoded_alone_with_fallback():
    decoder = FakeDecoder(improbable_packs=True)
    features, frames = _batch([1, 2])
    outcomes = Scheduler(decoder).transcribe_windows(features, frames,
                                                     [DecodeOptions(language="en")] * 2)
    assert _texts(outcomes) == ["clip1", "clip2"]
    assert [(ids, fallback) for ids, fallback, _ in decoder.calls] == [
        ([[1, 2]], False), ([[1], [2]], True)]


def test_clips_a_pack_skipped_are_packed_once_more_then_decoded_alone():
    decoder = FakeDecoder(skipped_in_packs={2, 3})
    features, frames = _batch([1, 2, 3])
    outcomes = Scheduler(decoder).transcribe_windows(features, frames,
                                                     [DecodeOptions(language="en")] * 3)
    assert _texts(outcomes) == ["clip1", "clip2", "clip3"]
    assert [ids for ids, _, _ in decoder.calls] == [[[1, 2, 3]], [[2, 3]], [[2], [3]]]


def test_a_clip_the_packed_decode_cut_short_is_decoded_alone():
    """Whisper sometimes says two words for seconds of a packed clip ("It is" for 3.4 s of
    "The Egyptian background of the bondage"): that clip alone is decoded again."""
    decoder = FakeDecoder(cut_short_in_packs={2})
    features, frames = _batch([1, 2, 3])
    outcomes = Scheduler(decoder).transcribe_windows(features, frames,
                                                     [DecodeOptions(language="en")] * 3)
    assert [o.text.strip() for o in outcomes] == [
        "clip1" + " said it" * 5, "clip2" + " said it" * 5, "clip3" + " said it" * 5]
    assert [(ids, fallback) for ids, fallback, _ in decoder.calls] == [
        ([[1, 2, 3]], False), ([[2]], True)]


def test_a_clip_a_segment_ran_into_from_a_clip_the_decode_lost_is_not_kept():
    """Seen on base: a 5 s clip and a 4 s one packed; one segment from 4.88 s to 9.98 s held
    the second clip's sentence twice. The first clip came back empty, and the second's text,
    begun inside the first clip, is not trusted: both are decoded again."""
    frames = [500, 400]
    looped = " you go into your folder again and then you go into your folder"
    outcome = WindowResult("en", 1.0, {"en": 1.0}, -0.3, 0.01, 1.5, 0.0,
                           [WindowSegment(4.88, 9.98, looped)])
    unit = Unit(DecodeWindow(np.zeros((N_MELS, packing.FRAMES), np.float32), 1000,
                             DecodeOptions(language="en"), frames), False, [0, 1])
    kept, skipped = split_packed(unit, outcome, frames, [DecodeOptions(language="en")] * 2)
    assert kept == {} and skipped == [0]
    # The same text in a segment that begins in the second clip's own time is kept.
    outcome.segments = [WindowSegment(0.0, 5.0, " the first clip speaks here"),
                        WindowSegment(6.0, 9.98, looped)]
    kept, skipped = split_packed(unit, outcome, frames, [DecodeOptions(language="en")] * 2)
    assert sorted(kept) == [0, 1] and skipped == []


def test_a_clip_whose_first_words_went_missing_is_decoded_alone_with_the_clip_before():
    """Seen served on base: a 4.3 s clip came back from a pack as "I tell thee the truth,",
    without "By Allah replied the fireman" before it, which went to the clip before."""
    segments = [
        WindowSegment(0.3, 7.0, " the first clip speaks here. By Allah replied the fireman,"),
        WindowSegment(8.3, 9.9, " I tell thee the truth,"),
        WindowSegment(11.4, 13.5, " and the third clip here")]
    assert _kept_from_pack([500, 430, 300], segments) == [2]  # clips 0 and 1 go alone
    # Starting within its first second and a half is a clip's usual start: kept.
    segments[1] = WindowSegment(6.3, 9.9, " By Allah replied the fireman, I tell thee")
    segments[0] = WindowSegment(0.3, 4.9, " the first clip speaks here.")
    assert _kept_from_pack([500, 430, 300], segments) == [0, 1, 2]


def test_a_clip_whose_last_words_went_missing_is_decoded_alone():
    """Seen served on base: a 13.3 s clip came back from a pack ending at 11.6 s with "to give
    evidence of", without "called on to do so": Whisper went on to the next clip."""
    frames = [1332, 888, 448]
    segments = [
        WindowSegment(0.0, 5.28, " If called to a case supposed or suspected to be one of"),
        WindowSegment(5.28, 11.64, " poisoning, the medical man has two duties to perform"),
        WindowSegment(14.32, 24.0, " of a truth I heard him not, and folks are all sleeping."),
        WindowSegment(24.2, 28.5, " a statement of having been a shop boy.")]
    assert _kept_from_pack(frames, segments) == [1, 2]  # clip 0 goes alone
    # Ending within a second of its end is a clip's usual end.
    segments[1] = WindowSegment(5.28, 12.5, " poisoning ... if called on to do so.")
    assert _kept_from_pack(frames, segments) == [0, 1, 2]
    # The last clip is judged alike: "was last" for "was last taken", then the window ended.
    segments[3] = WindowSegment(24.2, 26.0, " medicine was last")
    assert _kept_from_pack(frames, segments) == [0, 1]


def _kept_from_pack(frames, segments):
    """The clips split_packed keeps from a packed English window that said these segments
    (none comes back empty in these tests)."""
    options = [DecodeOptions(language="en")] * len(frames)
    unit = Unit(DecodeWindow(np.zeros((N_MELS, packing.FRAMES), np.float32),
                             packing.offsets(frames)[-1] + frames[-1], options[0], frames),
                False, list(range(len(frames))))
    outcome = WindowResult("en", 1.0, {"en": 1.0}, -0.3, 0.01, 1.2, 0.0, list(segments))
    kept, skipped = split_packed(unit, outcome, frames, options)
    assert skipped == []
    return sorted(kept)


def test_a_clip_given_far_more_text_than_its_length_holds_is_decoded_alone():
    """A 4 s clip came back from a pack as its sentence said twice: too much text for 4 s."""
    assert quality.too_dense_for_clip(
        " you go into your Confu iFolder again in the Confu iFolder and then you go into your"
        " Confu iFolder again in the Confu iFolder.", 4.0)
    assert not quality.too_dense_for_clip(
        " Then you go into your confu i folder, again in the confu i folder.", 4.0)
    assert not quality.too_dense_for_clip(" 甚至出现交易几乎停滞的情况", 4.2)
    assert not quality.too_dense_for_clip(" Okay, thanks a lot!", 0.8)  # too short to judge


def test_short_clips_are_not_judged_sparse():
    """A one-word answer in a short clip is no sign of a lost decode: it stays packed."""
    decoder = FakeDecoder(cut_short_in_packs={2})
    features, frames = _batch([1, 2], frames=250)
    outcomes = Scheduler(decoder).transcribe_windows(features, frames,
                                                     [DecodeOptions(language="en")] * 2)
    assert [o.text.strip() for o in outcomes] == ["clip1 said it said it", "clip2"]
    assert len(decoder.calls) == 1


def test_a_packed_translation_that_came_back_untranslated_is_decoded_alone():
    decoder = FakeDecoder(untranslated_in_packs={2})
    features, frames = _batch([1, 2, 3])
    outcomes = Scheduler(decoder).transcribe_windows(
        features, frames, [DecodeOptions(language="zh", task="translate")] * 3)
    assert _texts(outcomes) == ["clip1", "clip2", "clip3"]
    assert [(ids, fallback) for ids, fallback, _ in decoder.calls] == [
        ([[1, 2, 3]], False), ([[2]], True)]


@pytest.mark.parametrize("text, task, off", [
    ("甚至出现交易几乎停滞的情况", "translate", True),
    ("even点儿出现交易几乎停治的情况", "translate", True),
    ("Even the trading almost stopped.", "translate", False),
    ("Müller said «ça va» in São Paulo.", "translate", False),
    ("They call it 市场 in Beijing.", "translate", False),
    ("1, 2, 3.", "translate", False),
    ("", "translate", False),
    ("甚至出现交易几乎停滞的情况", "transcribe", False),
])
def test_a_translation_must_be_written_in_latin_letters(text, task, off):
    assert quality.off_target(text, task) is off


def test_the_best_failed_attempt_is_a_translation_in_english_when_there_is_one():
    chinese = Attempt([1], -1.2, 0.0, 0.8, 1.0, off_target=True)
    english = Attempt([2], -1.5, 0.0, 1.1, 0.0)
    repetitive = Attempt([3], -0.5, 0.0, 3.0, 0.2)
    assert quality.best_attempt([chinese, english, repetitive]) is english
    assert quality.best_attempt([chinese, repetitive]) is chinese
    assert quality.needs_fallback(-0.2, 0.0, 1.0, wrong_language=True)
    assert not quality.needs_fallback(-0.2, 0.0, 1.0)


def test_a_failing_window_fails_alone():
    decoder = FakeDecoder(failing={2})
    features, frames = _batch([1, 2, 3], frames=2000)  # too long to pack
    outcomes = Scheduler(decoder).transcribe_windows(features, frames, [DecodeOptions()] * 3)
    assert _texts(outcomes) == ["clip1", "RuntimeError", "clip3"]


def test_refused_options_never_reach_the_decoder():
    decoder = FakeDecoder(multilingual=False)
    features, frames = _batch([1, 2])
    outcomes = Scheduler(decoder).transcribe_windows(
        features, frames, [DecodeOptions(task="translate"), DecodeOptions()])
    assert isinstance(outcomes[0], InvalidInputError) and _texts(outcomes[1:]) == ["clip2"]
    assert [ids for ids, _, _ in decoder.calls] == [[[2]]]


def test_windows_of_different_beam_sizes_are_decoded_in_separate_calls():
    decoder = FakeDecoder()
    features, frames = _batch([1, 2, 3], frames=2000)
    Scheduler(decoder).transcribe_windows(features, frames, [
        DecodeOptions(beam_size=5), DecodeOptions(beam_size=1), DecodeOptions(beam_size=5)])
    assert sorted(ids for ids, _, _ in decoder.calls) == [[[1], [3]], [[2]]]


def test_per_window_layout_shares_the_batch_among_workers_and_batched_uses_one_call():
    features, frames = _batch([1, 2, 3, 4], frames=2000)
    spread = FakeDecoder()
    both_decoding = threading.Barrier(2, timeout=30)
    original = spread.decode

    def decode_together(*args):
        both_decoding.wait()
        return original(*args)

    spread.decode = decode_together
    scheduler = Scheduler(spread, BatchLayout.PER_WINDOW, workers=2)
    try:
        outcomes = scheduler.transcribe_windows(features, frames, [DecodeOptions()] * 4)
    finally:
        scheduler.close()
    # Both workers were decoding at once (else the barrier breaks and the windows fail).
    assert _texts(outcomes) == ["clip1", "clip2", "clip3", "clip4"]
    assert sorted(len(ids) for ids, _, _ in spread.calls) == [2, 2]

    batched = FakeDecoder()
    Scheduler(batched, BatchLayout.BATCHED, workers=2).transcribe_windows(
        features, frames, [DecodeOptions()] * 4)
    assert [ids for ids, _, _ in batched.calls] == [[[1], [2], [3], [4]]]


def test_per_window_layout_splits_one_pack_so_that_no_worker_idles():
    features, frames = _batch([1, 2, 3, 4])
    decoder = FakeDecoder()
    scheduler = Scheduler(decoder, BatchLayout.PER_WINDOW, workers=2)
    try:
        outcomes = scheduler.transcribe_windows(features, frames,
                                                [DecodeOptions(language="en")] * 4)
    finally:
        scheduler.close()
    assert _texts(outcomes) == ["clip1", "clip2", "clip3", "clip4"]
    assert sorted(ids[0] for ids, _, _ in decoder.calls) == [[1, 2], [3, 4]]


def test_balanced_shares_put_the_heaviest_windows_apart():
    costs = [2.0, 1.97, 1.17, 1.13]
    assert sorted(map(sorted, balanced(costs, 2))) == [[0, 3], [1, 2]]
    assert balanced(costs, 1) == [[0, 1, 2, 3]]
    assert balanced(costs[:1], 2) == [[0]]


def test_skipped_clip_start_only_after_a_clean_end():
    begin = 1000
    at = lambda seconds: begin + int(round(seconds / 0.02))  # noqa: E731
    text = [5, 6, 7]
    start = continuation.skipped_clip_start
    assert start([at(0)] + text + [at(4.0)], begin, [5.0, 17.0]) == 5.0
    assert start([at(0)] + text + [at(12.0)], begin, [5.0, 17.0]) == 17.0
    assert start([at(0)] + text + [at(21.0)], begin, [5.0, 17.0]) is None
    # Ended inside a segment (no closing timestamp), or on timestamps alone: not a clean end.
    assert start([at(0)] + text, begin, [5.0]) is None
    assert start([at(0), at(1.0), at(1.0)], begin, [5.0]) is None
    # A segment closed, the next opened and nothing said: the decode ended there.
    assert start([at(0)] + text + [at(4.0), at(4.0)], begin, [5.0]) == 5.0
    assert start([at(0)] + text + [at(4.0)], begin, []) is None


def test_a_continuation_is_joined_after_its_forced_timestamp_and_an_empty_one_is_not():
    begin, eot, stamp = 1000, 999, 1250
    before = Attempt([1000, 5, 6, 1200, 1200], -0.2, 0.1, 1.0, 0.0)
    text_of = lambda tokens: " ".join(map(str, tokens))  # noqa: E731
    joined = continuation.join(before, stamp, [stamp, 7, 8, 1300], -0.4, begin, eot, text_of)
    # The empty segment opened at the end gives way to the forced timestamp.
    assert joined.tokens == [1000, 5, 6, 1200, stamp, 7, 8, 1300]
    assert -0.4 < joined.avg_logprob < -0.2 and joined.no_speech_prob == 0.1
    assert continuation.join(before, stamp, [stamp, eot], -0.1, begin, eot, text_of) is None


def test_window_results_survive_the_wire():
    result = WindowResult("zh", 0.9, {"zh": 0.9, "yue": 0.05}, -0.3, 0.02, 1.2, 0.0, [
        WindowSegment(0.0, 2.0, " 你好", words=[WordTiming(0.0, 1.0, " 你", 0.9),
                                              WordTiming(1.0, 2.0, "好", 0.8)]),
        WindowSegment(2.0, 30.0, " 还有", unfinished=True)], covered=2.0)
    again = WindowResult.from_json(result.to_json())
    assert again == result
    wire = result.to_dict()
    assert "unfinished" not in wire["segments"][0] and "words" not in wire["segments"][1]


def test_per_window_layout_decodes_a_few_windows_per_call_and_batched_all_at_once():
    """Generation memory grows with the windows in one call (beams x encoder output): the
    CPU's layout keeps calls small, the GPU's batches everything."""
    from whisper_service.scheduler import PER_WINDOW_CALL_WINDOWS

    features, frames = _batch(list(range(1, 11)), frames=2000)
    small = FakeDecoder()
    outcomes = Scheduler(small, BatchLayout.PER_WINDOW, workers=1).transcribe_windows(
        features, frames, [DecodeOptions(language="en")] * 10)
    assert _texts(outcomes) == [f"clip{i}" for i in range(1, 11)]
    assert [len(ids) for ids, _, _ in small.calls] == [2] * 5 == [
        min(PER_WINDOW_CALL_WINDOWS, 10 - k) for k in range(0, 10, PER_WINDOW_CALL_WINDOWS)]
    batched = FakeDecoder()
    Scheduler(batched, BatchLayout.BATCHED).transcribe_windows(
        features, frames, [DecodeOptions(language="en")] * 10)
    assert [len(ids) for ids, _, _ in batched.calls] == [10]


def test_windows_encoded_to_alike_lengths_share_a_call():
    """A call's windows are encoded to the length of its longest (one encoder output for the
    call's generation): a 3 s clip paired with a 28 s one would be encoded as 28 s."""

    class ShortEncoder(FakeDecoder):
        def encoded_frames(self, window: DecodeWindow) -> int:
            return min(packing.FRAMES, window.num_frames + 500)

    lengths = [2400, 300, 2000, 400, 2200, 350]
    features = np.stack([_clip(i + 1, n) for i, n in enumerate(lengths)])
    decoder = ShortEncoder()
    outcomes = Scheduler(decoder, BatchLayout.PER_WINDOW, workers=1, pack_windows=False
                         ).transcribe_windows(features, lengths,
                                              [DecodeOptions(language="en")] * len(lengths))
    assert _texts(outcomes) == [f"clip{i}" for i in range(1, 7)]
    calls = [sorted(lengths[ids[0] - 1] for ids in call) for call, _, _ in decoder.calls]
    assert sorted(calls) == [[300, 350], [400, 2000], [2200, 2400]]


def test_a_window_that_needs_its_fallback_is_deferred_and_the_others_are_not_held():
    decoder = FakeDecoder(hard=[2])
    scheduler = Scheduler(decoder, workers=2)
    features, frames = _batch([1, 2, 3])
    outcomes, deferred = scheduler.transcribe_windows_deferring_fallback(
        features, frames, [DecodeOptions(language="en")] * 3)
    # The pack with the hard clip is improbable: its clips are decoded alone, at the first
    # temperature only; two are done, the third waits for its fallback.
    assert _texts(outcomes)[0] == "clip1" and _texts(outcomes)[2] == "clip3"
    assert [d.index for d in deferred] == [1]
    assert outcomes[1].avg_logprob == -2.0
    assert all(not fallback for ids, fallback, _ in decoder.calls if ids == [[2]])
    features[:] = 0  # the caller's batch may be gone by the time it finishes
    finished = scheduler.finish(deferred[0])
    assert (finished.text.strip(), finished.temperature) == ("clip2", 0.4)
    assert decoder.calls[-1][:2] == ([[2]], True)
    scheduler.close()


def test_without_deferring_the_fallback_runs_in_the_batch_and_nothing_is_deferred():
    decoder = FakeDecoder(hard=[2])
    features, frames = _batch([1, 2, 3])
    outcomes, deferred = Scheduler(decoder).transcribe_windows_deferring_fallback(
        features, frames, [DecodeOptions(language="en")] * 3, defer_fallback=False)
    assert deferred == [] and outcomes[1].temperature == 0.4
    assert Scheduler(FakeDecoder(hard=[2])).transcribe_windows(
        features, frames, [DecodeOptions(language="en")] * 3)[1].temperature == 0.4


def test_a_deferred_window_keeps_the_language_detected_on_its_speech():
    decoder = FakeDecoder(hard=[2], languages={2: ("de", 0.8)})
    scheduler = Scheduler(decoder)
    features, frames = _batch([1, 2, 3])
    _, deferred = scheduler.transcribe_windows_deferring_fallback(
        features, frames, [DecodeOptions()] * 3)
    assert [d.index for d in deferred] == [1]
    assert deferred[0].window.options.language == "de"
    finished = scheduler.finish(deferred[0])
    assert (finished.language, finished.language_probability) == ("de", 0.8)


def test_a_window_at_the_last_temperature_is_never_deferred():
    decoder = FakeDecoder(hard=[2])
    features, frames = _batch([2])
    _, deferred = Scheduler(decoder).transcribe_windows_deferring_fallback(
        features, frames, [DecodeOptions(language="en", temperature=1.0)])
    assert deferred == []
