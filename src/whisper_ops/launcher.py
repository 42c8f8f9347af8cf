"""Run tritonserver on the project's model repository without Docker.

The `nvidia-pytriton` wheel carries a full tritonserver binary, the Python backend and a
Python-backend stub for each Python version; this module lays them out as Triton expects,
points the stub at this environment's packages, makes sure the weights of the engine's model are
there (whisper_ops.preflight: downloads them, or stops with one sentence that says what to set),
gives tritonserver a random WHISPER_ENGINE_SECRET (unless one is set) so that only the front
model can call the engine, and supervises the server: SIGTERM/SIGINT are passed on so Triton
drains in-flight requests and stops its stub processes before we exit.

With `--gateway-port` (scripts/serve and the container pass GATEWAY_PORT, 8080), it also runs
the OpenAI-compatible gateway (`python -m whisper_gateway`) beside Triton, pointed at this
server's gRPC port; on shutdown the gateway stops first, then Triton drains.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from pathlib import Path
from typing import List, Optional

from whisper_ops import preflight, shm_sweep
from whisper_ops.watchdog import RepositoryApi, StubWatchdog
from whisper_service.engine_requests import SECRET_ENV
from whisper_service.gpu import GPU_VISIBLE_ENV

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPOSITORY = ROOT / "model_repository"


def _pytriton_dir() -> Path:
    import pytriton

    return Path(pytriton.__file__).parent / "tritonserver"


def installed_triton() -> Optional[Path]:
    """A regular Triton install (the NVIDIA image's /opt/tritonserver), if there is one."""
    directory = Path(os.environ.get("TRITONSERVER_DIR", "/opt/tritonserver"))
    return directory if (directory / "bin" / "tritonserver").is_file() else None


def backend_directory(target: Path) -> Path:
    """A backends/ folder with the Python backend and the stub for this interpreter."""
    if installed_triton() is not None:
        return installed_triton() / "backends"
    source = _pytriton_dir()
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = {
        source / "backends" / "python" / "libtriton_python.so": python_dir / "libtriton_python.so",
        source / "backends" / "python" / "triton_python_backend_utils.py":
            python_dir / "triton_python_backend_utils.py",
        source / "python_backend_stubs" / version / "triton_python_backend_stub":
            python_dir / "triton_python_backend_stub",
    }
    for src, dst in files.items():
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copy2(src, dst)
    return target


def server_environment() -> dict:
    env = with_engine_secret(dict(os.environ))
    # Asked once here, so that the 22 front processes need not import CTranslate2 to know.
    env.setdefault(GPU_VISIBLE_ENV, "1" if preflight.gpu_visible() else "0")
    if installed_triton() is not None:
        return env  # the image's Triton finds its own libraries and Python packages
    libs = [
        str(Path(sysconfig.get_paths()["purelib"]) / "nvidia_pytriton.libs"),
        # The stub embeds libpython: use this interpreter's, so its packages' ABI matches.
        str(sysconfig.get_config_var("LIBDIR") or ""),
    ]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        [p for p in libs + [env.get("LD_LIBRARY_PATH", "")] if p])
    # The stub ignores PYTHONPATH; model.py adds these (with their .pth files) itself.
    env["WHISPER_SITE_PACKAGES"] = sysconfig.get_paths()["purelib"]
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def with_engine_secret(env: dict) -> dict:
    """env with WHISPER_ENGINE_SECRET: the given one, or a new random one.

    The front model presents it on every call to whisper_engine, which refuses callers without
    it; nobody outside this server's processes needs to know it.
    """
    if not env.get(SECRET_ENV):
        env[SECRET_ENV] = secrets.token_hex(16)
    return env


def command(args: argparse.Namespace, backends: Path) -> List[str]:
    binary = (installed_triton() or _pytriton_dir()) / "bin" / "tritonserver"
    cmd = [
        str(binary),
        f"--model-repository={args.model_repository}",
        f"--backend-directory={backends}",
        f"--http-port={args.http_port}",
        f"--grpc-port={args.grpc_port}",
        f"--metrics-port={args.metrics_port}",
        # Explicit mode lets operators unload/load the engine through the repository API
        # (the old service's "clear GPU memory").
        "--model-control-mode=explicit",
        "--load-model=*",
        f"--exit-timeout-secs={args.exit_timeout}",
        "--strict-readiness=true",
        f"--log-verbose={args.log_verbose}",
    ]
    if args.response_cache_mb > 0:
        # Identical uploads with identical options are answered from memory (the `whisper`
        # model enables the cache; this gives the server one).
        cmd += [f"--cache-config=local,size={int(args.response_cache_mb * 1024 * 1024)}",
                f"--cache-directory={binary.parent.parent / 'caches'}"]
    if args.admin_key:
        # Load/unload/index need the header `admin-key: <key>`; inference, health and
        # metadata stay open.
        restriction = f"model-repository:admin-key={args.admin_key}"
        cmd += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    return cmd + list(args.extra)


_PID_LABEL = re.compile(r'pid="(\d+)"')


