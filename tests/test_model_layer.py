"""Both Triton models driven in-process: `initialize` and `execute` of model.py with a stand-in
for triton_python_backend_utils (tests/triton_stub.py), real tiny.en weights, real recordings.

What a server test cannot easily show: several requests in one execute() call, each answered
on its own; every kind of engine error as the front maps it; cancellation; the front's row
parsing. BLS calls from the front reach the engine model through the stub's dynamic batcher.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

import corpus
import triton_stub as stub
from triton_stub import TritonError, bytes_input
from whisper_service.accuracy import wer
from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions, Limits
from whisper_service.pipeline import Pipeline

pytestmark = pytest.mark.model

MODEL = "tiny.en"
ENGINE_PARAMETERS = {"model": MODEL, "cpu_workers": "2", "cpu_threads": "1"}
# No shared preparation board: the in-process front is alone, and must not meet the board of
# a real server started from the same shell.
FRONT_PARAMETERS = {"gather_uploads_ms": "0"}
LOGGERS = ("whisper", "whisper_engine", "whisper_service")
TRACEBACK_MARKS = ("Traceback", 'File "', ", line ", "Error:")


@pytest.fixture(scope="module")
def isolated():
    """Environment and logger state that initialize() changes, given back after the module."""
    loggers = {name: logging.getLogger(name) for name in LOGGERS}
    saved = {name: (list(lg.handlers), lg.level, lg.propagate) for name, lg in loggers.items()}
    with pytest.MonkeyPatch.context() as mp:
        # The front resolves the model from the environment and the engine's config.pbtxt.
        mp.setenv("WHISPER_MODEL", MODEL)
        mp.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        yield
    for name, (handlers, level, propagate) in saved.items():
        loggers[name].handlers[:] = handlers
        loggers[name].setLevel(level)
        loggers[name].propagate = propagate


@pytest.fixture(scope="module")
def engine(isolated):
    loaded = stub.load_model("whisper_engine", parameters=ENGINE_PARAMETERS)
    yield loaded
    stub.unserve("whisper_engine")
    loaded.finalize()


@pytest.fixture(scope="module")
def front(engine):
    loaded = stub.load_model("whisper", parameters=FRONT_PARAMETERS, serve=False)
    yield loaded
    loaded.finalize()


@pytest.fixture(autouse=True)
def nothing_triton_would_refuse():
    stub.clear_violations()
    yield
    assert stub.violations() == []


# ----------------------------------------------------------------------------- helpers
def engine_request(features, frames, options):
    count = len(frames)
    raw = options if isinstance(options, (bytes, str)) else options.to_json()
    raw = raw.encode("utf-8") if isinstance(raw, str) else raw
    return stub.request(
        FEATURES=np.asarray(features, dtype=np.float32),
        NUM_FRAMES=np.array(frames, dtype=np.int32).reshape(count, 1),
        OPTIONS=np.array([[raw]] * count, dtype=np.object_))


def first_window(recording, n_mels=80):
    """Features of an upload's first window, computed as the front computes them."""
    pipeline = Pipeline(Limits(), n_mels)
    job = pipeline.prepare(recording.read_bytes(), DecodeOptions())
    _, features, frames = next(pipeline.chunks(job, 8))
    return features[:1], frames[:1]


def window_text(raw):
    return " ".join(s["text"].strip() for s in json.loads(raw)["segments"]).strip()


def audio_request(data, cancelled=False, **optional):
    inputs = {"AUDIO": bytes_input(data)}
    for name, value in optional.items():
        if isinstance(value, (str, bytes)):
            inputs[name] = bytes_input(value)
        elif isinstance(value, bool):
            inputs[name] = np.array([[value]], dtype=np.bool_)
        elif isinstance(value, int):
            inputs[name] = np.array([[value]], dtype=np.int32)
        else:
            inputs[name] = np.array([[value]], dtype=np.float32)
    return stub.request(cancelled=cancelled, **inputs)


def error_of(response):
    assert response.has_error(), f"expected an error, got {response!r}"
    return response.error()


def assert_readable(message):
    """A sentence for a person: no traceback or exception dump."""
    assert message and message.strip()
    for mark in TRACEBACK_MARKS:
        assert mark not in message, f"{mark!r} reached the caller: {message!r}"


