"""The `whisper` contract against a real Triton server, over HTTP and gRPC, with real speech."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.utils

from corpus import AISHELL, ENGLISH, HOTWORDS, JFK, SAMPLE_RATE, STEREO, encode, joined, resample, samples
from raw_triton import MODULES, client, inputs, transcribe, transcribe_async
from whisper_service.accuracy import cer, wer

pytestmark = pytest.mark.server
PROTOCOLS = ["http", "grpc"]
# Base (int8, CPU) against the references; stereo is two speakers downmixed, so its text is
# compared with the left channel only and is noisier.
MAX_WER = {JFK.name: 0.15, HOTWORDS.name: 0.35, STEREO.name: 0.6}


def url(server, protocol):
    return server.http_url if protocol == "http" else server.grpc_url


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("recording", ENGLISH, ids=lambda r: r.name)
def test_english_recordings_are_transcribed(triton_server, protocol, recording):
    text, result = transcribe(protocol, url(triton_server, protocol), recording.read_bytes())
    assert wer(recording.transcript, text) <= MAX_WER[recording.name], text
    assert result["language"] == "en"
    assert result["language_probability"] > 0.5
    assert result["duration"] == pytest.approx(samples(recording).size / SAMPLE_RATE, abs=0.05)
    assert result["text"] == text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mandarin_is_detected_and_transcribed(triton_server, protocol):
    text, result = transcribe(protocol, url(triton_server, protocol), AISHELL.read_bytes())
    assert result["language"] == "zh"
    assert result["language_probability"] > 0.8
    assert cer(AISHELL.transcript, text) <= 0.25, text


def test_mandarin_with_language_given(triton_server):
    text, result = transcribe("grpc", triton_server.grpc_url, AISHELL.read_bytes(), language="zh")
    assert result["language"] == "zh" and result["language_probability"] == 1.0
    assert cer(AISHELL.transcript, text) <= 0.25, text


def test_translate_gives_english(triton_server):
    text, result = transcribe("http", triton_server.http_url, AISHELL.read_bytes(), task="translate")
    assert result["task"] == "translate"
    letters = [c for c in text if c.isalpha()]
    assert letters and sum(c.isascii() for c in letters) / len(letters) > 0.9, text


@pytest.mark.parametrize("beam_size", [1, 5])
def test_beam_sizes(triton_server, beam_size):
    text, _ = transcribe("grpc", triton_server.grpc_url, JFK.read_bytes(), beam_size=beam_size)
    assert wer(JFK.transcript, text) <= 0.15, text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_word_timestamps_are_monotonic_and_inside_the_audio(triton_server, protocol):
    text, result = transcribe(protocol, url(triton_server, protocol), JFK.read_bytes(),
                              word_timestamps=True)
    words = [w for s in result["segments"] for w in s["words"]]
    assert len(words) >= 15
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    for w in words:
        assert 0.0 <= w["start"] <= w["end"] <= result["duration"] + 0.01
        assert 0.0 <= w["probability"] <= 1.0
    assert "".join(w["word"] for w in words).strip() == text.strip()
    # "Americans" is said at about 1.5-2.2 s in jfk.flac
    americans = next(w for w in words if "Americans" in w["word"])
    assert 1.0 <= americans["start"] <= 2.5


def _padded_jfk(before: float, after: float) -> bytes:
    audio = samples(JFK)
    silence = lambda s: np.zeros(int(s * SAMPLE_RATE), dtype=np.float32)  # noqa: E731
    return encode(np.concatenate([silence(before), audio, silence(after)]), "flac")


@pytest.mark.parametrize("vad", [True, False])
def test_silence_around_speech_keeps_absolute_timestamps(triton_server, vad):
    text, result = transcribe("grpc", triton_server.grpc_url, _padded_jfk(40.0, 12.0),
                              vad_filter=vad, word_timestamps=True)
    assert wer(JFK.transcript, text) <= 0.15, text
    assert result["duration"] == pytest.approx(63.0, abs=0.05)
    first = result["segments"][0]
    assert 39.0 <= first["start"] <= 41.5, result["segments"]
    assert result["segments"][-1]["end"] <= 51.5
    if vad:
        assert result["duration_after_vad"] < 20.0
    else:
        assert result["duration_after_vad"] is None


def test_silence_gives_an_empty_transcript(triton_server):
    quiet = np.random.default_rng(0).normal(0, 1e-4, 8 * SAMPLE_RATE).astype(np.float32)
    for audio in (np.zeros(5 * SAMPLE_RATE, dtype=np.float32), quiet):
        text, result = transcribe("http", triton_server.http_url, encode(audio, "wav"))
        assert text == "" and result["segments"] == []


def _non_speech(kind: str, seconds: float = 40.0) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(kind)) % 1000)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    if kind.startswith("white"):
        x = rng.standard_normal(t.size)
    elif kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(t.size))
        x = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(spectrum.size), 1)), t.size)
    elif kind == "brown":
        x = np.cumsum(rng.standard_normal(t.size))
        x -= np.convolve(x, np.ones(1601) / 1601, "same")
    elif kind == "hum":
        x = np.sin(2 * np.pi * 50 * t) + 0.4 * np.sin(2 * np.pi * 150 * t)
    elif kind == "tone":
        x = np.sin(2 * np.pi * 440 * t)
    elif kind == "beeps":
        x = np.sin(2 * np.pi * 800 * t) * ((t % 1.0) < 0.2)
    else:  # clicks
        x = ((np.arange(t.size) % 4000) < 8).astype(float)
    level = {"white-quiet": -40, "white-loud": -25}.get(kind, -20)
    return (x / np.abs(x).max() * 10 ** (level / 20)).astype(np.float32)


NON_SPEECH = ["white-quiet", "white-loud", "pink", "brown", "hum", "tone", "beeps", "clicks"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_non_speech_gets_an_empty_transcript(triton_server, protocol):
    """Noise of any colour, hum, tones and clicks: Whisper invents "thanks for watching" in
    such audio; nothing of it may reach the caller."""
    async def run():
        return await asyncio.gather(*(transcribe_async(protocol, url(triton_server, protocol),
                                                       encode(_non_speech(kind), "flac"))
                                      for kind in NON_SPEECH))
    for kind, (text, result) in zip(NON_SPEECH, asyncio.run(run())):
        assert text == "" and result["segments"] == [], (kind, text)


def test_hotwords_and_prompt_steer_spelling(triton_server):
    plain, _ = transcribe("grpc", triton_server.grpc_url, HOTWORDS.read_bytes())
    hot, _ = transcribe("grpc", triton_server.grpc_url, HOTWORDS.read_bytes(), hotwords="ComfyUI")
    prompted, _ = transcribe("grpc", triton_server.grpc_url, HOTWORDS.read_bytes(),
                             initial_prompt="Installing ComfyUI: open the ComfyUI folder.")
    assert "ComfyUI" not in plain
    assert "ComfyUI" in hot
    assert "ComfyUI" in prompted


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fmt,rate,channels", [
    ("wav", 44100, 2), ("flac", 22050, 1), ("ogg", 48000, 1), ("mp3", 44100, 2), ("m4a", 16000, 1),
])
def test_formats_rates_and_channels(triton_server, protocol, fmt, rate, channels):
    data = encode(resample(samples(JFK), rate), fmt, rate=rate, channels=channels)
    text, result = transcribe(protocol, url(triton_server, protocol), data)
    assert wer(JFK.transcript, text) <= 0.2, (fmt, text)
    assert result["duration"] == pytest.approx(11.0, abs=0.15)


@pytest.mark.slow
def test_ten_minutes_of_joined_recordings(triton_server):
    audio, offsets = joined([JFK, HOTWORDS, STEREO], min_seconds=600)
    text, result = transcribe("grpc", triton_server.grpc_url, encode(audio, "flac"),
                              word_timestamps=True)
    assert result["language"] == "en"
    assert result["duration"] >= 600
    segments = result["segments"]
    starts = [s["start"] for s in segments]
    assert starts == sorted(starts)
    assert all(s["end"] <= result["duration"] + 0.01 for s in segments)
    jfk_offsets = [o for o, r in offsets if r is JFK]
    found = 0
    for offset in jfk_offsets:
        # Segments that overlap this copy of jfk.flac (one may begin with the end of the
        # recording before it: "... on the left and so my fellow Americans").
        near = " ".join(s["text"] for s in segments if s["end"] > offset and s["start"] < offset + 11)
        found += "fellow americans" in near.lower()
    assert found >= len(jfk_offsets) - 1, f"{found} of {len(jfk_offsets)}"


@pytest.mark.slow
def test_one_hour_upload_with_speech_at_known_times(triton_server):
    rng = np.random.default_rng(1)
    hour = rng.normal(0, 2e-4, 3600 * SAMPLE_RATE).astype(np.float32)
    speech = samples(JFK)
    placed = [600.0, 2111.3, 3585.0]
    for at in placed:
        start = int(at * SAMPLE_RATE)
        hour[start:start + speech.size] += speech
    text, result = transcribe("grpc", triton_server.grpc_url, encode(hour, "flac"))
    assert result["duration"] == pytest.approx(3600.0, abs=0.1)
    for at in placed:
        near = [s for s in result["segments"] if at - 1.0 <= s["start"] <= at + 11.0]
        assert near and "americans" in " ".join(s["text"] for s in near).lower(), (at, result["segments"])
    assert text.lower().count("fellow americans") == len(placed)


def _engine_batch_counts(server) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/whisper_engine/stats") as r:
        stats = json.load(r)["model_stats"][0]
    return {b["batch_size"]: b["compute_infer"]["count"] for b in stats["batch_stats"]}


def test_twenty_four_concurrent_requests_are_all_right_and_batched(triton_server):
    recordings = [JFK, AISHELL, HOTWORDS, STEREO] * 6
    before = _engine_batch_counts(triton_server)

    async def run_all():
        jobs = [transcribe_async("grpc" if i % 2 else "http",
                                 triton_server.grpc_url if i % 2 else triton_server.http_url,
                                 r.read_bytes()) for i, r in enumerate(recordings)]
        return await asyncio.gather(*jobs)

    results = asyncio.run(run_all())
    for recording, (text, result) in zip(recordings, results):
        assert result["language"] == recording.language, (recording.name, text)
        if recording.language == "zh":
            assert cer(recording.transcript, text) <= 0.25, text
        else:
            assert wer(recording.transcript, text) <= MAX_WER[recording.name], text
    # The engine answers before its execute returns, and Triton counts an execution only
    # once it has returned: give the last one a moment.
    deadline = time.monotonic() + 10
    while True:
        after = _engine_batch_counts(triton_server)
        grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
        if any(size > 1 and count > 0 for size, count in grown.items()):
            break
        assert time.monotonic() < deadline, grown
        time.sleep(0.1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_request_fails_alone_among_good_ones(triton_server, protocol):
    good = JFK.read_bytes()

    async def run_all():
        jobs = [transcribe_async(protocol, url(triton_server, protocol), good) for _ in range(5)]
        jobs.insert(2, transcribe_async(protocol, url(triton_server, protocol), b"RIFF0000WAVEjunk"))
        jobs.insert(4, transcribe_async(protocol, url(triton_server, protocol), good, beam_size=99))
        return await asyncio.gather(*jobs, return_exceptions=True)

    outcomes = asyncio.run(run_all())
    bad = [outcomes.pop(4), outcomes.pop(2)]
    for error, words in zip(bad, ["BEAM_SIZE", "could not be decoded"]):
        assert isinstance(error, tritonclient.utils.InferenceServerException), error
        assert words in error.message()
        assert error.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    for text, _ in outcomes:
        assert wer(JFK.transcript, text) <= 0.15, text


def test_metadata_matches_the_contract(triton_server):
    with client("grpc", triton_server.grpc_url) as c:
        metadata = c.get_model_metadata("whisper", as_json=True)
        config = c.get_model_config("whisper", as_json=True)["config"]
    names = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    assert names == {"AUDIO": "BYTES", "LANGUAGE": "BYTES", "TASK": "BYTES", "BEAM_SIZE": "INT32",
                     "WORD_TIMESTAMPS": "BOOL", "VAD_FILTER": "BOOL", "INITIAL_PROMPT": "BYTES",
                     "HOTWORDS": "BYTES", "TEMPERATURE": "FP32"}
    assert {o["name"] for o in metadata["outputs"]} == {"TEXT", "RESULT"}
    assert sum(int(g["count"]) for g in config["instance_group"]) == 20


def test_missing_audio_input_is_refused(triton_server):
    with client("http", triton_server.http_url) as c:
        language = MODULES["http"].InferInput("LANGUAGE", [1, 1], "BYTES")
        language.set_data_from_numpy(np.array([[b"en"]], dtype=np.object_))
        with pytest.raises(tritonclient.utils.InferenceServerException) as info:
            c.infer("whisper", [language])
    assert "AUDIO" in info.value.message()


def test_two_files_in_one_request_row_each(triton_server):
    with client("grpc", triton_server.grpc_url) as c:
        audio = MODULES["grpc"].InferInput("AUDIO", [2, 1], "BYTES")
        audio.set_data_from_numpy(np.array([[JFK.read_bytes()], [AISHELL.read_bytes()]], dtype=np.object_))
        response = c.infer("whisper", [audio])
    texts = [t.decode() for t in response.as_numpy("TEXT").reshape(-1)]
    results = [json.loads(r) for r in response.as_numpy("RESULT").reshape(-1)]
    assert [r["language"] for r in results] == ["en", "zh"]
    assert wer(JFK.transcript, texts[0]) <= 0.15


def test_metrics_show_triton_and_speech_series_after_traffic(triton_server):
    if not triton_server.metrics_url:
        pytest.skip("metrics URL unknown for an external server")
    transcribe("grpc", triton_server.grpc_url, JFK.read_bytes(), vad_filter=True)
    with urllib.request.urlopen(triton_server.metrics_url) as response:
        text = response.read().decode()
    assert re.search(r'^nv_inference_request_success\{model="whisper",version="1"\} [1-9]', text, re.M)
    assert re.search(r'^nv_inference_queue_duration_us\{model="whisper_engine"', text, re.M)
    audio = float(re.search(r'^whisper_audio_seconds_total\{model="whisper"\} (\S+)', text, re.M).group(1))
    assert audio >= 11.0
    assert re.search(r'^whisper_processing_seconds_per_audio_second_bucket\{.*le="\+Inf"\} [1-9]', text, re.M)
    assert re.search(r'^whisper_engine_batch_windows_count\{model="whisper_engine"\} [1-9]', text, re.M)
    assert re.search(r'^whisper_requests_total\{language="en",model="whisper"\} [1-9]', text, re.M)
    assert re.search(r'^whisper_vad_removed_seconds_total\{model="whisper"\} ', text, re.M)
    # Windows where the VAD heard speech and Whisper said nothing (data loss, watched for).
    assert re.search(r'^whisper_windows_without_text_total\{model="whisper"\} \d', text, re.M)


def test_python_logging_of_the_models_reaches_the_server_log(triton_server):
    """A stub's stderr is not Triton's log: the models' logging must be routed there."""
    if triton_server.managed is None:
        pytest.skip("the log of an external server is not readable here")
    log = triton_server.managed.log_path.read_text(errors="replace")
    assert "whisper_engine loading: model" in log
    assert "whisper: whisper front ready" in log
