"""Client logic without a server: writers, error mapping, retries, audio input, validation.

What needs a real socket or a subprocess is in tests/test_client_process.py."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile
from tritonclient.utils import InferenceServerException

from whisper_triton import (
    AsyncWhisperClient,
    InvalidArgumentError,
    InvalidAudioError,
    OverloadedError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    WhisperClient,
    WhisperError,
)
from whisper_triton import cli, writers
from whisper_triton._base import RetryPolicy, TranscribeOptions, parse_urls
from whisper_triton.audio_input import audio_to_bytes, encode_array
from whisper_triton.errors import map_error, normalize_status
from whisper_triton.result import Segment, Transcription, Word

pytestmark = pytest.mark.unit



def sample_result(words: bool = False) -> Transcription:
    def w(start, end, word):
        return Word(start=start, end=end, word=word, probability=0.9) if words else None

    segments = [
        Segment(id=0, start=0.0, end=2.5, text=" And so my fellow Americans,",
                words=[w(0.0, 0.5, " And"), w(0.5, 2.5, " so")] if words else None),
        Segment(id=1, start=2.5, end=61.2349, text=" ask not\nwhat --> your country"),
        Segment(id=2, start=3725.0004, end=3726.9996, text=" can do for you."),
        Segment(id=3, start=3727.0, end=3727.5, text="   "),
    ]
    return Transcription(text="And so my fellow Americans, ask not what your country can do "
                              "for you.", language="en", language_probability=0.99,
                         duration=3728.0, segments=segments)


# --- writers -----------------------------------------------------------------------------

SRT_CUE = re.compile(
    r"(?P<index>\d+)\n(?P<start>\d{2}:\d{2}:\d{2},\d{3}) --> (?P<end>\d{2}:\d{2}:\d{2},\d{3})\n"
    r"(?P<text>(?:[^\n]+\n)+)")
VTT_CUE = re.compile(
    r"(?P<start>\d{2}:\d{2}:\d{2}\.\d{3}) --> (?P<end>\d{2}:\d{2}:\d{2}\.\d{3})\n"
    r"(?P<text>(?:[^\n]+\n)+)")


def clock_ms(stamp: str) -> int:
    h, m, rest = stamp.split(":")
    s, ms = re.split(r"[,.]", rest)
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def parse_srt(text: str):
    blocks = text.strip("\n").split("\n\n")
    cues = []
    for block in blocks:
        match = SRT_CUE.fullmatch(block + "\n")
        assert match, f"not an SRT cue: {block!r}"
        cues.append((int(match["index"]), clock_ms(match["start"]), clock_ms(match["end"]),
                     match["text"].rstrip("\n")))
    return cues


def parse_vtt(text: str):
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        match = VTT_CUE.fullmatch(block + "\n")
        assert match, f"not a VTT cue: {block!r}"
        cues.append((clock_ms(match["start"]), clock_ms(match["end"]), match["text"].rstrip("\n")))
    return cues


def test_srt_cues_are_numbered_ordered_and_well_formed():
    cues = parse_srt(writers.to_srt(sample_result()))
    assert [c[0] for c in cues] == [1, 2, 3]  # the blank segment has no cue
    assert [(c[1], c[2]) for c in cues] == [(0, 2500), (2500, 61235), (3725000, 3727000)]
    assert all(a[2] <= b[1] for a, b in zip(cues, cues[1:]))
    assert cues[1][3] == "ask not\nwhat -> your country"  # no "-->" inside a cue
    assert "01:02:05,000 --> 01:02:07,000" in writers.to_srt(sample_result())


def test_vtt_matches_srt_times():
    srt = parse_srt(writers.to_srt(sample_result()))
    vtt = parse_vtt(writers.to_vtt(sample_result()))
    assert [(s, e, t) for _, s, e, t in srt] == vtt


def test_cues_never_run_backwards():
    result = Transcription(text="x", language="en", language_probability=1.0, duration=3.0,
                           segments=[Segment(id=1, start=2.0, end=1.5, text="b"),
                                     Segment(id=0, start=0.0, end=1.0, text="a")])
    cues = parse_srt(writers.to_srt(result))
    assert [(c[1], c[2], c[3]) for c in cues] == [(0, 1000, "a"), (2000, 2000, "b")]


def test_tsv_has_integer_milliseconds():
    lines = writers.to_tsv(sample_result()).splitlines()
    assert lines[0] == "start\tend\ttext"
    rows = [line.split("\t") for line in lines[1:]]
    assert rows[1] == ["2500", "61235", "ask not what -> your country"]
    assert all(len(r) == 3 and r[0].isdigit() and r[1].isdigit() for r in rows)


def test_txt_has_one_line_per_segment():
    assert writers.to_txt(sample_result()).splitlines() == [
        "And so my fellow Americans,", "ask not what -> your country", "can do for you."]
    empty = Transcription(text=" hi", language="en", language_probability=1.0, duration=1.0)
    assert writers.to_txt(empty) == "hi\n"


def test_json_has_verbose_json_fields():
    data = json.loads(writers.to_json(sample_result(words=True)))
    assert {"task", "language", "duration", "text", "segments", "words"} <= set(data)
    segment = data["segments"][1]
    assert set(segment) == {"id", "seek", "start", "end", "text", "tokens", "temperature",
                            "avg_logprob", "compression_ratio", "no_speech_prob"}
    assert segment["seek"] == 250 and segment["tokens"] == []
    assert data["words"][0] == {"word": " And", "start": 0.0, "end": 0.5, "probability": 0.9}
    assert "words" not in json.loads(writers.to_json(sample_result()))


def test_format_and_write(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        writers.format_result(sample_result(), "docx")
    target = tmp_path / "a" / "b.srt"
    writers.write_result(sample_result(), "srt", target)
    assert target.read_text(encoding="utf-8") == writers.to_srt(sample_result())
    stream = io.StringIO()
    writers.write_result(sample_result(), "VTT", stream)
    assert stream.getvalue().startswith("WEBVTT")


# --- error mapping -----------------------------------------------------------------------

AUDIO_MSG = ("AUDIO could not be decoded as audio (InvalidDataError: [Errno 1094995529] "
             "Invalid data found when processing input); send a complete WAV, FLAC...")
CASES = [
    # (http status, grpc status, message, class)
    ("400", "StatusCode.INVALID_ARGUMENT", AUDIO_MSG, InvalidAudioError),
    ("400", "StatusCode.INVALID_ARGUMENT", "AUDIO is empty: send the bytes of an audio file.",
     InvalidAudioError),
    ("400", "StatusCode.INVALID_ARGUMENT", "AUDIO has no audio stream: send an audio file",
     InvalidAudioError),
    ("400", "StatusCode.INVALID_ARGUMENT", "LANGUAGE 'xx' is not a Whisper language code",
     InvalidArgumentError),
    ("400", "StatusCode.INVALID_ARGUMENT", "BEAM_SIZE 50 is out of range; use 1 to 10.",
     InvalidArgumentError),
    ("503", "StatusCode.UNAVAILABLE", "Exceeds maximum queue size", OverloadedError),
    ("429", "StatusCode.RESOURCE_EXHAUSTED", "too many requests", OverloadedError),
    ("503", "StatusCode.UNAVAILABLE", "Request timeout expired", RequestTimeoutError),
    ("503", "StatusCode.UNAVAILABLE", "Server not ready", ServerUnavailableError),
    ("504", "StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", RequestTimeoutError),
    ("500", "StatusCode.INTERNAL", "internal error while transcribing", ServerError),
    ("404", "StatusCode.NOT_FOUND", "Request for unknown model: 'whisperx'", ServerError),
]


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize("http_status,grpc_status,message,expected", CASES)
def test_map_error_for_both_transports(transport, http_status, grpc_status, message, expected):
    status = http_status if transport == "http" else grpc_status
    exc = InferenceServerException(msg=message, status=status)
    error = map_error(exc, "host:1")
    assert type(error) is expected
    assert message in str(error) and error.status == status and error.url == "host:1"
    assert isinstance(error, WhisperError)
    assert error.retryable == (expected in (OverloadedError, RequestTimeoutError,
                                             ServerUnavailableError))


def test_status_spellings_agree():
    assert normalize_status("400") == normalize_status("StatusCode.INVALID_ARGUMENT")
    assert normalize_status("503") == normalize_status("StatusCode.UNAVAILABLE")
    assert normalize_status(None) is None


def test_map_network_errors():
    assert type(map_error(ConnectionRefusedError(111, "Connection refused"), "h:1")) \
        is ServerUnavailableError
    assert type(map_error(TimeoutError("timed out"), "h:1")) is RequestTimeoutError
    assert type(map_error(asyncio.TimeoutError(), "h:1")) is RequestTimeoutError
    grpc_refused = InferenceServerException(
        "failed to connect to all addresses; last error: Connection refused",
        status="StatusCode.UNAVAILABLE")
    assert type(map_error(grpc_refused, "h:1")) is ServerUnavailableError
    no_status = InferenceServerException("Connection refused")
    assert type(map_error(no_status, "h:1")) is ServerUnavailableError
    aiohttp = pytest.importorskip("aiohttp")
    assert type(map_error(aiohttp.ServerDisconnectedError(), "h:1")) is ServerUnavailableError
    assert type(map_error(RuntimeError("boom"))) is ServerError
    same = InvalidAudioError("x")
    assert map_error(same) is same


def test_exception_tree_matches_builtins():
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidAudioError, ValueError)
    assert issubclass(RequestTimeoutError, TimeoutError)
    assert issubclass(ServerUnavailableError, ConnectionError)
    for cls in (InvalidArgumentError, InvalidAudioError, ServerUnavailableError,
                OverloadedError, RequestTimeoutError, ServerError):
        assert issubclass(cls, WhisperError)


# --- retry policy and failover -----------------------------------------------------------

def test_backoff_grows_caps_and_jitters():
    policy = RetryPolicy(retries=5, backoff=0.5, max_backoff=4.0, jitter=0.5)
    rng = random.Random(1)
    for round_no, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        delays = [policy.delay(round_no, rng) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base * 0.3  # really random
    assert RetryPolicy(jitter=0.0).delay(2) == 1.0
    with pytest.raises(InvalidArgumentError):
        RetryPolicy(retries=-1)


def test_only_transient_errors_are_retried():
    assert RetryPolicy.should_retry(ServerUnavailableError("x"))
    assert RetryPolicy.should_retry(OverloadedError("x"))
    assert RetryPolicy.should_retry(RequestTimeoutError("x"))
    for error in (InvalidAudioError("x"), InvalidArgumentError("x"), ServerError("x"),
                  ValueError("x")):
        assert not RetryPolicy.should_retry(error)


def test_round_robin_plan():
    client = WhisperClient(["a:1", "b:2", "http://c:3/"], "http", retries=1)
    assert client.urls == ["a:1", "b:2", "c:3"]
    assert client._attempts() == [(0, "a:1"), (0, "b:2"), (0, "c:3"),
                                  (1, "a:1"), (1, "b:2"), (1, "c:3")]
    assert [u for _, u in client._attempts()][:1] == ["b:2"]  # next call starts further on
    assert parse_urls("x:1, y:2") == (["x:1", "y:2"], False)
    assert parse_urls("https://x:1") == (["x:1"], True)
    with pytest.raises(InvalidArgumentError):
        parse_urls(" , ")


class FakeTransport:
    """Stands in for a tritonclient client: raises the queued errors, then answers."""

    def __init__(self, errors, answer):
        self.errors = list(errors)
        self.answer = answer
        self.calls = 0

    def infer(self, model_name, inputs, outputs=None, **kwargs):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.answer

    def close(self):
        pass


class FakeResponse:
    def __init__(self, result: Transcription):
        self.raw = result.to_json().encode()

    def as_numpy(self, name):
        return np.array([[self.raw]], dtype=np.object_) if name == "RESULT" else None


def unavailable():
    return InferenceServerException("failed to connect to all addresses",
                                    status="StatusCode.UNAVAILABLE")


def install(client, transports, monkeypatch):
    monkeypatch.setattr(client, "_transport", lambda url: transports[url])
    monkeypatch.setattr(client, "_forget", lambda url: None)


def test_sync_fails_over_and_retries(monkeypatch):
    sleeps = []
    monkeypatch.setattr("whisper_triton.client.time.sleep", sleeps.append)
    answer = FakeResponse(sample_result())
    client = WhisperClient(["a:1", "b:2"], "grpc", retries=2, backoff=0.1)
    a = FakeTransport([unavailable()], answer)
    b = FakeTransport([InferenceServerException("Exceeds maximum queue size", "503")], answer)
    install(client, {"a:1": a, "b:2": b}, monkeypatch)
    result = client.transcribe(b"RIFF....")
    assert result.text.startswith("And so")
    assert (a.calls, b.calls) == (2, 1) and len(sleeps) == 1  # a, b, (sleep), a


def test_sync_never_retries_invalid_input(monkeypatch):
    monkeypatch.setattr("whisper_triton.client.time.sleep", lambda s: None)
    client = WhisperClient(["a:1", "b:2"], "http", retries=3)
    a = FakeTransport([InferenceServerException(AUDIO_MSG, "400")], None)
    b = FakeTransport([], None)
    install(client, {"a:1": a, "b:2": b}, monkeypatch)
    with pytest.raises(InvalidAudioError) as info:
        client.transcribe(b"not audio")
    assert isinstance(info.value.__cause__, InferenceServerException)
    assert (a.calls, b.calls) == (1, 0)


def test_sync_gives_up_with_last_error(monkeypatch):
    monkeypatch.setattr("whisper_triton.client.time.sleep", lambda s: None)
    client = WhisperClient("a:1", "grpc", retries=2)
    a = FakeTransport([unavailable()] * 5, None)
    install(client, {"a:1": a}, monkeypatch)
    with pytest.raises(ServerUnavailableError) as info:
        client.transcribe(b"x")
    assert a.calls == 3 and info.value.__cause__ is not None


def test_async_fails_over(monkeypatch):
    async def no_sleep(seconds):
        pass

    monkeypatch.setattr("whisper_triton.aio.asyncio.sleep", no_sleep)

    class AsyncFake(FakeTransport):
        async def infer(self, *args, **kwargs):
            return FakeTransport.infer(self, *args, **kwargs)

    async def forget(url):
        pass

    client = AsyncWhisperClient(["a:1", "b:2"], "http", retries=1)
    a = AsyncFake([unavailable()], None)
    b = AsyncFake([], FakeResponse(sample_result()))
    monkeypatch.setattr(client, "_transport", {"a:1": a, "b:2": b}.__getitem__)
    monkeypatch.setattr(client, "_forget", forget)
    result = asyncio.run(client.transcribe(b"x"))
    assert result.language == "en" and (a.calls, b.calls) == (1, 1)
    # The next call starts at b (round-robin); a 400 there is not retried on a.
    b.errors = [InferenceServerException("BEAM_SIZE 0 is out of range", "400")]
    with pytest.raises(InvalidArgumentError):
        asyncio.run(client.transcribe(b"x"))
    assert (a.calls, b.calls) == (1, 2)


def test_transcribe_many_keeps_order_and_failures(monkeypatch):
    client = WhisperClient("a:1", "grpc", retries=0)
    calls = []

    def fake_transcribe(item, **kwargs):
        calls.append(item)
        if item == b"bad":
            raise InvalidAudioError("AUDIO could not be decoded")
        return sample_result()

    monkeypatch.setattr(client, "transcribe", fake_transcribe)
    out = client.transcribe_many([b"1", b"bad", b"3", b"4"], concurrency=3)
    assert [type(x) for x in out] == [Transcription, InvalidAudioError, Transcription,
                                      Transcription]
    with pytest.raises(InvalidArgumentError):
        client.transcribe_many([b"1"], task="summarize")
    with pytest.raises(InvalidArgumentError, match="unknown option"):
        client.transcribe_many([b"1"], beamsize=3)


def test_async_transcribe_many_bounds_concurrency(monkeypatch):
    client = AsyncWhisperClient("a:1", "grpc")
    state = {"now": 0, "peak": 0}

    async def fake_transcribe(item, **kwargs):
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        for _ in range(3):  # yield to the other tasks: all that may start would start now
            await asyncio.sleep(0)
        state["now"] -= 1
        if item == b"bad":
            raise ServerError("boom")
        return sample_result()

    monkeypatch.setattr(client, "transcribe", fake_transcribe)
    out = asyncio.run(client.transcribe_many([b"1", b"bad"] * 4, concurrency=2))
    assert state["peak"] == 2
    assert [isinstance(x, ServerError) for x in out] == [False, True] * 4


# --- audio input -------------------------------------------------------------------------

def test_float_samples_round_trip_exactly():
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(16000) * 0.1).astype(np.float32)
    data = encode_array(samples, 16000)
    decoded, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert rate == 16000 and np.array_equal(decoded, samples)


def test_int16_stereo_round_trips_as_flac():
    rng = np.random.default_rng(1)
    samples = rng.integers(-32768, 32767, size=(8000, 2), dtype=np.int16)
    data = encode_array(samples, 8000)
    assert data[:4] == b"fLaC"
    decoded, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert rate == 8000 and np.array_equal(decoded, samples)


def test_other_sample_types():
    int8 = np.array([-128, 0, 127], dtype=np.int8)
    decoded, _ = soundfile.read(io.BytesIO(encode_array(int8, 16000)), dtype="int16")
    assert decoded.tolist() == [-32768, 0, 32512]
    int32 = np.array([-2**31, 0, 2**31 - 1], dtype=np.int32)
    decoded, _ = soundfile.read(io.BytesIO(encode_array(int32, 16000)), dtype="int32")
    assert decoded.tolist() == int32.tolist()
    doubles = np.linspace(-1, 1, 100)
    decoded, _ = soundfile.read(io.BytesIO(encode_array(doubles, 22050)), dtype="float32")
    assert np.array_equal(decoded, doubles.astype(np.float32))


@pytest.mark.parametrize("samples,rate,error", [
    (np.zeros(10, np.float32), None, InvalidArgumentError),
    (np.zeros(10, np.float32), 0, InvalidArgumentError),
    (np.zeros(10, np.float32), 16000.5, InvalidArgumentError),
    (np.zeros(0, np.float32), 16000, InvalidAudioError),
    (np.array([0.0, np.nan], np.float32), 16000, InvalidAudioError),
    (np.zeros((2, 16000), np.float32), 16000, InvalidAudioError),
    (np.zeros((2, 2, 2), np.float32), 16000, InvalidAudioError),
    (np.array(["a"]), 16000, InvalidAudioError),
    (np.zeros(4, np.uint16), 16000, InvalidAudioError),
])
def test_bad_samples_are_refused(samples, rate, error):
    with pytest.raises(error):
        audio_to_bytes(samples, rate)


def test_other_audio_inputs(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFFdata")
    assert audio_to_bytes(path) == audio_to_bytes(str(path)) == b"RIFFdata"
    assert audio_to_bytes(bytearray(b"ab")) == audio_to_bytes(memoryview(b"ab")) == b"ab"
    with path.open("rb") as handle:
        assert audio_to_bytes(handle) == b"RIFFdata"
    with path.open("r") as handle, pytest.raises(InvalidArgumentError, match="text mode"):
        audio_to_bytes(handle)
    with pytest.raises(InvalidAudioError, match="empty"):
        audio_to_bytes(b"")
    with pytest.raises(FileNotFoundError):
        audio_to_bytes(tmp_path / "missing.wav")
    with pytest.raises(InvalidArgumentError):
        audio_to_bytes(12345)
    with pytest.raises(InvalidArgumentError, match="only applies"):
        audio_to_bytes(b"abc", 16000)


# --- options, inputs, outputs ------------------------------------------------------------

@pytest.mark.parametrize("options", [
    {"language": "english"}, {"language": 1}, {"task": "summarize"}, {"beam_size": 0},
    {"beam_size": 2.5}, {"beam_size": True}, {"temperature": 1.5},
    {"temperature": float("nan")}, {"temperature": "0"}, {"word_timestamps": "yes"},
    {"initial_prompt": b"bytes"}, {"hotwords": 3},
])
def test_bad_options_fail_before_sending(options, monkeypatch):
    client = WhisperClient("127.0.0.1:1", "grpc")
    monkeypatch.setattr(client, "_send", lambda *a: pytest.fail("sent a bad request"))
    with pytest.raises(InvalidArgumentError) as info:
        client.transcribe(b"audio", **options)
    assert isinstance(info.value, ValueError)


def test_options_are_normalised():
    options = TranscribeOptions(language=" EN ", task="Translate")
    assert (options.language, options.task) == ("en", "translate")
    assert TranscribeOptions(language="auto").language is None
    names = [name for name, _, _ in TranscribeOptions().tensors()]
    assert names == ["TASK", "BEAM_SIZE", "WORD_TIMESTAMPS", "VAD_FILTER", "TEMPERATURE"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_inputs_follow_the_contract(protocol):
    client = WhisperClient(protocol=protocol)
    options = TranscribeOptions(language="zh", initial_prompt="以下是普通话", hotwords="x",
                                beam_size=3, word_timestamps=True, temperature=0.2)
    tensors = {t.name(): t for t in client._build_inputs(b"\x00audio", options)}
    expected = {"AUDIO": "BYTES", "LANGUAGE": "BYTES", "TASK": "BYTES", "BEAM_SIZE": "INT32",
                "WORD_TIMESTAMPS": "BOOL", "VAD_FILTER": "BOOL", "INITIAL_PROMPT": "BYTES",
                "HOTWORDS": "BYTES", "TEMPERATURE": "FP32"}
    assert {n: t.datatype() for n, t in tensors.items()} == expected
    assert all(list(t.shape()) == [1, 1] for t in tensors.values())


def test_parse_result_and_bad_answers():
    result = WhisperClient._parse_result(FakeResponse(sample_result(words=True)))
    assert result == sample_result(words=True)

    class Broken:
        def as_numpy(self, name):
            return np.array([[b"{not json"]], dtype=np.object_)

    with pytest.raises(ServerError, match="not valid"):
        WhisperClient._parse_result(Broken())


def test_metadata_shapes_become_ints():
    data = {"name": "whisper", "inputs": [{"name": "AUDIO", "shape": ["-1", "1"]}]}
    assert WhisperClient._metadata(data)["inputs"][0]["shape"] == [-1, 1]


def test_constructor_validation_and_defaults():
    assert WhisperClient().urls == ["localhost:8001"]
    assert WhisperClient(protocol="http").urls == ["localhost:8000"]
    with pytest.raises(InvalidArgumentError):
        WhisperClient(protocol="websocket")
    with pytest.raises(InvalidArgumentError):
        WhisperClient(timeout=0)
    http = WhisperClient(protocol="http", timeout=30, connect_timeout=2)
    assert http._transport_kwargs(aio=False)["connection_timeout"] == 2
    assert http._transport_kwargs(aio=False)["network_timeout"] == 30
    assert AsyncWhisperClient(protocol="http", timeout=30)._transport_kwargs(aio=True)[
        "conn_timeout"] == 30
    tls = WhisperClient("grpcs://h:1", "grpc")
    assert tls.ssl and tls._transport_kwargs(aio=False)["ssl"] is True


# --- the two clients ---------------------------------------------------------------------

def public(cls):
    return {name: member for name, member in inspect.getmembers(cls)
            if not name.startswith("_") and callable(member)}


def test_sync_and_async_have_the_same_public_api():
    sync, aio = public(WhisperClient), public(AsyncWhisperClient)
    assert set(sync) == set(aio)
    for name in sync:
        assert inspect.signature(sync[name]) == inspect.signature(aio[name]), name
        assert inspect.iscoroutinefunction(aio[name]), name
    assert hasattr(WhisperClient, "__enter__") and hasattr(AsyncWhisperClient, "__aenter__")


def test_closed_client_refuses(monkeypatch):
    client = WhisperClient("127.0.0.1:1", "grpc")
    client.close()
    with pytest.raises(WhisperError, match="closed"):
        client.transcribe(b"x")
    assert client.is_ready() is False


# --- command line (pure parts) -----------------------------------------------------------

def test_collect_and_plan(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    for name in ("in/a.wav", "in/sub/b.FLAC", "in/notes.txt", "c.mp3", "in/sub/a.wav"):
        (tmp_path / name).write_bytes(b"x")
    files, problems = cli.collect([str(tmp_path / "in"), str(tmp_path / "c.mp3"),
                                   str(tmp_path / "nope.wav")])
    assert [str(rel) for _, rel in files] == ["a.wav", "sub/a.wav", "sub/b.FLAC", "c.mp3"]
    assert len(problems) == 1 and "nope.wav" in problems[0]
    jobs = cli.plan(files, "srt", tmp_path / "out")
    assert [str(j.output.relative_to(tmp_path / "out")) for j in jobs] == [
        "a.srt", "sub/a.srt", "sub/b.srt", "c.srt"]
    assert cli.plan(files[:1], "txt", None)[0].output is None
    twins = [(Path("x/a.wav"), Path("a.wav")), (Path("y/a.wav"), Path("a.wav"))]
    assert [j.output.name for j in cli.plan(twins, "vtt", None)] == ["a.vtt", "a-2.vtt"]


def test_summary_line():
    line = cli.summary(ok=3, failed=1, audio_seconds=7200.0, wall=60.0)
    assert line == "4 files: 3 ok, 1 failed; 2.000 h of audio in 60.0 s (120.0x real time)"


def test_cli_reports_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("WHISPER_TRITON_URL", raising=False)
    assert cli.main(["transcribe", str(tmp_path / "missing.wav")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    (tmp_path / "a.wav").write_bytes(b"x")
    assert cli.main(["transcribe", str(tmp_path / "a.wav"), "--language", "klingon"]) == 2
    assert "language" in capsys.readouterr().err
    # (an unreachable server: tests/test_client_process.py)
