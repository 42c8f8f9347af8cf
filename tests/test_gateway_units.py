"""The gateway's pure logic: forms, response formats, the error envelope and the mapping of
the client's errors, API keys and per-key limits, metrics text, the streaming front's
sections and deltas; and the ASGI app's HTTP layer (auth, 413, 429, envelope, form errors)
driven in-process through httpx's ASGI transport with a stand-in backend. The real stack
(Triton, the openai SDK over HTTP) is tests/test_gateway_server.py.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from whisper_gateway import formats, forms
from whisper_gateway.access import OPEN, Access
from whisper_gateway.app import create_app
from whisper_gateway.errors import ApiError, from_client_error
from whisper_gateway.metrics import GatewayMetrics
from whisper_gateway.settings import Settings, read_keys
from whisper_service import sections
from whisper_service.options import DecodeOptions
from whisper_service.pipeline import Job
from whisper_service.windows import Window
from whisper_triton import (InvalidArgumentError, InvalidAudioError, OverloadedError,
                            RequestTimeoutError, ServerError, ServerUnavailableError)
from whisper_triton.languages import LANGUAGES
from whisper_triton.result import Segment, Transcription, Word

pytestmark = pytest.mark.unit
MODELS = ("whisper", "whisper-1")


def result(task="transcribe", words=True) -> Transcription:
    segments = [
        Segment(0, 0.0, 2.5, " Hello there.", -0.2, 0.01, 1.2, 0.0, "en",
                [Word(0.0, 1.0, " Hello", 0.9), Word(1.0, 2.5, " there.", 0.8)] if words else None),
        Segment(1, 3.0, 3661.25, " Bye --> now.", -0.3, 0.02, 1.1, 0.2, "en",
                [Word(3.0, 3661.25, " Bye", 0.7)] if words else None),
    ]
    return Transcription("Hello there. Bye --> now.", "en", 0.99, 3662.0, task, segments)


def form(**fields):
    return {name: value if isinstance(value, list) else [value] for name, value in fields.items()}


# --- forms ----------------------------------------------------------------------------------

def test_the_sdk_form_becomes_client_options():
    parsed = forms.parse(form(model="whisper-1", language="EN", prompt="ComfyUI",
                              response_format="verbose_json", temperature="0.2",
                              **{"timestamp_granularities[]": ["word", "segment"]},
                              beam_size="3", hotwords="Triton", vad_filter="true",
                              unknown_field="ignored"), "transcribe", MODELS)
    assert parsed.response_format == "verbose_json" and parsed.granularities == ("word", "segment")
    assert parsed.options == {"task": "transcribe", "word_timestamps": True, "language": "en",
                              "initial_prompt": "ComfyUI", "hotwords": "Triton",
                              "temperature": 0.2, "beam_size": 3, "vad_filter": True}
    assert not parsed.stream
    plain = forms.parse(form(model="whisper"), "translate", MODELS)
    assert plain.response_format == "json" and plain.options == {"task": "translate",
                                                                 "word_timestamps": False}


def test_form_refusals_name_the_field():
    cases = [
        (form(), "model", 400, None),
        (form(model="gpt-4o-transcribe"), "model", 404, "model_not_found"),
        (form(model="whisper", response_format="xml"), "response_format", 400, "invalid_value"),
        (form(model="whisper", **{"timestamp_granularities[]": "char"}),
         "timestamp_granularities", 400, "invalid_value"),
        (form(model="whisper", **{"timestamp_granularities[]": "word"}),
         "timestamp_granularities", 400, "invalid_value"),
        (form(model="whisper", temperature="hot"), "temperature", 400, "invalid_value"),
        (form(model="whisper", temperature="7"), "temperature", 400, "invalid_value"),
        (form(model="whisper", language="xx"), "language", 400, "invalid_value"),
        (form(model="whisper", beam_size="0"), "beam_size", 400, "invalid_value"),
        (form(model="whisper", stream="maybe"), "stream", 400, "invalid_value"),
        (form(model="whisper", stream="true", response_format="srt"), "stream", 400, "invalid_value"),
    ]
    for fields, param, status, code in cases:
        with pytest.raises(ApiError) as raised:
            forms.parse(fields, "transcribe", MODELS)
        error = raised.value
        assert (error.param, error.status, error.code) == (param, status, code), fields
        assert error.message and error.type == "invalid_request_error"
    with pytest.raises(ApiError) as raised:
        forms.parse(form(model="whisper", stream="true"), "translate", MODELS)
    assert raised.value.param == "stream"


def test_translation_ignores_a_language_field():
    parsed = forms.parse(form(model="whisper", language="de"), "translate", MODELS)
    assert "language" not in parsed.options


# --- formats --------------------------------------------------------------------------------

def test_each_response_format_has_openais_shape_and_content_type():
    body, kind = formats.render(result(), "json")
    assert json.loads(body) == {"text": "Hello there. Bye --> now."} and kind == "application/json"
    body, kind = formats.render(result(), "text")
    assert body == "Hello there. Bye --> now.\n" and kind.startswith("text/plain")
    body, _ = formats.render(result(), "srt")
    assert body.startswith("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n"
                           "00:00:03,000 --> 01:01:01,250\nBye -> now.\n")
    body, _ = formats.render(result(), "vtt")
    assert body.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")
    body, kind = formats.render(result(), "verbose_json", ("segment", "word"))
    data = json.loads(body)
    assert kind == "application/json"
    assert (data["task"], data["language"], data["duration"]) == ("transcribe", "english", 3662.0)
    assert set(data["segments"][0]) == {"id", "seek", "start", "end", "text", "tokens",
                                        "temperature", "avg_logprob", "compression_ratio",
                                        "no_speech_prob"}
    assert data["segments"][1]["seek"] == 300
    assert data["words"][0] == {"word": "Hello", "start": 0.0, "end": 1.0}


def test_verbose_json_carries_what_the_granularities_ask_for():
    assert "words" not in formats.verbose(result())
    words_only = formats.verbose(result(), ("word",))
    assert "words" in words_only and "segments" not in words_only
    assert formats.verbose(result("translate"))["language"] == "english"


def test_every_language_has_an_english_name():
    assert set(formats.LANGUAGE_NAMES) == set(LANGUAGES)
    assert formats.language_name("zh") == "chinese" and formats.language_name(None) == ""


def test_stream_events_are_server_sent_json():
    assert formats.sse(formats.delta_event("Hi")) == (
        b'data: {"type": "transcript.text.delta", "delta": "Hi"}\n\n')
    done = formats.done_event("Hi there", 11.0)
    assert done["type"] == "transcript.text.done" and done["usage"] == {"type": "duration",
                                                                       "seconds": 11.0}


# --- errors ---------------------------------------------------------------------------------

def test_client_errors_map_onto_openais_envelope():
    cases = [
        (InvalidAudioError("AUDIO could not be decoded"), 400, "invalid_request_error", "file"),
        (InvalidArgumentError("bad beam"), 400, "invalid_request_error", None),
        (OverloadedError("queue full"), 503, "server_error", None),
        (ServerUnavailableError("refused"), 503, "server_error", None),
        (RequestTimeoutError("deadline"), 504, "server_error", None),
        (ServerError("boom"), 500, "server_error", None),
        (RuntimeError("bug"), 500, "server_error", None),
    ]
    for error, status, kind, param in cases:
        mapped = from_client_error(error)
        assert (mapped.status, mapped.type, mapped.param) == (status, kind, param), error
        assert set(mapped.body()["error"]) == {"message", "type", "param", "code"}
    assert "could not be decoded" in from_client_error(cases[0][0]).message
    assert from_client_error(OverloadedError("x")).headers == {"Retry-After": "1"}
    # the traceback or the server's internal words never reach the caller
    assert "boom" not in from_client_error(ServerError("boom")).message


# --- settings, keys and limits -----------------------------------------------------------------

def test_settings_from_the_environment(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# gateway keys\nsk-file\n\nsk-one\n")
    settings = Settings.from_env({"GATEWAY_TRITON_URLS": "a:8001, b:8001", "GATEWAY_API_KEYS":
                                  "sk-one,sk-two", "GATEWAY_API_KEYS_FILE": str(keys),
                                  "GATEWAY_MAX_UPLOAD_MB": "1", "GATEWAY_PORT": "9000"})
    assert settings.triton_urls == ("a:8001", "b:8001")
    assert settings.api_keys == ("sk-one", "sk-two", "sk-file")
    assert settings.max_upload_bytes == 1024 * 1024 and settings.port == 9000
    assert Settings.from_env({}).api_keys == () and Settings.from_env({}).model_ids == MODELS
    assert read_keys(" , ", None) == ()


def test_keys_are_checked_and_slots_are_limited_per_key():
    access = Access(["sk-a", "sk-b"], max_concurrent=1)
    assert access.identify("Bearer sk-a") == "sk-a"
    for header, code in ((None, None), ("Basic sk-a", None), ("Bearer sk-wrong-key", "invalid_api_key")):
        with pytest.raises(ApiError) as raised:
            access.identify(header)
        assert raised.value.status == 401 and raised.value.code == code
        assert "sk-wrong-key" not in raised.value.message
    with access.slot("sk-a"):
        with pytest.raises(ApiError) as raised:
            access.acquire("sk-a")
        assert raised.value.status == 429 and raised.value.headers == {"Retry-After": "1"}
        with access.slot("sk-b"):
            pass
    assert access.in_flight == {}
    assert Access([], 1).identify(None) == OPEN


def test_metrics_are_prometheus_text():
    metrics = GatewayMetrics()
    metrics.observe("/v1/audio/transcriptions", 200, 0.3)
    metrics.observe("/v1/audio/transcriptions", 400, 0.01)
    text = metrics.render()
    assert 'gateway_requests_total{endpoint="/v1/audio/transcriptions",status="200"} 1' in text
    assert 'gateway_request_duration_seconds_bucket{endpoint="/v1/audio/transcriptions",le="0.5"} 2' in text
    assert 'gateway_request_duration_seconds_count{endpoint="/v1/audio/transcriptions"} 2' in text
    assert "# TYPE gateway_request_duration_seconds histogram" in text


# --- the streaming front's sections ------------------------------------------------------------

def test_sections_are_runs_of_windows_of_bounded_audio():
    durations = [30, 30, 30, 30, 10, 200, 30]
    assert sections.section_indices(durations, [0, 1, 2, 3, 4, 5, 6], 60) == [
        [0, 1], [2, 3], [4], [5], [6]]
    assert sections.section_indices(durations, [1, 3, 4], 120) == [[1, 3, 4]]
    assert sections.section_indices([], [], 120) == []


def _job(seconds_per_window, language=None):
    windows = [Window(np.zeros(int(16000 * s), dtype=np.float32), [(0, int(16000 * 30 * i), 1)])
               for i, s in enumerate(seconds_per_window)]
    count = len(windows)
    return Job(DecodeOptions(language=language), 30.0 * count, windows, list(range(count)),
               results=[None] * count)


def test_a_short_upload_is_one_section_the_job_itself():
    job = _job([30, 30])
    assert sections.split(job, 120) == [job]
    parts = sections.split(_job([30, 30, 30]), 60)
    assert [len(p.windows) for p in parts] == [2, 1] and parts[0].to_send == [0, 1]


def test_deltas_concatenate_to_the_joined_text():
    def part(*texts, language="en"):
        return Transcription("".join(texts).strip(), language, 0.9, 60.0, "transcribe",
                             [Segment(i, i, i + 1, t, language=language) for i, t in enumerate(texts)])

    cases = [
        [part(" And so", " my fellow"), part(" Americans, "), part(), part(" ask not.")],
        [part("   "), part(" first"), part("second ")],
        [part("甚至出现", language="zh"), part("交易几乎停滞的情况", language="zh")],
        [part()],
    ]
    for parts in cases:
        deltas = sections.Deltas()
        sent = [deltas.add(p) for p in parts]
        joined = sections.join(parts, _job([30] * len(parts)))
        assert "".join(d for d in sent if d) == joined.text
        assert None not in sent[:1] or not parts[0].text
        assert [s.id for s in joined.segments] == list(range(len(joined.segments)))
    joined = sections.join(cases[0], _job([30] * 4))
    assert joined.language == "en" and joined.duration == 120.0


# --- the app's HTTP layer, in-process --------------------------------------------------------

class Backend:
    """A stand-in for backend.TritonBackend: the HTTP layer alone, no Triton in this layer."""

    def __init__(self):
        self.calls = []
        self.gate = None

    async def transcribe(self, audio, options):
        self.calls.append(options)
        if self.gate is not None:
            await self.gate.wait()
        if audio == b"bad":
            raise InvalidAudioError("AUDIO could not be decoded: no audio stream")
        return result(options["task"], words=options["word_timestamps"])

    async def stream(self, audio, options):
        yield "delta", "Hello there."
        yield "delta", " Bye --> now."
        yield "done", result()

    async def ready(self):
        return True

    async def close(self):
        pass


def call(app, *requests):
    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return [await client.request(*args, **kwargs) for args, kwargs in requests]
    return asyncio.run(run())


def req(method, url, **kwargs):
    return (method, url), kwargs


AUDIO = {"file": ("a.flac", b"fLaC audio", "audio/flac")}
KEY = {"Authorization": "Bearer sk-test"}


def test_the_app_answers_formats_auth_and_errors_in_the_envelope():
    backend = Backend()
    app = create_app(Settings(api_keys=("sk-test",), max_upload_bytes=1000), backend)
    url = "/v1/audio/transcriptions"
    responses = call(
        app,
        req("POST", url, files=AUDIO, data={"model": "whisper-1"}, headers=KEY),
        req("POST", url, files=AUDIO, data={"model": "whisper-1", "response_format": "srt"},
            headers=KEY),
        req("POST", url, files=AUDIO, data={"model": "whisper-1"}),
        req("POST", url, files=AUDIO, data={"model": "whisper-1"},
            headers={"Authorization": "Bearer nope-nope-nope"}),
        req("POST", url, files=AUDIO, data={"model": "tts-1"}, headers=KEY),
        req("POST", url, data={"model": "whisper-1"}, headers=KEY),
        req("POST", url, files={"file": ("a.bin", b"bad", "audio/flac")},
            data={"model": "whisper-1"}, headers=KEY),
        req("POST", url, files={"file": ("big.wav", b"x" * 2000, "audio/wav")},
            data={"model": "whisper-1"}, headers=KEY),
        req("GET", "/v1/models", headers=KEY),
        req("GET", "/v1/models/whisper-1", headers=KEY),
        req("GET", "/v1/models/dall-e", headers=KEY),
        req("GET", "/v1/nothing", headers=KEY),
        req("GET", "/health"),
        req("GET", "/metrics"),
    )
    ok, srt, missing, wrong, model, no_file, bad, big, models, one, unknown, nothing, health, \
        metrics = responses
    assert ok.status_code == 200 and ok.json() == {"text": "Hello there. Bye --> now."}
    assert srt.headers["content-type"].startswith("text/plain") and srt.text.startswith("1\n")
    for response, status, param in ((missing, 401, None), (wrong, 401, None), (model, 404, "model"),
                                    (no_file, 400, "file"), (bad, 400, "file"),
                                    (big, 413, "file"), (unknown, 404, "model"),
                                    (nothing, 404, None)):
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == param
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert "could not be decoded" in bad.json()["error"]["message"]
    assert [m["id"] for m in models.json()["data"]] == list(MODELS)
    assert one.json()["id"] == "whisper-1" and one.json()["object"] == "model"
    assert health.json() == {"status": "ok"}
    assert 'gateway_requests_total{endpoint="/v1/audio/transcriptions",status="401"} 2' in metrics.text
    assert len(backend.calls) == 3  # ok, srt, bad: refused requests never reach Triton


def test_a_key_with_its_requests_in_flight_gets_429_with_retry_after():
    backend = Backend()
    app = create_app(Settings(api_keys=("sk-test",), max_concurrent_per_key=1), backend)

    async def run():
        backend.gate = asyncio.Event()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            post = lambda: client.post("/v1/audio/transcriptions", files=AUDIO,  # noqa: E731
                                       data={"model": "whisper"}, headers=KEY)
            first = asyncio.ensure_future(post())
            while not backend.calls:
                await asyncio.sleep(0)
            second = await post()
            backend.gate.set()
            return await first, second, await post()

    first, second, third = asyncio.run(run())
    assert first.status_code == 200 and third.status_code == 200
    assert second.status_code == 429 and second.headers["retry-after"] == "1"
    assert second.json()["error"]["code"] == "rate_limit_exceeded"


def test_the_app_streams_openais_events():
    app = create_app(Settings(), Backend())
    (response,) = call(app, req("POST", "/v1/audio/transcriptions", files=AUDIO,
                                data={"model": "whisper", "stream": "true"}))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in response.text.split("\n\n") if line]
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 2 + ["transcript.text.done"]
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]


def test_stream_errors_get_back_the_status_tritonclient_leaves_out():
    from whisper_gateway.backend import _WithStatus
    from whisper_triton.errors import map_error

    class StreamError(Exception):
        def __init__(self, message):
            super().__init__(message)
            self._message = message

        def message(self):
            return self._message

        def status(self):
            return None

    cases = {
        "AUDIO could not be decoded: Invalid data found": InvalidAudioError,
        "BEAM_SIZE 20 is out of range; use 1 to 10.": InvalidArgumentError,
        "the engine is overloaded: Exceeds maximum queue size": OverloadedError,
        "model 'whisper_engine' is not loaded (unloaded through the repository API?)":
            ServerUnavailableError,
        "internal error while transcribing; see the server log": ServerError,
        "Failed to process the request(s) for model instance 'whisper_stream_0_1', message: "
        "Stub process 'whisper_stream_0_1' is not healthy.": ServerUnavailableError,
    }
    for message, kind in cases.items():
        assert type(map_error(_WithStatus(StreamError(message)), "x:8001")) is kind, message


def test_a_body_without_length_is_cut_at_the_limit_and_a_bad_form_is_400():
    backend = Backend()
    app = create_app(Settings(max_upload_bytes=1000), backend)
    boundary = "gatewayboundary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n").encode()

    async def chunked():  # no Content-Length: counted as it arrives
        yield part
        for _ in range(10):
            yield b"x" * 500
        yield f"\r\n--{boundary}--\r\n".encode()

    big, broken = call(app,
                       req("POST", "/v1/audio/transcriptions", content=chunked(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
                       req("POST", "/v1/audio/transcriptions", content=b"--x\r\nnonsense",
                           headers={"Content-Type": "multipart/form-data; boundary=x"}))
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    assert not backend.calls


def test_grpc_errors_of_a_stream_map_like_tritonclients():
    from whisper_gateway.backend import _as_triton_error
    from whisper_triton.errors import map_error

    class RpcError(Exception):  # what grpc.aio raises through tritonclient's stream
        def code(self):
            return "StatusCode.UNAVAILABLE"

        def details(self):
            return "failed to connect to all addresses; Connection refused"

    assert type(map_error(_as_triton_error(RpcError()), "x:8001")) is ServerUnavailableError
    plain = ValueError("not grpc")
    assert _as_triton_error(plain) is plain
