"""Both Triton models driven in-process: `initialize` and `execute` of model.py with a stand-in
for triton_python_backend_utils (tests/triton_stub.py), real tiny.en weights, real recordings.

What a server test cannot easily show: several requests in one execute() call, each answered
on its own; every kind of engine error as the front maps it; cancellation; the front's row
parsing; the engine as a trust boundary (malformed requests, callers without the front's
secret, failures inside the decode). BLS calls from the front reach the engine model through
the stub's dynamic batcher.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import numpy as np
import pytest

import corpus
import triton_stub as stub
from triton_stub import TritonError, bytes_input
from whisper_service import quality
from whisper_service.accuracy import wer
from whisper_service.engine import WhisperEngine
from whisper_service.engine_requests import NOT_THE_FRONT, SECRET_ENV, SECRET_INPUT
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
TRACEBACK_MARKS = ("Traceback", 'File "', ", line ", "Error:", ".py")
# What tritonserver's environment holds when scripts/serve or the container starts it.
SECRET = "model-layer-engine-secret"
ENGINE_FAILED = "the transcription engine failed; see the server log"
WARM_UPS = []
"""Windows of each WhisperEngine.warm_up call of the module's engine fixture."""


@pytest.fixture(scope="module")
def isolated():
    """Environment and logger state that initialize() changes, given back after the module."""
    loggers = {name: logging.getLogger(name) for name in LOGGERS}
    saved = {name: (list(lg.handlers), lg.level, lg.propagate) for name, lg in loggers.items()}
    with pytest.MonkeyPatch.context() as mp:
        # The front resolves the model from the environment and the engine's config.pbtxt.
        mp.setenv("WHISPER_MODEL", MODEL)
        mp.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
        # Both models read the shared secret from the environment in initialize.
        mp.setenv(SECRET_ENV, SECRET)
        yield
    for name, (handlers, level, propagate) in saved.items():
        loggers[name].handlers[:] = handlers
        loggers[name].setLevel(level)
        loggers[name].propagate = propagate


@pytest.fixture(scope="module")
def engine(isolated):
    real_warm_up = WhisperEngine.warm_up

    def recorded_warm_up(self, windows):
        WARM_UPS.append(windows)
        return real_warm_up(self, windows)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WhisperEngine, "warm_up", recorded_warm_up)
        loaded = stub.load_model("whisper_engine", parameters=ENGINE_PARAMETERS)
    yield loaded
    stub.unserve("whisper_engine")
    loaded.finalize()


@pytest.fixture(scope="module")
def front(engine):
    loaded = stub.load_model("whisper", parameters=FRONT_PARAMETERS, serve=False)
    yield loaded
    loaded.finalize()


@pytest.fixture(scope="module")
def sectioned_front(engine):
    """The front with sections of 60 s: long uploads in a few seconds of audio."""
    loaded = stub.load_model("whisper", parameters={**FRONT_PARAMETERS,
                                                    "upload_section_seconds": "60"}, serve=False)
    yield loaded
    loaded.finalize()


@pytest.fixture(autouse=True)
def nothing_triton_would_refuse():
    stub.clear_violations()
    yield
    assert stub.violations() == []


# ----------------------------------------------------------------------------- helpers
def engine_request(features, frames, options, secret=SECRET, rows=None):
    """An engine request as the front sends it: `rows` OPTIONS and CALLER_SECRET rows (default:
    one per frame count); secret None leaves CALLER_SECRET out."""
    count = len(frames) if rows is None else rows
    raw = options if isinstance(options, (bytes, str)) else options.to_json()
    raw = raw.encode("utf-8") if isinstance(raw, str) else raw
    inputs = dict(
        FEATURES=np.asarray(features, dtype=np.float32),
        NUM_FRAMES=np.array(frames, dtype=np.int32).reshape(len(frames), 1),
        OPTIONS=np.array([[raw]] * count, dtype=np.object_))
    if secret is not None:
        inputs[SECRET_INPUT] = np.array([[secret.encode("utf-8")]] * count, dtype=np.object_)
    return stub.request(**inputs)


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


