"""The gateway against the real stack, called with the official openai SDK: a real Triton with
the project's model repository (whisper, whisper_stream, whisper_engine on the bundled base
model), started by whisper_ops.launcher with `--gateway-port`, exactly as scripts/serve does.

One server for the module (small front and stream instance counts, 30 s stream sections and
60 s upload sections so that a 130 s upload streams in several deltas from several upload
sections). Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import time
import urllib.request
from pathlib import Path

import httpx
import openai
import pytest

from corpus import AISHELL, HOTWORDS, JFK, STEREO, encode, joined
from whisper_service.accuracy import wer
from whisper_ops.managed_server import ManagedServer, free_port
from whisper_triton import WhisperClient

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]
KEYS = ("sk-gateway-test-one", "sk-gateway-test-two")
MAX_UPLOAD_MB = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    repository = tmp_path_factory.mktemp("gateway") / "model_repository"
    shutil.copytree(ROOT / "model_repository", repository)
    front = repository / "whisper" / "config.pbtxt"
    front.write_text(front.read_text().replace("count: 20", "count: 4"))
    stream = repository / "whisper_stream" / "config.pbtxt"
    stream.write_text(stream.read_text().replace(
        '"stream_section_seconds" value: { string_value: "120" }',
        '"stream_section_seconds" value: { string_value: "30" }').replace(
        '"upload_section_seconds" value: { string_value: "600" }',
        '"upload_section_seconds" value: { string_value: "60" }'))
    port = free_port()
    server = ManagedServer(
        env={"WHISPER_WATCHDOG_INTERVAL": "1", "GATEWAY_API_KEYS": ",".join(KEYS),
             "GATEWAY_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB), "GATEWAY_MAX_CONCURRENT_PER_KEY": "8",
             "GATEWAY_STREAM_IDLE_SECS": "15"},
        extra_args=[f"--model-repository={repository}", f"--gateway-port={port}"]).start()
    server.gateway_url = f"http://127.0.0.1:{port}"
    server.stubs_killed = False
    try:
        deadline = time.monotonic() + 60
        while not _ready(server.gateway_url):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.5)
        yield server
    finally:
        code = server.stop(timeout=20 if server.stubs_killed else 60)
        # Requests caught on a killed stub never finish in Triton 2.51, so its own shutdown
        # then ends on its exit timeout: a clean exit is checked only when nothing was killed.
        assert code == 0 or server.stubs_killed, server.log_tail()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def sdk(stack, key: str = KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=key, max_retries=0,
                         timeout=300)


def test_every_response_format_gives_the_contracts_transcript(stack):
    client = sdk(stack)
    with WhisperClient(stack.grpc_url, protocol="grpc") as triton:
        contract = triton.transcribe(JFK.read_bytes(), word_timestamps=True)
    assert wer(JFK.transcript, contract.text) <= 0.15

    def create(model="whisper-1", **kwargs):
        return client.audio.transcriptions.create(model=model, file=JFK.path.open("rb"), **kwargs)

    assert create().text == contract.text
    assert create(response_format="text").strip() == contract.text
    srt = create(response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> ") and "fellow Americans" in srt
    vtt = create(response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ") and "fellow Americans" in vtt
    verbose = create(response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert verbose.text == contract.text and verbose.language == "english"
    assert verbose.duration == pytest.approx(11.0, abs=0.1)
    assert [s.text for s in verbose.segments] == [s.text for s in contract.segments]
    assert [w.word for w in verbose.words] == [w.word.strip() for w in contract.words]
    assert all(a.start <= b.start for a, b in zip(verbose.words, verbose.words[1:]))
    segments_only = create(response_format="verbose_json", model="whisper")
    assert segments_only.segments and not getattr(segments_only, "words", None)
    # extensions and OpenAI's own fields reach Triton: a prompt, hotwords, a language
    hinted = client.audio.transcriptions.create(
        model="whisper-1", file=HOTWORDS.path.open("rb"), language="en",
        extra_body={"hotwords": "ComfyUI", "beam_size": "5", "vad_filter": "false"})
    assert "ComfyUI" in hinted.text


def test_translation_and_languages(stack):
    client = sdk(stack, KEYS[1])
    chinese = client.audio.transcriptions.create(model="whisper-1", file=AISHELL.path.open("rb"),
                                                 response_format="verbose_json")
    assert chinese.language == "chinese" and chinese.text
    english = client.audio.translations.create(model="whisper-1", file=AISHELL.path.open("rb"),
                                               response_format="verbose_json")
    # Sampled fallbacks sometimes transcribe instead of translating: those count as failed.
    assert english.language == "english" and english.text.strip()
    assert not re.search("[\u3040-\u9fff]", english.text), english.text
    assert client.audio.translations.create(model="whisper", file=JFK.path.open("rb"),
                                            response_format="text").strip()


def test_stream_sends_deltas_that_add_up_to_the_final_text(stack):
    client = sdk(stack)
    with WhisperClient(stack.grpc_url, protocol="grpc") as triton:
        contract = triton.transcribe(JFK.read_bytes())
    events = list(client.audio.transcriptions.create(model="whisper-1", file=JFK.path.open("rb"),
                                                     stream=True))
    assert events[-1].type == "transcript.text.done"
    assert events[-1].text == contract.text
    assert "".join(e.delta for e in events[:-1]) == contract.text
    assert events[-1].usage.seconds == pytest.approx(11.0, abs=0.1)

    # A long upload: several sections, each sent once final, in order; decoded in upload
    # sections of about 60 s, each streamed in sections of 30 s.
    audio, _ = joined([JFK, STEREO, HOTWORDS], min_seconds=130)
    started = time.monotonic()
    arrivals, events = [], []
    for event in client.audio.transcriptions.create(
            model="whisper-1", file=("long.flac", encode(audio, "flac")), stream=True,
            response_format="text", language="en"):
        arrivals.append(time.monotonic() - started)
        events.append(event)
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    (done,) = [e for e in events if e.type == "transcript.text.done"]
    assert events[-1] is done and len(deltas) >= 3, events
    assert "".join(d.delta for d in deltas) == done.text
    assert done.text.lower().count("fellow americans") >= 4
    assert arrivals[0] < arrivals[-1]  # the first text came before the last


def test_errors_come_in_openais_envelope(stack):
    client = sdk(stack)
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(model="whisper-1",
                                           file=("notes.mp3", os.urandom(20000)))
    error = raised.value.body
    assert error["type"] == "invalid_request_error" and error["param"] == "file"
    assert "could not be transcribed" in error["message"] and "Traceback" not in error["message"]
    with pytest.raises(openai.NotFoundError) as raised:
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=JFK.path.open("rb"))
    assert raised.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk(stack, "sk-not-a-key-of-ours").audio.transcriptions.create(
            model="whisper-1", file=JFK.path.open("rb"))
    assert raised.value.body["code"] == "invalid_api_key"
    # no key at all (the SDK refuses to send without one: plain HTTP, as curl would)
    missing = httpx.post(f"{stack.gateway_url}/v1/audio/transcriptions",
                         files={"file": ("jfk.flac", JFK.read_bytes())}, data={"model": "whisper-1"})
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as raised:
        client.audio.transcriptions.create(
            model="whisper-1", file=("huge.wav", b"\0" * (MAX_UPLOAD_MB + 1) * 1024 * 1024))
    assert raised.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(model="whisper-1", file=JFK.path.open("rb"),
                                           timestamp_granularities=["word"])
    assert raised.value.body["param"] == "timestamp_granularities"
    # a stream whose upload is refused is refused before any event, with a status of its own
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", stream=True,
                                           file=("notes.mp3", os.urandom(20000)))


def test_models_health_and_metrics(stack):
    client = sdk(stack)
    assert [m.id for m in client.models.list()] == ["whisper", "whisper-1"]
    assert client.models.retrieve("whisper-1").id == "whisper-1"
    health = httpx.get(f"{stack.gateway_url}/health")
    assert health.status_code == 200
    metrics = httpx.get(f"{stack.gateway_url}/metrics").text
    assert 'gateway_requests_total{endpoint="/v1/audio/transcriptions",status="200"}' in metrics
    assert 'gateway_requests_total{endpoint="/v1/audio/transcriptions",status="401"}' in metrics
    assert "gateway_request_duration_seconds_bucket" in metrics


def test_several_triton_addresses_fail_over(stack):
    """A gateway whose first address has no server: every request, plain or streamed, is
    answered by the other (the app in-process, over httpx's ASGI transport; Triton real)."""
    from whisper_gateway.app import create_app
    from whisper_gateway.backend import TritonBackend
    from whisper_gateway.settings import Settings

    settings = Settings(triton_urls=(f"127.0.0.1:{free_port()}", stack.grpc_url), retries=0)

    async def run():
        backend = TritonBackend(settings)
        try:
            return await send(create_app(settings, backend))
        finally:
            await backend.close()

    async def send(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway",
                                     timeout=120) as client:
            answers = []
            for stream in ("false", "false", "true", "true"):
                answers.append(await client.post(
                    "/v1/audio/transcriptions", data={"model": "whisper-1", "stream": stream},
                    files={"file": ("jfk.flac", JFK.read_bytes())}))
            return answers

    answers = asyncio.run(run())
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert answers[0].json() == answers[1].json()
    for streamed in answers[2:]:
        done = json.loads(streamed.text.strip().split("\n\n")[-1][len("data: "):])
        assert done["type"] == "transcript.text.done" and done["text"] == answers[0].json()["text"]


@pytest.mark.slow
def test_killed_stream_front_under_traffic_is_replaced(stack):
    """whisper_stream is decoupled (the README records that a decoupled *engine* crashed Triton
    2.51 when its stub was killed): kill its stubs under streaming traffic; the server stays up,
    the watchdog replaces them, and streams work again. The streams caught on the killed stubs
    never get an answer from Triton: the gateway ends them once whisper_stream's heartbeat
    stops (GATEWAY_STREAM_IDLE_SECS, 15 s here), with 503."""
    data = JFK.read_bytes()
    log = []

    async def traffic(deadline: float):
        client = openai.AsyncOpenAI(base_url=f"{stack.gateway_url}/v1", api_key=KEYS[0],
                                    max_retries=0, timeout=120)

        async def worker():
            while time.monotonic() < deadline:
                try:
                    stream = await client.audio.transcriptions.create(
                        model="whisper-1", file=("jfk.flac", data), stream=True)
                    events = [event async for event in stream]
                    done = events[-1]
                    ok = (done.type == "transcript.text.done"
                          and "".join(e.delta for e in events[:-1]) == done.text)
                    log.append((time.monotonic(), "ok" if ok else "bad", wer(JFK.transcript, done.text)))
                except openai.APIError as error:
                    log.append((time.monotonic(), "error",
                                f"{getattr(error, 'status_code', None)} {error}"))
                    await asyncio.sleep(0.2)
        await asyncio.gather(*(worker() for _ in range(3)))
        await client.close()

    async def scenario():
        task = asyncio.create_task(traffic(time.monotonic() + 75))
        await asyncio.sleep(4)
        stubs = stack.stub_pids("whisper_stream")
        assert stubs
        baseline["stubs"] = len(stack.stub_pids())
        killed_at = time.monotonic()
        stack.stubs_killed = True
        for pid in stubs:
            os.kill(pid, signal.SIGKILL)
        await task
        return killed_at

    baseline = {}
    killed_at = asyncio.run(scenario())
    assert stack.process.poll() is None and stack.server_pid() is not None, stack.log_tail()
    after = [entry for entry in log if entry[0] > killed_at]
    assert all("Traceback" not in str(entry[2]) for entry in after)
    # the streams on the killed stubs: ended by the gateway, retryable
    assert all(str(entry[2]).startswith("503") for entry in after if entry[1] == "error"), after
    tail = after[-6:]
    assert len(tail) == 6 and all(kind == "ok" and score <= 0.15 for _, kind, score in tail), tail
    assert stack.is_ready()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(stack.stub_pids()) > baseline["stubs"]:
        time.sleep(1)
    assert len(stack.stub_pids()) == baseline["stubs"], stack.stub_pids()