def transcript(response):
    assert not response.has_error(), response
    text = response.output("TEXT")
    result = response.output("RESULT")
    assert text.shape == result.shape == (1, 1)
    return text[0, 0].decode("utf-8"), json.loads(result[0, 0])


def errors_total():
    return sum(series.value for series in stub.metric_series("whisper_errors_total").values())


def error_count(reason):
    return stub.metric_value("whisper_errors_total", model="whisper", reason=reason)


# ----------------------------------------------------------------------------- the engine
def test_engine_batch_answers_each_request_and_refuses_only_the_bad_one(engine):
    n_mels = engine.model.engine.n_mels
    jfk = first_window(corpus.JFK, n_mels)
    stereo = first_window(corpus.STEREO, n_mels)
    hot = first_window(corpus.HOTWORDS, n_mels)
    requests = [
        engine_request(*jfk, DecodeOptions()),
        engine_request(np.zeros((1, 64, 3000), np.float32), [3000], DecodeOptions()),
        engine_request(np.concatenate([stereo[0], hot[0]]), stereo[1] + hot[1],
                       DecodeOptions(language="en")),
        engine_request(*jfk, DecodeOptions(language="de")),  # tiny.en is English-only
    ]
    observed = len(stub.metric_observations("whisper_engine_batch_windows",
                                            model="whisper_engine"))

    responses = engine.execute(requests)

    assert engine.executions[-1] == len(requests)  # one execute() for all of them
    assert len(responses) == len(requests)
    jfk_out, bad, pair, german = responses
    assert error_of(bad).code() == TritonError.INVALID_ARG
    assert "64 mel bins" in bad.error().message() and "80" in bad.error().message()
    assert error_of(german).code() == TritonError.INVALID_ARG
    assert "English-only" in german.error().message()
    for refused in (bad, german):
        assert_readable(refused.error().message())

    [[jfk_raw]] = jfk_out.output("WINDOW_RESULT")
    assert wer(corpus.JFK.transcript, window_text(jfk_raw)) < 0.2, window_text(jfk_raw)
    stereo_raw, hot_raw = pair.output("WINDOW_RESULT").reshape(-1)
    assert "curtain" in window_text(stereo_raw).lower()
    assert wer(corpus.HOTWORDS.transcript, window_text(hot_raw)) < 0.5, window_text(hot_raw)

    # The batch the model saw: the three good windows and the refused German one, whose
    # options were read before the engine turned them down.
    observations = stub.metric_observations("whisper_engine_batch_windows",
                                            model="whisper_engine")
    assert observations[observed:] == [4]


def test_engine_warm_up_request_gets_empty_window_results(engine):
    warm = stub.request(FEATURES=np.zeros((2, 80, 3000), np.float32),
                        NUM_FRAMES=np.zeros((2, 1), np.int32),
                        OPTIONS=np.array([[b""], [b""]], dtype=np.object_))
    [response] = engine.execute([warm])
    results = [json.loads(raw) for raw in response.output("WINDOW_RESULT").reshape(-1)]
    assert results == [{"segments": []}] * 2


def test_engine_requests_triton_would_refuse_never_reach_the_model(engine):
    calls = len(engine.executions)
    wrong_frames = engine_request(np.zeros((1, 80, 2999), np.float32), [100], DecodeOptions())
    no_options = stub.request(FEATURES=np.zeros((1, 80, 3000), np.float32),
                              NUM_FRAMES=np.ones((1, 1), np.int32))
    responses = engine.execute([wrong_frames, no_options])
    assert [error_of(r).code() for r in responses] == [TritonError.INVALID_ARG] * 2
    assert "unexpected shape for input 'FEATURES'" in responses[0].error().message()
    assert "missing required input(s) ['OPTIONS']" in responses[1].error().message()
    assert len(engine.executions) == calls


def test_engine_malformed_options_fail_only_their_own_request(engine):
    good = engine_request(*first_window(corpus.HOTWORDS), DecodeOptions(beam_size=1))
    malformed = engine_request(np.zeros((1, 80, 3000), np.float32), [3000], b"{not json")
    good_out, bad = engine.execute([good, malformed])
    assert error_of(bad).code() == TritonError.INVALID_ARG
    assert not good_out.has_error()


