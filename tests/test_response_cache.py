"""Triton's response cache on `whisper` (the old service's "cache results for identical
audio"): a repeated upload with the same options is answered from the cache, a changed option
or changed audio is not, and both show in Triton's cache metrics."""

from __future__ import annotations

import re
import time
import urllib.request

import numpy as np
import pytest

from corpus import JFK
from whisper_ops.managed_server import ManagedServer
from whisper_triton import WhisperClient

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def cached_server():
    server = ManagedServer(env={"WHISPER_MODEL": "tiny.en",
                                "WHISPER_RESPONSE_CACHE_MB": "16"}).start()
    try:
        yield server
    finally:
        server.stop()


def cache_counts(server) -> tuple:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()

    def value(name):
        match = re.search(rf'^{name}{{model="whisper",version="1"}} (\S+)$', text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0
    return value("nv_cache_num_hits_per_model"), value("nv_cache_num_misses_per_model")


def settled_counts(server, expected: tuple, within: float = 10.0) -> tuple:
    """The counts once they equal `expected`, or as they are after `within` seconds: Triton
    exports its metrics a moment after the response goes out."""
    deadline = time.monotonic() + within
    counts = cache_counts(server)
    while counts != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = cache_counts(server)
    return counts


def test_a_repeated_upload_is_answered_from_the_cache_and_a_changed_one_is_not(cached_server):
    data = JFK.read_bytes()
    with WhisperClient(cached_server.grpc_url, protocol="grpc") as client:
        before = cache_counts(cached_server)
        first = client.transcribe(data, language="en")
        expected = (before[0], before[1] + 1)
        assert settled_counts(cached_server, expected) == expected

        again = client.transcribe(data, language="en")
        expected = (before[0] + 1, before[1] + 1)
        assert settled_counts(cached_server, expected) == expected
        assert again.to_json() == first.to_json()

        # Another option, or other audio, is transcribed again.
        client.transcribe(data, language="en", beam_size=1)
        samples = np.random.default_rng(0).normal(0, 0.01, 16000 * 2).astype(np.float32)
        client.transcribe(samples, sample_rate=16000, language="en")
        expected = (before[0] + 1, before[1] + 3)
        assert settled_counts(cached_server, expected) == expected
    # Over HTTP the same inputs are the same cache entry.
    with WhisperClient(cached_server.http_url, protocol="http") as client:
        assert client.transcribe(data, language="en").text == first.text
    expected = (before[0] + 2, before[1] + 3)
    assert settled_counts(cached_server, expected) == expected


def test_the_servers_the_tests_start_have_no_cache_unless_asked(triton_server):
    if triton_server.managed is None:
        pytest.skip("testing a server started elsewhere")
    with WhisperClient(triton_server.grpc_url, protocol="grpc") as client:
        client.transcribe(JFK.read_bytes(), language="en")
        client.transcribe(JFK.read_bytes(), language="en")
    assert cache_counts(triton_server)[0] == 0