def test_engine_answers_its_batch_while_a_window_that_needs_its_fallback_finishes_later(
        engine, monkeypatch):
    n_mels = engine.model.engine.n_mels
    features, frames = first_window(corpus.JFK, n_mels)
    backwards = features.copy()  # the speech played backwards: gibberish at a low probability
    backwards[0, :, :frames[0]] = features[0, :, :frames[0]][:, ::-1]
    # tiny.en's first attempt at it lands near the bar (-0.97 encoded on its speech, under -1.0
    # encoded whole): a bar of -0.5 makes it need the fallback either way; JFK is at -0.2.
    monkeypatch.setattr(quality, "LOG_PROB_THRESHOLD", -0.5)
    good = engine_request(features, frames, DecodeOptions())
    slow = engine_request(backwards, frames, DecodeOptions())
    release, finished = threading.Event(), []
    real_finish = engine.model.engine.finish

    def held_finish(deferred):
        release.wait(120)
        finished.append(deferred.index)
        return real_finish(deferred)

    monkeypatch.setattr(engine.model.engine, "finish", held_finish)
    monkeypatch.setattr(engine.model, "defer_fallback", True)  # the default, whatever config says
    with engine.lock:
        returned = engine.model.execute([good, slow])

    # execute is back, the next batch may start: the good window is answered, the other
    # one waits for its fallback in the background.
    assert returned is None
    assert good.sender.is_closed() and not slow.sender.is_closed()
    [[raw]] = good.sender.responses[0].output("WINDOW_RESULT")
    assert wer(corpus.JFK.transcript, window_text(raw)) < 0.2
    release.set()
    deadline = time.monotonic() + 300
    while not slow.sender.is_closed() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert finished == [1]
    [response] = slow.sender.responses
    assert not response.has_error()
    assert json.loads(response.output("WINDOW_RESULT")[0][0])["segments"] is not None


def test_engine_without_deferral_returns_its_responses_from_execute(engine, monkeypatch):
    features, frames = first_window(corpus.JFK, engine.model.engine.n_mels)
    request = engine_request(features, frames, DecodeOptions())
    monkeypatch.setattr(engine.model, "defer_fallback", False)
    with engine.lock:
        [response] = engine.model.execute([request])
    assert request.sender.responses == []  # the sender is never asked for
    [[raw]] = response.output("WINDOW_RESULT")
    assert wer(corpus.JFK.transcript, window_text(raw)) < 0.2


def test_engine_warms_up_in_initialize_and_callers_cannot_trigger_it(engine):
    # initialize decoded a batch of silence before it returned (Triton reports ready after).
    assert WARM_UPS == [4]
    # What model_warmup used to send: empty OPTIONS with zero features and frame counts.
    warm = stub.request(FEATURES=np.zeros((2, 80, 3000), np.float32),
                        NUM_FRAMES=np.zeros((2, 1), np.int32),
                        OPTIONS=np.array([[b""], [b""]], dtype=np.object_),
                        CALLER_SECRET=np.array([[SECRET.encode()]] * 2, dtype=np.object_))
    empty_options = engine_request(np.zeros((2, 80, 3000), np.float32), [3000, 3000], b"")
    responses = engine.execute([warm, empty_options])
    for response in responses:
        assert error_of(response).code() == TritonError.INVALID_ARG
        assert_readable(response.error().message())
    assert "NUM_FRAMES of window 0 is 0" in responses[0].error().message()
    assert "OPTIONS of window 0 is empty" in responses[1].error().message()
    assert WARM_UPS == [4]


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


# ----------------------------------------------------------------------------- trust boundary
def _malformed_engine_requests(n_mels):
    """(case, request, words its refusal must hold): requests anyone could send the engine."""
    zeros = np.zeros((1, n_mels, 3000), np.float32)
    nan = zeros.copy()
    nan[0, 3, 100] = np.nan
    inf = zeros.copy()
    inf[0, 0, 0] = -np.inf
    options = DecodeOptions()
    return [
        ("bad JSON", engine_request(zeros, [3000], b"{not json"), "not a JSON object"),
        ("JSON list", engine_request(zeros, [3000], b"[1,2]"), "not a JSON object"),
        ("huge beam", engine_request(zeros, [3000], b'{"beam_size": 10000}'),
         "BEAM_SIZE 10000 is out of range; use 1 to 10"),
        ("long prompt", engine_request(zeros, [3000], DecodeOptions(hotwords="w" * 1001)),
         "HOTWORDS has 1001 characters; the limit is 1000"),
        ("NaN features", engine_request(nan, [3000], options), "non-finite"),
        ("infinite features", engine_request(inf, [3000], options), "non-finite"),
        ("no frames", engine_request(zeros, [0], options), "NUM_FRAMES of window 0 is 0"),
        ("too many frames", engine_request(zeros, [99999], options), "is 99999; use 1 to 3000"),
        ("wrong mel count", engine_request(np.zeros((1, n_mels + 48, 3000), np.float32), [3000],
                                           options), f"the served model expects {n_mels}"),
        ("mismatched rows", engine_request(np.zeros((2, n_mels, 3000), np.float32),
                                           [3000, 3000], options, rows=1),
         "OPTIONS has 1 rows; FEATURES has 2 windows"),
        ("empty OPTIONS", engine_request(zeros, [3000], b""), "OPTIONS of window 0 is empty"),
        ("no secret", engine_request(zeros, [3000], options, secret=None), NOT_THE_FRONT),
        ("wrong secret", engine_request(zeros, [3000], options, secret="guess"), NOT_THE_FRONT),
        ("secret of another length", engine_request(zeros, [3000], options, secret=SECRET[:-1]),
         NOT_THE_FRONT),
    ]