# ----------------------------------------------------------------------------- the front
def test_front_answers_each_request_of_one_execute_on_its_own(front, engine):
    language_counts = stub.metric_value("whisper_requests_total", model="whisper",
                                        language="en")
    errors_before = errors_total()
    engine_calls = len(engine.executions)
    requests = [
        audio_request(corpus.JFK.read_bytes()),                      # language detected
        audio_request(b"\x00\x01 this is not audio" * 64),           # undecodable
        audio_request(corpus.STEREO.read_bytes(), LANGUAGE="en"),
        audio_request(corpus.HOTWORDS.read_bytes(), LANGUAGE="klingon"),
        audio_request(corpus.HOTWORDS.read_bytes(), LANGUAGE="en", WORD_TIMESTAMPS=True),
    ]

    responses = front.execute(requests)

    assert front.executions[-1] == len(requests)
    for request, response in zip(requests, responses):
        # Exactly one response per request, through its own sender, marked final.
        assert len(request.sender.sent) == 1
        sent, flags = request.sender.sent[0]
        assert sent is response
        assert flags == stub.TRITONSERVER_RESPONSE_COMPLETE_FINAL

    jfk, undecodable, stereo, klingon, hot = responses
    text, result = transcript(jfk)
    assert wer(corpus.JFK.transcript, text) < 0.2, text
    assert result["language"] == "en" and result["text"] == text
    assert result["duration"] == pytest.approx(11.0, abs=0.1)
    assert result["segments"] and all(s["end"] <= 11.1 for s in result["segments"])

    text, result = transcript(stereo)
    assert "curtain" in text.lower()
    assert result["language"] == "en" and result["language_probability"] == 1.0

    text, result = transcript(hot)
    assert wer(corpus.HOTWORDS.transcript, text) < 0.5, text
    words = [w for s in result["segments"] for w in s["words"]]
    assert words and all(w["start"] <= w["end"] for w in words)

    assert error_of(undecodable).code() == TritonError.INVALID_ARG
    assert "could not be decoded" in undecodable.error().message()
    assert error_of(klingon).code() == TritonError.INVALID_ARG
    assert "'klingon' is not a Whisper language code" in klingon.error().message()
    for refused in (undecodable, klingon):
        assert refused.error().message().rstrip().endswith(".")
        assert "Traceback" not in refused.error().message()

    # The three uploads' windows met in one engine execute (the stub's dynamic batcher).
    assert max(engine.executions[engine_calls:]) >= 3
    assert error_count("invalid_language") >= 1
    assert errors_total() == errors_before + 2
    assert stub.metric_value("whisper_requests_total", model="whisper",
                             language="en") == language_counts + 3
    assert stub.metric_value("whisper_requests_in_flight", model="whisper",
                             pid=str(os.getpid())) == 0


def test_front_request_missing_audio_is_refused_by_triton_not_the_model(front):
    calls = len(front.executions)
    [response] = front.execute([stub.request(LANGUAGE=bytes_input("en"))])
    assert error_of(response).code() == TritonError.INVALID_ARG
    assert "missing required input(s) ['AUDIO']" in response.error().message()
    assert len(front.executions) == calls


# ----------------------------------------------------------------------------- engine errors
ENGINE = "whisper_engine"
LOAD_ENDPOINT = f"/v2/repository/models/{ENGINE}/load"
RAW_FAILURE = ('Traceback (most recent call last):\n  File "/opt/engine/secret.py", line 12, '
               'in run\nRuntimeError: CUDA failed with error out of memory')


def _fails_with(message, code):
    def handler(request):
        return stub.InferenceResponse(error=TritonError(message, code))
    return handler


def _raises(request):
    raise stub.TritonModelException(RAW_FAILURE)


ENGINE_ERRORS = {
    # case: (engine's answer, code the caller gets, words the caller sees, metrics reason)
    "invalid argument passed through": (
        _fails_with("the served model is English-only and cannot translate; use TASK "
                    "transcribe.", TritonError.INVALID_ARG),
        TritonError.INVALID_ARG, "cannot translate; use TASK transcribe",
        "engine_invalid_argument"),
    "engine not ready": (
        _fails_with(f"model '{ENGINE}' is not ready", TritonError.UNAVAILABLE),
        TritonError.UNAVAILABLE, LOAD_ENDPOINT, "engine_not_loaded"),
    "engine unknown (unloaded)": (
        None,  # the stub's own answer for a model it does not serve
        TritonError.UNAVAILABLE, LOAD_ENDPOINT, "engine_not_loaded"),
    "engine unavailable": (
        _fails_with("Server is busy", TritonError.UNAVAILABLE),
        TritonError.UNAVAILABLE, "overloaded", "overloaded"),
    "engine queue full": (
        _fails_with("Exceeds maximum queue size", TritonError.INTERNAL),
        TritonError.UNAVAILABLE, "overloaded", "overloaded"),
    "engine failure": (
        _fails_with(RAW_FAILURE, TritonError.INTERNAL),
        TritonError.INTERNAL, "see the server log", "engine_failure"),
    "BLS call raises": (
        _raises, TritonError.INTERNAL, "see the server log", "internal"),
}


