"""whisper_service.engine_requests: what model `whisper_engine` accepts from a caller, checked
without Triton or a model (the engine answers anyone who reaches the server's ports)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from whisper_ops.launcher import with_engine_secret
from whisper_service.engine_requests import (NOT_THE_FRONT, SECRET_ENV, WINDOW_FRAMES,
                                             caller_allowed, check_features, check_frames,
                                             check_options, engine_secret, max_options_length,
                                             parse_options, read_request)
from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions, Limits

pytestmark = pytest.mark.unit

N_MELS = 80
LIMITS = Limits()


def features(rows=2, n_mels=N_MELS, frames=WINDOW_FRAMES, dtype=np.float32):
    return np.zeros((rows, n_mels, frames), dtype=dtype)


def frames(*values, dtype=np.int32):
    return np.array(values, dtype=dtype).reshape(-1, 1)


def options(*values):
    return np.array([[v.encode("utf-8") if isinstance(v, str) else v] for v in values],
                    dtype=np.object_)


def refusal(call, *args, **kwargs) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as raised:
        call(*args, **kwargs)
    message = str(raised.value)
    # A sentence for a person: no traceback, exception dump or path.
    assert message[0].isalpha() and message.rstrip().endswith("."), message
    for mark in ("Traceback", 'File "', "Error:", "/"):
        assert mark not in message, message
    return raised.value


# ----------------------------------------------------------------------------- a good request
def test_a_good_request_gives_its_windows():
    given = features(2)
    good = read_request(given, frames(3000, 120),
                        options(DecodeOptions(beam_size=2).to_json(), DecodeOptions().to_json()),
                        n_mels=N_MELS, limits=LIMITS)
    assert good.features is given and len(good) == 2
    assert good.frames == [3000, 120] and all(type(n) is int for n in good.frames)
    assert good.options == [DecodeOptions(beam_size=2), DecodeOptions()]


def test_one_dimensional_frames_and_options_are_accepted():
    good = read_request(features(1), np.array([5], np.int64),
                        np.array([DecodeOptions().to_json().encode()], dtype=np.object_),
                        n_mels=N_MELS, limits=LIMITS)
    assert good.frames == [5] and good.options == [DecodeOptions()]


# ----------------------------------------------------------------------------- FEATURES
@pytest.mark.parametrize("bad, words", [
    (None, "FEATURES input is missing"),
    (features(1, dtype=np.float64), "FP32"),
    (features(1, dtype=np.float16), "FP32"),
    (np.zeros((N_MELS, WINDOW_FRAMES), np.float32), "shape [windows, 80, 3000]"),
    (np.zeros((0, N_MELS, WINDOW_FRAMES), np.float32), "at least one window"),
    (features(1, n_mels=128), "128 mel bins; the served model expects 80"),
    (features(1, frames=2999), "2999 frames per window"),
])
def test_features_of_the_wrong_kind_are_refused(bad, words):
    error = refusal(check_features, bad, N_MELS)
    assert words in str(error) and error.reason == "invalid_features"


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused(value):
    bad = features(3)
    bad[2, 7, 1234] = value
    assert "non-finite" in str(refusal(check_features, bad, N_MELS))


def test_large_finite_features_pass():
    big = np.full((1, N_MELS, WINDOW_FRAMES), np.finfo(np.float32).max, np.float32)
    assert check_features(big, N_MELS) is big


# ----------------------------------------------------------------------------- NUM_FRAMES
@pytest.mark.parametrize("bad, words", [
    (None, "NUM_FRAMES input is missing"),
    (frames(0, 10), "window 0 is 0; use 1 to 3000"),
    (frames(10, 99999), "window 1 is 99999"),
    (frames(10, -5), "window 1 is -5"),
    (frames(10, 20, dtype=np.float32), "whole numbers"),
    (frames(10), "1 rows; FEATURES has 2 windows"),
    (frames(10, 20, 30), "3 rows"),
    (np.ones((2, 2), np.int32), "shape [windows, 1]"),
    (np.ones((2, 1, 1), np.int32), "shape [windows, 1]"),
])
def test_bad_frame_counts_are_refused(bad, words):
    error = refusal(check_frames, bad, 2)
    assert words in str(error) and error.reason == "invalid_frames"


def test_frame_counts_at_the_bounds_pass():
    assert check_frames(frames(1, WINDOW_FRAMES), 2) == [1, WINDOW_FRAMES]


# ----------------------------------------------------------------------------- OPTIONS
@pytest.mark.parametrize("raw, words", [
    ("{not json", "not a JSON object"),
    ("[1,2]", "not a JSON object"),
    ("null", "not a JSON object"),
    (b"\xff\xfe{}", "not a JSON object"),
    ("", "is empty"),
    ("   ", "is empty"),
    ('{"beam_size": 10000}', "BEAM_SIZE 10000 is out of range; use 1 to 10"),
    ('{"beam_size": 0}', "BEAM_SIZE 0 is out of range"),
    ('{"beam_size": "5"}', "whole number"),
    ('{"temperature": NaN}', "TEMPERATURE"),
    ('{"language": "klingon"}', "not a Whisper language code"),
    ('{"task": "summarize"}', "TASK"),
    (json.dumps({"initial_prompt": "word " * 300}), "the limit is 1000"),
    (json.dumps({"hotwords": "x" * 1001}), "the limit is 1000"),
    (json.dumps({"ignored": "x" * 50000}), "decoding options within the limits take at most"),
])
def test_malformed_options_are_refused(raw, words):
    error = refusal(parse_options, raw, LIMITS)
    assert words in str(error), str(error)


def test_options_must_be_text():
    assert "must be text" in str(refusal(parse_options, 7, LIMITS))


def test_the_limits_are_the_fronts():
    strict = Limits(max_beam_size=3, max_prompt_chars=10)
    assert parse_options('{"beam_size": 3}', strict).beam_size == 3
    assert "use 1 to 3" in str(refusal(parse_options, '{"beam_size": 4}', strict))
    assert "the limit is 10" in str(refusal(parse_options, '{"hotwords": "elevenchars"}',
                                            strict))
    # As on the front, the limits bound what a request gives, not the defaults.
    assert parse_options("{}", Limits(max_beam_size=2)).beam_size == 5
    assert max_options_length(strict) < max_options_length(LIMITS)


def test_options_within_the_limits_pass_as_the_front_sends_them():
    sent = DecodeOptions(language="de", task="translate", beam_size=10, word_timestamps=True,
                         vad_filter=True, initial_prompt="\U0001F600" * 1000,
                         hotwords="Ünïcödé " * 125, temperature=0.2)
    raw = sent.to_json().encode("utf-8")
    assert parse_options(raw, LIMITS) == sent
    # The longest options the limits allow still fit, even escaped to ASCII.
    escaped = json.dumps(json.loads(raw), ensure_ascii=True)
    assert parse_options(escaped, LIMITS) == sent


def test_a_bad_row_is_named():
    raw = options(DecodeOptions().to_json(), '{"beam_size": 10000}')
    assert "BEAM_SIZE 10000" in str(refusal(check_options, raw, 2, LIMITS))
    raw = options(DecodeOptions().to_json(), "")
    assert "window 1 is empty" in str(refusal(check_options, raw, 2, LIMITS))


def test_options_of_another_row_count_are_refused():
    raw = options(DecodeOptions().to_json())
    assert "1 rows; FEATURES has 2 windows" in str(refusal(check_options, raw, 2, LIMITS))
    assert "OPTIONS input is missing" in str(refusal(check_options, None, 2, LIMITS))


def test_read_request_checks_every_input():
    good_options = options(DecodeOptions().to_json(), DecodeOptions().to_json())
    with pytest.raises(InvalidInputError, match="NUM_FRAMES of window 0 is 0"):
        read_request(features(2), frames(0, 5), good_options, n_mels=N_MELS, limits=LIMITS)
    with pytest.raises(InvalidInputError, match="OPTIONS has 2 rows; FEATURES has 1"):
        read_request(features(1), frames(5), good_options, n_mels=N_MELS, limits=LIMITS)
    with pytest.raises(InvalidInputError, match="mel bins"):
        read_request(features(2, n_mels=64), frames(5, 5), good_options, n_mels=N_MELS,
                     limits=LIMITS)


# ----------------------------------------------------------------------------- the secret
def secret_rows(*values):
    return np.array([[v] for v in values], dtype=np.object_)


def test_without_a_configured_secret_every_caller_is_allowed():
    assert engine_secret({}) is None and engine_secret({SECRET_ENV: ""}) is None
    assert caller_allowed(None, None)
    assert caller_allowed(secret_rows(b"anything"), None)


def test_the_configured_secret_must_be_presented_on_every_row():
    secret = engine_secret({SECRET_ENV: "s3cret"})
    assert secret == "s3cret"
    assert caller_allowed(secret_rows(b"s3cret"), secret)
    assert caller_allowed(secret_rows(b"s3cret", "s3cret"), secret)
    assert not caller_allowed(None, secret)
    assert not caller_allowed(secret_rows(), secret)
    assert not caller_allowed(secret_rows(b""), secret)
    assert not caller_allowed(secret_rows(b"wrong"), secret)
    assert not caller_allowed(secret_rows(b"s3cre"), secret)
    assert not caller_allowed(secret_rows(b"s3cret", b"wrong"), secret)
    assert not caller_allowed(np.array([[1]], dtype=np.int32), secret)


def test_the_refusal_names_the_public_model():
    assert NOT_THE_FRONT == "whisper_engine is internal: call model 'whisper' instead."


def test_the_launcher_sets_a_random_secret_unless_one_is_given():
    first = with_engine_secret({})[SECRET_ENV]
    second = with_engine_secret({SECRET_ENV: ""})[SECRET_ENV]
    assert len(first) == 32 and int(first, 16) >= 0 and first != second
    assert with_engine_secret({SECRET_ENV: "given"})[SECRET_ENV] == "given"
