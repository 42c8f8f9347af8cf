"""The client and the CLI against a real Triton server (fixture `triton_server`), both
protocols, sync and async."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

import whisper_triton
from whisper_triton import (
    AsyncWhisperClient,
    InvalidArgumentError,
    InvalidAudioError,
    ServerUnavailableError,
    Transcription,
    WhisperClient,
    writers,
)
from test_client_unit import parse_srt, parse_vtt

pytestmark = [pytest.mark.server, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
JFK = ROOT.parent / "shared" / "audio" / "jfk.flac"
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.")
CLIENT_DIR = Path(whisper_triton.__file__).resolve().parents[1]
PROTOCOLS = ["grpc", "http"]


def words(text: str) -> list:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def assert_jfk(result: Transcription) -> None:
    assert isinstance(result, Transcription)
    assert wer(JFK_TEXT, result.text) < 0.15, result.text
    text = " ".join(words(result.text))
    assert "fellow americans" in text and "country" in text
    assert result.language == "en"
    assert 10.0 < result.duration < 12.0
    assert result.segments and all(s.start <= s.end for s in result.segments)


def url_of(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def unused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Run the checkout's client whatever the environment installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CLIENT_DIR), env.get("PYTHONPATH")]))
    env.pop("WHISPER_TRITON_URL", None)
    return subprocess.run([sys.executable, "-m", "whisper_triton.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def jfk_result(triton_server) -> Transcription:
    with WhisperClient(triton_server.grpc_url, "grpc") as client:
        return client.transcribe(JFK, language="en", word_timestamps=True)


# --- transcription -----------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_transcribes_a_file(triton_server, protocol):
    with WhisperClient(url_of(triton_server, protocol), protocol) as client:
        assert client.is_ready()
        assert_jfk(client.transcribe(JFK))  # language detected


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_transcribes_bytes_with_words(triton_server, protocol):
    async def go():
        async with AsyncWhisperClient(url_of(triton_server, protocol), protocol) as client:
            assert await client.is_ready()
            return await client.transcribe(JFK.read_bytes(), language="en",
                                           word_timestamps=True)

    result = asyncio.run(go())
    assert_jfk(result)
    starts = [w.start for w in result.words]
    assert len(starts) >= 20 and starts == sorted(starts)


@pytest.mark.parametrize("protocol,dtype", [("grpc", "float32"), ("http", "int16")])
def test_numpy_samples(triton_server, protocol, dtype):
    samples, rate = soundfile.read(JFK, dtype=dtype)
    with WhisperClient(url_of(triton_server, protocol), protocol) as client:
        with open(JFK, "rb") as handle:  # a file object goes the same way
            assert_jfk(client.transcribe(handle, language="en"))
        assert_jfk(client.transcribe(samples, sample_rate=rate, language="en"))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_transcribe_many_sync_and_async(triton_server, protocol):
    url = url_of(triton_server, protocol)
    items = [JFK, b"not audio", JFK.read_bytes()]
    with WhisperClient(url, protocol) as client:
        out = client.transcribe_many(items, concurrency=3, language="en")
    assert len(out) == 3 and isinstance(out[1], InvalidAudioError)
    assert_jfk(out[0])
    assert_jfk(out[2])

    async def go():
        async with AsyncWhisperClient(url, protocol) as client:
            return await client.transcribe_many(items, concurrency=2, language="en")

    out = asyncio.run(go())
    assert isinstance(out[1], InvalidAudioError)
    assert_jfk(out[0])
    assert_jfk(out[2])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_errors_are_mapped(triton_server, protocol):
    url = url_of(triton_server, protocol)
    with WhisperClient(url, protocol) as client:
        with pytest.raises(InvalidAudioError, match="AUDIO") as info:
            client.transcribe(b"not audio")
        assert info.value.__cause__ is not None
        # The client only checks beam_size >= 1; the server's limit is configurable.
        with pytest.raises(InvalidArgumentError, match="BEAM_SIZE"):
            client.transcribe(JFK, beam_size=500)

    async def go():
        async with AsyncWhisperClient(url, protocol) as client:
            await client.transcribe(b"not audio")

    with pytest.raises(InvalidAudioError):
        asyncio.run(go())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metadata(triton_server, protocol):
    with WhisperClient(url_of(triton_server, protocol), protocol) as client:
        server = client.server_metadata()
        model = client.model_metadata()
    assert server["name"] == "triton" and server["version"]
    assert model["name"] == "whisper"
    audio = {t["name"]: t for t in model["inputs"]}["AUDIO"]
    assert audio["datatype"] == "BYTES" and audio["shape"] == [-1, 1]
    assert {t["name"] for t in model["outputs"]} == {"TEXT", "RESULT"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fails_over_to_a_live_server(triton_server, protocol):
    urls = [unused_url(), url_of(triton_server, protocol)]
    with WhisperClient(urls, protocol, retries=0) as client:
        for _ in range(2):  # round-robin starts once on each address
            assert_jfk(client.transcribe(JFK, language="en"))


# --- writers and CLI on real results -----------------------------------------------------

def test_every_writer_on_a_real_result(jfk_result, tmp_path):
    srt = parse_srt(writers.to_srt(jfk_result))
    vtt = parse_vtt(writers.to_vtt(jfk_result))
    assert len(srt) == len(vtt) == len([s for s in jfk_result.segments if s.text.strip()])
    assert [c[1:] for c in srt] == vtt
    assert wer(JFK_TEXT, " ".join(c[3] for c in srt)) < 0.15
    data = json.loads(writers.to_json(jfk_result))
    assert data["language"] == "en" and data["words"] and data["segments"][0]["id"] == 0
    tsv = writers.to_tsv(jfk_result).splitlines()
    assert tsv[0] == "start\tend\ttext" and int(tsv[-1].split("\t")[1]) <= 11100
    assert wer(JFK_TEXT, writers.to_txt(jfk_result)) < 0.15
    for fmt in writers.FORMATS:
        writers.write_result(jfk_result, fmt, tmp_path / f"jfk.{fmt}")
        assert (tmp_path / f"jfk.{fmt}").stat().st_size > 0


def test_cli_writes_srt_vtt_json(triton_server, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "one.flac").write_bytes(JFK.read_bytes())
    (inputs / "two.flac").write_bytes(JFK.read_bytes())
    (inputs / "notes.txt").write_text("not audio")  # skipped by the folder walk
    for fmt, protocol in [("srt", "grpc"), ("vtt", "http"), ("json", "grpc")]:
        out = tmp_path / fmt
        done = run_cli("transcribe", str(inputs), "--url", url_of(triton_server, protocol),
                       "--protocol", protocol, "--language", "en", "--format", fmt,
                       "--output-dir", str(out), "--concurrency", "2")
        assert done.returncode == 0, done.stderr
        assert sorted(p.name for p in out.iterdir()) == [f"one.{fmt}", f"two.{fmt}"]
        text = (out / f"one.{fmt}").read_text(encoding="utf-8")
        if fmt == "srt":
            assert wer(JFK_TEXT, " ".join(c[3] for c in parse_srt(text))) < 0.15
        elif fmt == "vtt":
            assert wer(JFK_TEXT, " ".join(c[2] for c in parse_vtt(text))) < 0.15
        else:
            assert wer(JFK_TEXT, json.loads(text)["text"]) < 0.15
        assert "2 files: 2 ok, 0 failed" in done.stderr and "real time" in done.stderr


def test_cli_single_file_to_stdout_and_bad_file(triton_server, tmp_path):
    done = run_cli("transcribe", str(JFK), "--url", triton_server.grpc_url)
    assert done.returncode == 0, done.stderr
    assert wer(JFK_TEXT, done.stdout) < 0.15
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio")
    done = run_cli("transcribe", str(JFK), str(bad), str(tmp_path / "missing.wav"),
                   "--url", triton_server.http_url, "--protocol", "http",
                   "--output-dir", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 2 and "Traceback" not in done.stderr
    assert (tmp_path / "out" / "jfk.txt").exists()  # the good file still finished


def test_cli_health(triton_server):
    for protocol in PROTOCOLS:
        done = run_cli("health", "--url", url_of(triton_server, protocol),
                       "--protocol", protocol)
        assert done.returncode == 0, done.stderr
        assert "ready" in done.stdout and "whisper" in done.stdout


# --- no server ---------------------------------------------------------------------------

# A hang guard, not a speed target: without a server the default retries give up at once.
@pytest.mark.timeout(10)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_server_is_unavailable_quickly(protocol):
    url = unused_url()
    with WhisperClient(url, protocol) as client:  # default retries included
        with pytest.raises(ServerUnavailableError):
            client.transcribe(JFK)
        assert client.is_ready() is False

    async def go():
        async with AsyncWhisperClient(url, protocol) as client:
            with pytest.raises(ServerUnavailableError):
                await client.transcribe(JFK)
            assert await client.is_ready() is False

    asyncio.run(go())


def test_cli_without_server_exits_with_one_line():
    for protocol in PROTOCOLS:
        done = run_cli("transcribe", str(JFK), "--url", unused_url(), "--protocol", protocol,
                       timeout=60)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "unavailable" in lines[0] or "cannot reach" in lines[0]