def test_engine_answers_good_requests_among_malformed_ones(engine):
    n_mels = engine.model.engine.n_mels
    bad_cases = _malformed_engine_requests(n_mels)
    jfk = engine_request(*first_window(corpus.JFK, n_mels), DecodeOptions())
    hot = engine_request(*first_window(corpus.HOTWORDS, n_mels),
                         DecodeOptions(language="en", beam_size=1))
    requests = [jfk] + [request for _, request, _ in bad_cases] + [hot]
    observed = len(stub.metric_observations("whisper_engine_batch_windows",
                                            model="whisper_engine"))

    # Without Triton's own checks (a row-count mismatch would not reach the model): what the
    # engine itself says to each.
    responses = engine.execute(requests, validate=False)

    assert engine.executions[-1] == len(requests)
    assert len(responses) == len(requests)
    for (case, _, words), response in zip(bad_cases, responses[1:-1]):
        error = error_of(response)
        assert error.code() == TritonError.INVALID_ARG, (case, error)
        assert words in error.message(), (case, error.message())
        assert_readable(error.message())
        assert error.message().rstrip().endswith("."), (case, error.message())
        assert SECRET not in error.message()
    [[jfk_raw]] = responses[0].output("WINDOW_RESULT")
    assert wer(corpus.JFK.transcript, window_text(jfk_raw)) < 0.2, window_text(jfk_raw)
    [[hot_raw]] = responses[-1].output("WINDOW_RESULT")
    assert wer(corpus.HOTWORDS.transcript, window_text(hot_raw)) < 0.5, window_text(hot_raw)
    # Only the two good windows reached the model.
    observations = stub.metric_observations("whisper_engine_batch_windows",
                                            model="whisper_engine")
    assert observations[observed:] == [2]


def test_engine_refuses_callers_without_the_secret_even_with_triton_checks(engine):
    n_mels = engine.model.engine.n_mels
    good = first_window(corpus.HOTWORDS, n_mels)
    responses = engine.execute([engine_request(*good, DecodeOptions(), secret=None),
                                engine_request(*good, DecodeOptions(), secret="")])
    for response in responses:
        assert error_of(response).code() == TritonError.INVALID_ARG
        assert response.error().message() == NOT_THE_FRONT


def _raising_decode(features, frames, options, workers=None):
    raise RuntimeError(RAW_FAILURE)


def _failing_windows(features, frames, options, workers=None):
    return [RuntimeError(RAW_FAILURE) for _ in frames]


@pytest.mark.parametrize("failure", [_raising_decode, _failing_windows],
                         ids=["decode raises", "windows fail"])
def test_engine_failure_inside_the_decode_is_internal_with_a_short_message(
        engine, monkeypatch, failure):
    n_mels = engine.model.engine.n_mels
    good = first_window(corpus.HOTWORDS, n_mels)
    monkeypatch.setattr(engine.model.engine, "transcribe_windows", failure)
    monkeypatch.setattr(engine.model.engine, "transcribe_windows_deferring_fallback",
                        lambda *args: (failure(*args), []))
    logged = len(stub.LOG)

    first, refused, second = engine.execute([
        engine_request(*good, DecodeOptions()),
        engine_request(*good, b"[1,2]"),
        engine_request(*good, DecodeOptions(language="en")),
    ])

    for response in (first, second):
        error = error_of(response)
        assert error.code() == TritonError.INTERNAL
        assert error.message() == ENGINE_FAILED
        assert_readable(error.message())
    assert error_of(refused).code() == TritonError.INVALID_ARG
    # The traceback is in the server log, never in a response.
    errors = [message for level, message in stub.LOG[logged:] if level == "error"]
    assert any("Traceback" in m and "CUDA failed" in m for m in errors), stub.LOG[logged:]


