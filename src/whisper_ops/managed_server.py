"""Start and stop a real Triton server of this project from Python (tests, bench, soak)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

from whisper_service.engine_requests import SECRET_ENV


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedServer:
    """`scripts/serve` on free loopback ports, its log in a temporary file."""

    def __init__(self, env: Optional[Dict[str, str]] = None, extra_args: Optional[List[str]] = None,
                 ready_timeout: float = 600.0):
        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.env = {**os.environ, **(env or {})}
        # Tests and benchmarks measure work, not the response cache, unless they ask for it.
        self.env.setdefault("WHISPER_RESPONSE_CACHE_MB", "0")
        # Chosen here rather than by the launcher, so that tests can call whisper_engine as
        # the front does (engine_secret).
        if not self.env.get(SECRET_ENV):
            self.env[SECRET_ENV] = secrets.token_hex(16)
        self.extra_args = extra_args or []
        self.ready_timeout = ready_timeout
        self.log_path = Path(tempfile.mkstemp(prefix="triton-", suffix=".log")[1])
        self.process: Optional[subprocess.Popen] = None

    @property
    def engine_secret(self) -> str:
        """The WHISPER_ENGINE_SECRET the server runs with (what the front sends the engine)."""
        return self.env[SECRET_ENV]

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> "ManagedServer":
        cmd = [sys.executable, "-m", "whisper_ops.launcher",
               f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
               f"--metrics-port={self.metrics_port}", *self.extra_args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.wait_ready(self.ready_timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log_tail()}")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def server_pid(self) -> Optional[int]:
        """pid of tritonserver itself (the launcher's child)."""
        for pid in _children(self.process.pid if self.process else -1):
            if _cmdline(pid).split(" ")[0].endswith("tritonserver"):
                return pid
        return None

    def stub_pids(self, model: Optional[str] = None) -> List[int]:
        """pids of the Python-backend stub processes (of one model, if named)."""
        server = self.server_pid()
        served = [(pid, _stub_model(pid)) for pid in (_children(server) if server else [])]
        return [pid for pid, name in served
                if name is not None and (model is None or name == model)]

    def rss_bytes(self) -> int:
        """Resident memory of the server and all its stubs."""
        server = self.server_pid()
        pids = ([server] + _children(server)) if server else []
        return sum(_rss(pid) for pid in pids)

    def pss_bytes(self) -> int:
        """Proportional set size of the server and all its stubs: shared pages (the model
        files, libraries) counted once across processes, unlike RSS."""
        server = self.server_pid()
        pids = ([server] + _children(server)) if server else []
        return sum(_pss(pid) for pid in pids)

    def pss_by_model(self) -> Dict[str, int]:
        """PSS bytes per model's stub processes, and of tritonserver itself ("tritonserver")."""
        server = self.server_pid()
        if not server:
            return {}
        totals = {"tritonserver": _pss(server)}
        for pid in _children(server):
            model = _stub_model(pid)
            if model is not None:
                totals[model] = totals.get(model, 0) + _pss(pid)
        return totals

    def stop(self, timeout: float = 60.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()

    def __enter__(self) -> "ManagedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _children(pid: int) -> List[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _stub_model(pid: int) -> Optional[str]:
    """The model a Python-backend stub process serves (its model.py's folder), else None."""
    args = _cmdline(pid).split(" ")
    if args and args[0].endswith("triton_python_backend_stub") and len(args) > 1:
        return Path(args[1]).parent.parent.name
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _rss(pid: int) -> int:
    return _proc_kib(f"/proc/{pid}/status", "VmRSS:") * 1024


def _pss(pid: int) -> int:
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:") * 1024


def _proc_kib(path: str, field: str) -> int:
    """A `field: N kB` line of a /proc file (0 when the process is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
