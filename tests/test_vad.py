"""The front's Silero VAD (whisper_service.vad): its span rules on made-up probabilities (unit),
and the same spans as faster-whisper's own VAD on real recordings, noise and edge lengths
(model: it runs the ONNX model)."""

from __future__ import annotations

import numpy as np
import pytest

import corpus
import evalset
from whisper_service import vad
from whisper_service.windows import EVIDENCE_VAD

CHUNK = vad.CHUNK


def _probabilities(*runs):
    """Per-chunk probabilities from (value, chunks) runs."""
    return np.concatenate([np.full(chunks, value, np.float32) for value, chunks in runs])


@pytest.mark.unit
def test_speech_starts_at_the_threshold_and_ends_after_enough_silence():
    probabilities = _probabilities((0.1, 10), (0.9, 20), (0.1, 100))
    length = probabilities.size * CHUNK
    spans = vad.spans_from_probabilities(probabilities, length, min_silence_duration_ms=100,
                                         speech_pad_ms=0)
    assert spans == [(10 * CHUNK, 30 * CHUNK)]


@pytest.mark.unit
def test_a_pause_shorter_than_the_minimum_silence_does_not_split_speech():
    # 2 chunks (64 ms) of silence inside speech: one span with 100 ms, two with 0 ms.
    probabilities = _probabilities((0.9, 20), (0.1, 2), (0.9, 20), (0.1, 100))
    length = probabilities.size * CHUNK
    assert vad.spans_from_probabilities(probabilities, length, min_silence_duration_ms=100,
                                        speech_pad_ms=0) == [(0, 42 * CHUNK)]
    assert len(vad.spans_from_probabilities(probabilities, length, min_silence_duration_ms=0,
                                            speech_pad_ms=0)) == 2


@pytest.mark.unit
def test_a_probability_between_the_two_thresholds_keeps_speech_going():
    # 0.4 is under the threshold (0.5) but over its release (0.35): speech does not end there.
    probabilities = _probabilities((0.9, 5), (0.4, 200), (0.1, 100))
    length = probabilities.size * CHUNK
    assert vad.spans_from_probabilities(probabilities, length, min_silence_duration_ms=100,
                                        speech_pad_ms=0) == [(0, 205 * CHUNK)]


@pytest.mark.unit
def test_padding_is_clipped_to_the_audio_and_close_spans_meet_halfway():
    probabilities = _probabilities((0.9, 10), (0.1, 70), (0.9, 10), (0.1, 10))
    length = probabilities.size * CHUNK - 100
    first, second = vad.spans_from_probabilities(probabilities, length,
                                                 min_silence_duration_ms=100, speech_pad_ms=400)
    assert first[0] == 0 and second[1] == length  # clipped at both ends
    # 70 chunks (35840 samples) apart is over twice the pad (12800): each gets all 6400.
    assert first[1] == 10 * CHUNK + 6400 and second[0] == 80 * CHUNK - 6400
    # 20 chunks (10240 samples) apart is under it: they meet halfway.
    close = _probabilities((0.9, 10), (0.1, 20), (0.9, 10), (0.1, 10))
    a, b = vad.spans_from_probabilities(close, close.size * CHUNK, min_silence_duration_ms=100,
                                        speech_pad_ms=400)
    assert a[1] == b[0] == 10 * CHUNK + (20 * CHUNK) // 2


@pytest.mark.unit
def test_speech_that_runs_to_the_end_ends_with_the_audio_and_short_speech_can_be_dropped():
    probabilities = _probabilities((0.1, 5), (0.9, 10))
    length = probabilities.size * CHUNK - 300
    assert vad.spans_from_probabilities(probabilities, length, speech_pad_ms=0) == [
        (5 * CHUNK, length)]
    assert vad.spans_from_probabilities(probabilities, length, speech_pad_ms=0,
                                        min_speech_duration_ms=1000) == []


def _audio_cases():
    cases = [(r.name, corpus.samples(r)) for r in corpus.ALL]
    rng = np.random.default_rng(0)
    cases.append(("white noise", rng.normal(0, 0.05, 16000 * 20).astype(np.float32)))
    cases.append(("silence", np.zeros(16000 * 3, np.float32)))
    speech = [s for _, s in cases[:len(corpus.ALL)]]
    if evalset.available():
        speech += [evalset.samples(u.path) for u in evalset.utterances()[::3]]
    # Over 10000 chunks (320 s): the model runs in many batches, its state carried on.
    joined = np.concatenate(speech * (1 + int(330 * 16000 // sum(s.size for s in speech))))
    cases.append(("joined", joined))
    for rest in (0, 10, 470):  # whole chunks; a few samples over; the last 64 samples read as 0
        cases.append((f"{rest} over whole chunks", joined[:CHUNK * 700 + rest]))
    return cases


@pytest.mark.model
@pytest.mark.parametrize("options", [EVIDENCE_VAD, {}], ids=["evidence", "vad_filter"])
def test_spans_equal_faster_whispers_vad(options):
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    for name, audio in _audio_cases():
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        theirs = [(s["start"], s["end"])
                  for s in get_speech_timestamps(audio.copy(), VadOptions(**options))]
        assert vad.speech_timestamps(audio, **options) == theirs, name
