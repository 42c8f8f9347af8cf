"""A real Prometheus server (Debian's package, started here on loopback) scrapes the local
Triton server while it serves traffic; the speech metrics come back through its query API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from corpus import AISHELL, JFK
from raw_triton import transcribe
from whisper_ops.managed_server import free_port

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def prometheus(triton_server, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (CI installs Debian's package: see .ci/run)")
    if not triton_server.metrics_url:
        pytest.skip("metrics URL unknown for an external server")
    target = urllib.parse.urlparse(triton_server.metrics_url).netloc
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n"
                      f"  - job_name: triton\n    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def query(prometheus: str, expression: str) -> list:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]["result"]


def test_speech_metrics_reach_prometheus(triton_server, prometheus):
    transcribe("grpc", triton_server.grpc_url, JFK.read_bytes())
    transcribe("http", triton_server.http_url, AISHELL.read_bytes())
    with pytest.raises(Exception):
        transcribe("grpc", triton_server.grpc_url, b"not audio")
    expectations = {
        'whisper_audio_seconds_total{model="whisper"}': lambda v: v >= 15.0,
        'whisper_requests_total{language="zh"}': lambda v: v >= 1,
        'whisper_errors_total{reason="undecodable_audio"}': lambda v: v >= 1,
        'whisper_processing_seconds_per_audio_second_count': lambda v: v >= 2,
        'whisper_engine_batch_windows_count': lambda v: v >= 2,
        'nv_inference_request_success{model="whisper"}': lambda v: v >= 2,
    }
    deadline = time.monotonic() + 60
    missing = dict(expectations)
    while missing and time.monotonic() < deadline:
        for expression, ok in list(missing.items()):
            try:
                result = query(prometheus, f"sum({expression})")
            except OSError:
                break  # Prometheus still starting
            if result and ok(float(result[0]["value"][1])):
                del missing[expression]
        time.sleep(1)
    assert not missing, f"not seen through Prometheus: {list(missing)}"
