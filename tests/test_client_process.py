"""Client checks that need a real socket or a subprocess, but no server: not unit.

An unreachable address (127.0.0.1:1 refuses connections) over real gRPC and HTTP transports,
the command line against it, and the package imported in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import whisper_triton
from whisper_triton import ServerUnavailableError, WhisperClient, cli

pytestmark = pytest.mark.slow

CLIENT_DIR = Path(whisper_triton.__file__).resolve().parents[1]


# A refused connection is reported at once: no waiting out the transports' connect timeouts or
# gRPC's reconnect backoff. A hang guard, not a timing check (timing belongs to benchmarks).
@pytest.mark.timeout(5)
def test_unreachable_server_fails_fast():
    for protocol in ("grpc", "http"):
        with WhisperClient("127.0.0.1:1", protocol, retries=1, backoff=0.05) as client:
            with pytest.raises(ServerUnavailableError):
                client.transcribe(b"x")
            assert client.is_ready() is False


def test_cli_health_reports_an_unreachable_server_in_one_line(capsys, monkeypatch):
    monkeypatch.setenv("WHISPER_TRITON_URL", "127.0.0.1:1")
    assert cli.main(["health", "--retries", "0"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "127.0.0.1:1" in err[0] and "Traceback" not in err[0]


def test_package_imports_without_tritonclient():
    # The server imports whisper_triton.result; it must not need the client's transports.
    code = ("import sys; sys.modules['tritonclient'] = None; "
            "import whisper_triton, whisper_triton.result, whisper_triton.writers")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=CLIENT_DIR)