def in_flight(metrics_port: int) -> float:
    """Requests live whisper processes are working on, from their gauges (0 when unknown).

    The series of a stub that died mid-request stays behind; its pid is gone, so it is skipped.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith("whisper_requests_in_flight{"):
            pid = _PID_LABEL.search(line)
            if pid is None or Path(f"/proc/{pid.group(1)}").exists():
                total += float(line.rsplit(" ", 1)[1])
    return total


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="scripts/serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository", default=env("TRITON_MODEL_REPOSITORY", str(DEFAULT_REPOSITORY)))
    parser.add_argument("--http-port", type=int, default=int(env("TRITON_HTTP_PORT", "8000")))
    parser.add_argument("--grpc-port", type=int, default=int(env("TRITON_GRPC_PORT", "8001")))
    parser.add_argument("--metrics-port", type=int, default=int(env("TRITON_METRICS_PORT", "8002")))
    parser.add_argument("--exit-timeout", type=int, default=int(env("TRITON_EXIT_TIMEOUT_SECS", "30")))
    parser.add_argument("--admin-key", default=env("TRITON_ADMIN_KEY", ""),
                        help="restrict the model-repository API to requests with header admin-key")
    parser.add_argument("--log-verbose", type=int, default=int(env("TRITON_LOG_VERBOSE", "0")))
    parser.add_argument("--response-cache-mb", type=float,
                        default=float(env("WHISPER_RESPONSE_CACHE_MB", "256")),
                        help="memory for Triton's response cache of `whisper` (0 = off)")
    parser.add_argument("--watchdog-interval", type=float,
                        default=float(env("WHISPER_WATCHDOG_INTERVAL", "5")),
                        help="seconds between checks for dead stub processes (0 = off)")
    parser.add_argument("--no-model-check", dest="model_check", action="store_false",
                        default=env("WHISPER_MODEL_CHECK", "1") != "0",
                        help="start tritonserver without first making sure the engine's model "
                             "weights are there (WHISPER_MODEL_CHECK=0)")
    parser.add_argument("--gateway-port", type=int, default=0,
                        help="also run the OpenAI-compatible gateway on this port (0 = not)")
    parser.add_argument("--no-gateway", dest="gateway_port", action="store_const", const=0,
                        help="do not run the gateway (GATEWAY_ENABLED=0 in scripts/serve)")
    parser.add_argument("extra", nargs="*", help="further tritonserver options, after --")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.model_check:
        # Weights missing: one sentence that says what to set, not a traceback in Triton's log.
        status = preflight.run(Path(args.model_repository))
        if status != 0:
            return status
    backends = backend_directory(Path(os.environ.get(
        "TRITON_BACKEND_DIR", Path(sys.prefix) / "triton-backends")))
    cmd = command(args, backends)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    shm_sweep.sweep()  # regions left by an earlier server that was killed
    print("starting:", " ".join(cmd), file=sys.stderr, flush=True)
    server = subprocess.Popen(cmd, env=server_environment())
    gateway = start_gateway(args) if args.gateway_port else None

    stopping = threading.Event()

    def forward(signum, _frame):
        if server.poll() is not None:
            return
        if stopping.is_set():
            server.send_signal(signal.SIGTERM)  # a second signal: stop now
            return
        stopping.set()
        threading.Thread(target=drain_then_stop, daemon=True).start()

    def drain_then_stop():
        stop_gateway(gateway, args.exit_timeout)
        # Triton's own drain does not see a request that waits on a BLS call, and it stops the
        # engine under it: wait for the front's own in-flight gauge to reach zero first.
        deadline = time.monotonic() + args.exit_timeout
        while time.monotonic() < deadline and in_flight(args.metrics_port) > 0:
            time.sleep(0.2)
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if args.watchdog_interval > 0:
        watchdog = StubWatchdog(lambda: server.pid if server.poll() is None else None,
                                RepositoryApi(f"127.0.0.1:{args.http_port}", args.admin_key),
                                interval=args.watchdog_interval)
        watchdog.start()
    code = server.wait()
    stop_gateway(gateway, args.exit_timeout)
    # The server is gone: what it left of killed stubs' regions is nobody's now.
    shm_sweep.sweep(min_age_s=0.0)
    return code


def gateway_command(args: argparse.Namespace) -> List[str]:
    return [sys.executable, "-m", "whisper_gateway", f"--port={args.gateway_port}",
            f"--triton-url=127.0.0.1:{args.grpc_port}"]


def start_gateway(args: argparse.Namespace) -> subprocess.Popen:
    """The gateway, beside Triton (it answers /ready with 503 until Triton is ready)."""
    cmd = gateway_command(args)
    print("starting:", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.Popen(cmd, env=dict(os.environ))


def stop_gateway(gateway: Optional[subprocess.Popen], timeout: float) -> None:
    """SIGTERM: uvicorn stops accepting and finishes the requests in flight."""
    if gateway is None or gateway.poll() is not None:
        return
    gateway.send_signal(signal.SIGTERM)
    try:
        gateway.wait(timeout)
    except subprocess.TimeoutExpired:
        gateway.kill()
        gateway.wait()


if __name__ == "__main__":
    sys.exit(main())