def test_engine_without_a_secret_warns_once_and_accepts_any_caller(isolated, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    logged = len(stub.LOG)
    loaded = stub.load_model("whisper_engine", serve=False,
                             parameters={**ENGINE_PARAMETERS, "cpu_workers": "1"})
    try:
        warnings = [message for level, message in stub.LOG[logged:]
                    if level == "warn" and SECRET_ENV in message]
        assert len(warnings) == 1, stub.LOG[logged:]
        good = first_window(corpus.HOTWORDS, loaded.model.engine.n_mels)
        options = DecodeOptions(language="en", beam_size=1)
        without, other = loaded.execute([engine_request(*good, options, secret=None),
                                         engine_request(*good, options, secret="anything")])
        for response in (without, other):
            assert window_text(response.output("WINDOW_RESULT")[0, 0])
        # Everything else is still checked.
        [bad] = loaded.execute([engine_request(*good, b'{"beam_size": 10000}', secret=None)])
        assert error_of(bad).code() == TritonError.INVALID_ARG
    finally:
        loaded.finalize()


# ----------------------------------------------------------------------------- the front
def test_front_presents_the_engine_secret_on_every_engine_call(front, engine):
    seen = []

    async def forward(request):
        seen.append(request)
        [response] = await engine.execute_async([request])
        return response

    with stub.route(ENGINE, forward):
        [response] = front.execute([audio_request(corpus.HOTWORDS.read_bytes(), LANGUAGE="en")])
    text, _ = transcript(response)
    assert wer(corpus.HOTWORDS.transcript, text) < 0.5, text
    assert seen
    for request in seen:
        rows = stub.get_input_tensor_by_name(request, "OPTIONS").as_numpy().shape[0]
        secret = stub.get_input_tensor_by_name(request, SECRET_INPUT).as_numpy()
        assert secret.shape == (rows, 1)
        assert set(secret.reshape(-1)) == {SECRET.encode("utf-8")}


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


def test_front_answers_unavailable_while_the_audio_budget_is_spent_and_serves_what_fits(
        front, monkeypatch):
    """Uploads wait for the server's decoded-audio budget and, past the wait, get UNAVAILABLE
    with a sentence; a short clip that fits in what is left is answered beside it."""
    budget = front.model.front.pipeline.budget
    monkeypatch.setattr(budget, "wait_s", 0.3)
    hog = budget.claim()
    hog.ensure((budget.units - 1) * (1 << 20))  # leaves 1 MB: 16 s of float32 samples
    try:
        long_audio, _ = corpus.joined([corpus.JFK], min_seconds=60)
        waiting, short = front.execute([
            audio_request(corpus.encode(long_audio, "flac")),
            audio_request(corpus.JFK.read_bytes())])
        assert error_of(waiting).code() == TritonError.UNAVAILABLE
        assert "busy decoding other long uploads" in error_of(waiting).message()
        assert_readable(error_of(waiting).message())
        text, _ = transcript(short)
        assert wer(corpus.JFK.transcript, text) < 0.2
    finally:
        hog.release()
    [answered] = front.execute([audio_request(corpus.encode(long_audio, "flac"))])
    assert "ask not what your country" in transcript(answered)[0].lower()
    assert budget.held_here() == 0


def test_the_front_transcribes_a_long_upload_section_by_section(sectioned_front):
    """An upload of four sections: each copy of the speech is transcribed once, at its own
    time in the upload, and the answer is one transcription."""
    from test_long_uploads import _speech_with_pauses
    audio, offsets = _speech_with_pauses(10)  # 170 s; sections of about 60 s
    request = audio_request(corpus.encode(audio, "flac"), LANGUAGE="en")
    (response,) = sectioned_front.execute([request])
    assert not response.has_error(), response.error().message()
    result = json.loads(response.output("RESULT")[0, 0])
    assert result["duration"] == pytest.approx(audio.size / corpus.SAMPLE_RATE, abs=0.05)
    segments = result["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    found = 0
    for offset in offsets:
        near = " ".join(s["text"] for s in segments if s["end"] > offset and s["start"] < offset + 11)
        found += "fellow americans" in near.lower()
    assert found == len(offsets), result["text"]
    assert result["text"].lower().count("ask not") == len(offsets)