@pytest.mark.parametrize("case", list(ENGINE_ERRORS))
def test_front_maps_each_engine_error(front, case):
    handler, code, words, reason = ENGINE_ERRORS[case]
    before = error_count(reason)
    logged = len(stub.LOG)
    with stub.route(ENGINE, handler):
        [response] = front.execute([audio_request(corpus.HOTWORDS.read_bytes())])
    error = error_of(response)
    assert stub.code_name(error.code()) == stub.code_name(code), error.message()
    assert words in error.message()
    assert_readable(error.message())
    assert "CUDA" not in error.message() and "secret.py" not in error.message()
    assert error_count(reason) == before + 1
    if code == TritonError.INTERNAL:
        # The caller is told to read the log; the log has what happened.
        errors = [message for level, message in stub.LOG[logged:] if level == "error"]
        assert any("CUDA failed" in message for message in errors), stub.LOG[logged:]


# ----------------------------------------------------------------------------- cancellation
def test_cancelled_request_gets_cancelled_and_never_reaches_the_engine(front):
    calls = []

    def counting(request):
        calls.append(request)
        return stub.InferenceResponse(error=TritonError("not expected", TritonError.INTERNAL))

    before = error_count("cancelled")
    with stub.route(ENGINE, counting):
        cancelled, other = front.execute([
            audio_request(corpus.JFK.read_bytes(), cancelled=True),
            audio_request(corpus.HOTWORDS.read_bytes(), LANGUAGE="xx"),
        ])
    assert error_of(cancelled).code() == TritonError.CANCELLED
    assert_readable(cancelled.error().message())
    assert error_of(other).code() == TritonError.INVALID_ARG
    assert calls == []
    assert error_count("cancelled") == before + 1


# ----------------------------------------------------------------------------- _rows
def test_rows_give_one_dict_per_audio_row(front):
    rows = front.module._rows(stub.request(
        AUDIO=bytes_input(b"first", b"second"),
        BEAM_SIZE=np.array([[3], [4]], dtype=np.int32),
        WORD_TIMESTAMPS=np.array([[True], [False]]),
        LANGUAGE=bytes_input("en", "de")))
    assert rows == [
        {"AUDIO": b"first", "BEAM_SIZE": 3, "WORD_TIMESTAMPS": True, "LANGUAGE": b"en"},
        {"AUDIO": b"second", "BEAM_SIZE": 4, "WORD_TIMESTAMPS": False, "LANGUAGE": b"de"},
    ]
    assert type(rows[0]["BEAM_SIZE"]) is int and type(rows[0]["WORD_TIMESTAMPS"]) is bool


def test_rows_refuse_an_optional_input_with_another_row_count(front):
    mismatched = stub.request(AUDIO=bytes_input(b"first", b"second"),
                              LANGUAGE=bytes_input("en"))
    with pytest.raises(InvalidInputError) as raised:
        front.module._rows(mismatched)
    assert raised.value.reason == "invalid_shape"
    assert str(raised.value) == "LANGUAGE must have one value per AUDIO row (2), not 1."

    # Triton refuses such a request before the model sees it; the model's own answer, for a
    # caller that bypasses that check:
    [response] = front.execute([mismatched], validate=False)
    assert error_of(response).code() == TritonError.INVALID_ARG
    assert response.error().message() == str(raised.value)
    [response] = front.execute([mismatched])
    assert "batch size does not match" in error_of(response).message()


def test_rows_without_audio_are_refused(front):
    with pytest.raises(InvalidInputError, match="the AUDIO input is missing"):
        front.module._rows(stub.request(LANGUAGE=bytes_input("en")))
