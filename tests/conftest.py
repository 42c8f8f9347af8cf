"""Shared fixtures: a real Triton server of this repository, started once per test session.

Set WHISPER_TEST_HTTP_URL and WHISPER_TEST_GRPC_URL to test a server that is already running
instead (for example one started with scripts/serve).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from corpus import AUDIO_DIR  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if not AUDIO_DIR.is_dir():
        skip = pytest.mark.skip(reason=f"recordings not found in {AUDIO_DIR}")
        for item in items:
            if "server" in item.keywords or "model" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def triton_server():
    http_url = os.environ.get("WHISPER_TEST_HTTP_URL")
    grpc_url = os.environ.get("WHISPER_TEST_GRPC_URL")
    if http_url and grpc_url:
        yield SimpleNamespace(http_url=http_url, grpc_url=grpc_url, managed=None,
                              metrics_url=os.environ.get("WHISPER_TEST_METRICS_URL"))
        return
    from whisper_ops.managed_server import ManagedServer

    server = ManagedServer().start()
    try:
        yield SimpleNamespace(http_url=server.http_url, grpc_url=server.grpc_url,
                              metrics_url=server.metrics_url, managed=server)
    finally:
        stubs = server.stub_pids()
        code = server.stop()
        leftover = [pid for pid in stubs if Path(f"/proc/{pid}").exists()]
        assert code == 0, f"server exited with {code}:\n{server.log_tail()}"
        assert not leftover, f"stub processes left behind: {leftover}"
