"""The old "clear GPU memory" call: unload and load the engine through Triton's repository API,
restricted to callers that present the admin key."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from corpus import JFK
from raw_triton import transcribe
from whisper_service.accuracy import wer
from whisper_ops.managed_server import ManagedServer

pytestmark = pytest.mark.server
KEY = "test-admin-key"


@pytest.fixture(scope="module")
def admin_server():
    server = ManagedServer(env={"TRITON_ADMIN_KEY": KEY, "WHISPER_MODEL": "tiny.en"}).start()
    try:
        yield server
    finally:
        server.stop()


def post(server, path, key=None):
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=b"{}", method="POST")
    if key:
        request.add_header("admin-key", key)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def engine_ready(server) -> bool:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/whisper_engine/ready") as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def test_repository_api_needs_the_admin_key(admin_server):
    status, body = post(admin_server, "/v2/repository/models/whisper_engine/unload")
    assert status in (401, 403), body
    assert engine_ready(admin_server)
    # inference, health and metadata stay open
    text, _ = transcribe("http", admin_server.http_url, JFK.read_bytes())
    assert wer(JFK.transcript, text) <= 0.2


def test_unload_releases_the_engine_and_load_brings_it_back(admin_server):
    engine_pids = admin_server.stub_pids("whisper_engine")
    assert len(engine_pids) == 1
    rss_before = admin_server.rss_bytes()

    status, body = post(admin_server, "/v2/repository/models/whisper_engine/unload", KEY)
    assert status == 200, body
    deadline = time.monotonic() + 60
    while admin_server.stub_pids("whisper_engine") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not admin_server.stub_pids("whisper_engine"), "engine stub still running"
    assert admin_server.rss_bytes() < rss_before
    assert not engine_ready(admin_server)

    with pytest.raises(Exception) as info:
        transcribe("grpc", admin_server.grpc_url, JFK.read_bytes())
    assert "whisper_engine" in str(info.value) and "load" in str(info.value)

    status, body = post(admin_server, "/v2/repository/models/whisper_engine/load", KEY)
    assert status == 200, body
    assert engine_ready(admin_server)
    text, result = transcribe("grpc", admin_server.grpc_url, JFK.read_bytes())
    assert wer(JFK.transcript, text) <= 0.2
    index = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://{admin_server.http_url}/v2/repository/index", data=b"{}", method="POST",
        headers={"admin-key": KEY})).read())
    assert {m["name"]: m["state"] for m in index} == {"whisper": "READY", "whisper_engine": "READY",
                                                      "whisper_stream": "READY"}
