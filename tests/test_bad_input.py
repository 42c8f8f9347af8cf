"""Bad input, sent concurrently with good requests over both protocols: every bad request gets
a clear error of its own (audio under 0.1 s too; longer silence gets an empty transcript), every
good one is transcribed right, and the server stays ready."""

from __future__ import annotations

import asyncio
import io
import struct
import urllib.request

import numpy as np
import pytest
import soundfile
import tritonclient.utils

from corpus import JFK, SAMPLE_RATE, encode, samples
from raw_triton import AIO, MODULES, inputs, parse, transcribe_async
from whisper_service.accuracy import wer

pytestmark = pytest.mark.server
INVALID = ("400", "StatusCode.INVALID_ARGUMENT")


def _float_wav(values) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(values, dtype=np.float32), SAMPLE_RATE, format="WAV",
                    subtype="FLOAT")
    return buffer.getvalue()


def _noise_bytes(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _wav_header_only(declared_bytes: int) -> bytes:
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", 36 + declared_bytes) + b"WAVE" + fmt + b"data" + struct.pack("<I", declared_bytes)


def _bad_cases():
    jfk = samples(JFK)
    flac = encode(jfk, "flac")
    wav = encode(jfk, "wav")
    mp3 = encode(jfk, "mp3")
    nan = jfk.copy()
    nan[1000] = np.nan
    inf = jfk.copy()
    inf[5000] = np.inf
    good = JFK.read_bytes()
    # (id, audio, options, words expected in the message)
    return [
        ("empty", b"", {}, "empty"),
        ("text", b"hello, this is not audio at all", {}, "could not be decoded"),
        ("random-bytes", _noise_bytes(20000, 1), {}, "could not be decoded"),
        ("png-magic", b"\x89PNG\r\n\x1a\n" + _noise_bytes(2000, 2), {}, "audio stream"),
        ("path", b"/etc/passwd", {}, "could not be decoded"),
        ("file-url", b"file:///etc/passwd", {}, "could not be decoded"),
        ("http-url", b"http://127.0.0.1:1/speech.wav", {}, "could not be decoded"),
        ("truncated-flac", flac[: len(flac) // 2], {}, "truncated"),
        ("truncated-wav", wav[: len(wav) // 3], {}, "truncated"),
        ("truncated-mp3", mp3[: len(mp3) // 2], {}, "truncated"),
        ("header-only-wav", _wav_header_only(320000), {}, "truncated"),
        ("flac-first-bytes", flac[:64], {}, "AUDIO"),
        ("zero-samples-wav", encode(np.zeros(0, dtype=np.float32), "wav"), {}, "too short"),
        ("10-ms", encode(np.zeros(SAMPLE_RATE // 100, dtype=np.float32), "wav"), {}, "too short"),
        ("90-ms-of-speech", encode(jfk[SAMPLE_RATE:SAMPLE_RATE + 1440], "wav"), {}, "too short"),
        ("nan-samples", _float_wav(nan), {}, "non-finite"),
        ("inf-samples", _float_wav(inf), {}, "non-finite"),
        ("language-unknown", good, {"language": "xx"}, "LANGUAGE"),
        ("language-long", good, {"language": "english please"}, "LANGUAGE"),
        ("language-not-utf8", good, {"language": b"\xff\xfe"}, "UTF-8"),
        ("task-unknown", good, {"task": "summarize"}, "TASK"),
        ("beam-zero", good, {"beam_size": 0}, "BEAM_SIZE"),
        ("beam-negative", good, {"beam_size": -3}, "BEAM_SIZE"),
        ("beam-huge", good, {"beam_size": 1000}, "BEAM_SIZE"),
        ("temperature-nan", good, {"temperature": float("nan")}, "TEMPERATURE"),
        ("temperature-negative", good, {"temperature": -1.0}, "TEMPERATURE"),
        ("temperature-huge", good, {"temperature": 5.0}, "TEMPERATURE"),
        ("prompt-too-long", good, {"initial_prompt": "word " * 1000}, "INITIAL_PROMPT"),
        ("hotwords-too-long", good, {"hotwords": "x" * 5000}, "HOTWORDS"),
        ("hotwords-not-utf8", good, {"hotwords": b"\xc3\x28"}, "UTF-8"),
    ]


def _is_empty_result(outcome) -> bool:
    return isinstance(outcome, tuple) and outcome[0] == "" and outcome[1]["segments"] == []


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_inputs_fail_alone_among_good_requests(triton_server, protocol):
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    cases = _bad_cases()
    good = JFK.read_bytes()

    async def run_all():
        bad = [transcribe_async(protocol, url, audio, **options) for _, audio, options, _ in cases]
        fine = [transcribe_async(protocol, url, good) for _ in range(6)]
        outcomes = await asyncio.gather(*(bad + fine), return_exceptions=True)
        return outcomes[: len(bad)], outcomes[len(bad):]

    bad_outcomes, good_outcomes = asyncio.run(run_all())
    assert len(cases) >= 25
    for (name, _, _, words), outcome in zip(cases, bad_outcomes):
        assert isinstance(outcome, tritonclient.utils.InferenceServerException), (name, outcome)
        assert outcome.status() in INVALID, (name, outcome.status(), outcome.message())
        message = outcome.message()
        assert words in message, (name, message)
        assert "Traceback" not in message and len(message) < 400, (name, message)
    for text, _ in good_outcomes:
        assert wer(JFK.transcript, text) <= 0.15, text
    with urllib.request.urlopen(f"http://{triton_server.http_url}/v2/models/whisper/ready") as r:
        assert r.status == 200


@pytest.mark.parametrize("audio", [
    pytest.param(encode(np.zeros(3 * SAMPLE_RATE, dtype=np.float32), "flac"), id="digital-silence"),
    pytest.param(encode(np.zeros(SAMPLE_RATE // 5, dtype=np.float32), "wav"), id="200-ms-silence"),
])
def test_audio_that_decodes_to_nothing_gets_an_empty_transcript(triton_server, audio):
    text, result = asyncio.run(transcribe_async("grpc", triton_server.grpc_url, audio))
    assert text == "" and result["segments"] == []


def test_wrong_tensor_types_and_shapes_are_refused_by_contract(triton_server):
    module = MODULES["http"]
    client = module.InferenceServerClient(triton_server.http_url)
    audio = module.InferInput("AUDIO", [1, 1], "INT32")
    audio.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    with pytest.raises(tritonclient.utils.InferenceServerException) as info:
        client.infer("whisper", [audio])
    assert "AUDIO" in info.value.message()

    rows = inputs(module, JFK.read_bytes())
    language = module.InferInput("LANGUAGE", [2, 1], "BYTES")
    language.set_data_from_numpy(np.array([[b"en"], [b"en"]], dtype=np.object_))
    with pytest.raises(tritonclient.utils.InferenceServerException) as info:
        client.infer("whisper", rows + [language])
    assert "LANGUAGE" in info.value.message() or "batch" in info.value.message()

    too_many = module.InferInput("AUDIO", [9, 1], "BYTES")
    too_many.set_data_from_numpy(np.array([[b"x"]] * 9, dtype=np.object_))
    with pytest.raises(tritonclient.utils.InferenceServerException) as info:
        client.infer("whisper", [too_many])
    assert "batch" in info.value.message().lower()
    client.close()
