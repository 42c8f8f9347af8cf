"""Closed-loop load on model `whisper` with tritonclient's asyncio clients, plus what the server
says about itself (model statistics, batch sizes) and how much memory its processes hold.

Closed loop: N workers, each sends its next request as soon as its previous answer is back,
until the level's request count is used up or its time budget is spent (requests in flight
then finish, bounded by the per-request timeout). Loopback only.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from typing import Callable, Dict, List, Optional, Sequence

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio

from whisper_ops import raw_triton
from bench_lib.workloads import Request

MODEL = "whisper"
ENGINE = "whisper_engine"


async def _closed_loop(protocol: str, url: str, requests: Sequence[Request], concurrency: int,
                       request_timeout: float, time_budget: float) -> Dict:
    if protocol == "grpc":
        module, client = grpcclient, grpcaio.InferenceServerClient(url)
        kwargs = {"client_timeout": request_timeout}
    elif protocol == "http":
        module = httpclient
        client = httpaio.InferenceServerClient(url, conn_limit=max(100, concurrency),
                                               conn_timeout=request_timeout)
        kwargs = {}
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    results: List[Optional[Dict]] = [None] * len(requests)
    counter = iter(range(len(requests)))
    started = time.perf_counter()
    deadline = started + time_budget

    async def worker() -> None:
        for index in counter:
            if time.perf_counter() > deadline:
                return
            request = requests[index]
            t0 = time.perf_counter()
            try:
                options = ({"language": request.given_language} if request.given_language
                           else {})
                response = await client.infer(
                    MODEL, raw_triton.inputs(module, request.payload, **options), **kwargs)
                text, result = raw_triton.parse(response)
                language = result.get("language") if isinstance(result, dict) else None
                error = None
            except Exception as exc:  # noqa: BLE001 - every failure is a counted error
                text, language, error = None, None, f"{type(exc).__name__}: {str(exc)[:300]}"
            t1 = time.perf_counter()
            results[index] = {"start": t0 - started, "end": t1 - started, "latency": t1 - t0,
                              "text": text, "language": language, "error": error}

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "results": results}


def run_level(protocol: str, url: str, requests: Sequence[Request], concurrency: int,
              request_timeout: float, time_budget: float) -> Dict:
    return asyncio.run(_closed_loop(protocol, url, requests, concurrency, request_timeout,
                                    time_budget))


# --------------------------------------------------------------------------- server statistics
def _get_json(url: str, timeout: float = 10.0) -> Dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def server_metadata(http_url: str) -> Dict:
    try:
        return _get_json(f"http://{http_url}/v2")
    except OSError as exc:
        return {"error": str(exc)}


def is_live(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/live", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def model_stats(http_url: str, model: str) -> Dict:
    """The model's statistics entry (all versions summed is not needed: one version)."""
    stats = _get_json(f"http://{http_url}/v2/models/{model}/stats")
    entries = stats.get("model_stats", [])
    return entries[0] if entries else {}


def snapshot(http_url: str) -> Dict[str, Dict]:
    return {model: model_stats(http_url, model) for model in (MODEL, ENGINE)}


def settled_snapshot(http_url: str, before: Dict[str, Dict], answered: int,
                     timeout: float = 5.0) -> Dict[str, Dict]:
    """A snapshot taken once the front's statistics count every answered request.

    Triton records a request's statistics after `execute` returns, which can be a moment after
    the client already holds the response; reading at once would miss the last requests.
    """
    deadline = time.monotonic() + timeout
    while True:
        after = snapshot(http_url)
        counted = sum(_stat(after[MODEL], "inference_stats", kind, "count")
                      - _stat(before[MODEL], "inference_stats", kind, "count")
                      for kind in ("success", "fail"))
        if counted >= answered or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    # The engine answers through its response senders before its execute returns, and Triton
    # records an execution only once it has returned: wait until its statistics stop moving.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(ENGINE_SETTLE_S)
        again = snapshot(http_url)
        if _executions(again) == _executions(after):
            return again
        after = again
    return after


ENGINE_SETTLE_S = 0.25


def _executions(snap: Dict[str, Dict]) -> int:
    return sum(_stat(entry, "compute_infer", "count")
               for entry in snap[ENGINE].get("batch_stats", []))


def _stat(entry: Dict, *keys: str) -> int:
    for key in keys:
        entry = entry.get(key, {}) if isinstance(entry, dict) else {}
    return int(entry or 0)


def stats_delta(before: Dict[str, Dict], after: Dict[str, Dict], wall_s: float) -> Dict:
    """What happened between two snapshots: the engine's batch sizes and where time went."""
    engine_before = {int(b["batch_size"]): b for b in before[ENGINE].get("batch_stats", [])}
    batches: Dict[int, int] = {}
    busy_ns = 0
    for entry in after[ENGINE].get("batch_stats", []):
        size = int(entry["batch_size"])
        old = engine_before.get(size, {})
        count = _stat(entry, "compute_infer", "count") - _stat(old, "compute_infer", "count")
        if count > 0:
            batches[size] = count
        busy_ns += _stat(entry, "compute_infer", "ns") - _stat(old, "compute_infer", "ns")
    executions = sum(batches.values())
    windows = sum(size * count for size, count in batches.items())
    out = {
        "engine_batch_sizes": {str(k): v for k, v in sorted(batches.items())},
        "engine_executions": executions,
        "engine_windows": windows,
        "engine_mean_batch_size": windows / executions if executions else None,
        "engine_busy_s": busy_ns / 1e9,
        "engine_busy_fraction": (busy_ns / 1e9) / wall_s if wall_s > 0 else None,
    }
    # Per-request means of queue and compute time in both models (ms).
    for model, prefix in ((MODEL, "front"), (ENGINE, "engine")):
        new, old = after[model].get("inference_stats", {}), before[model].get("inference_stats", {})
        count = _stat(new, "success", "count") - _stat(old, "success", "count")
        out[f"{prefix}_requests"] = count
        for part in ("queue", "compute_input", "compute_infer", "compute_output"):
            ns = _stat(new, part, "ns") - _stat(old, part, "ns")
            out[f"{prefix}_{part}_ms_mean"] = ns / count / 1e6 if count else None
        out[f"{prefix}_failures"] = _stat(new, "fail", "count") - _stat(old, "fail", "count")
    return out


# --------------------------------------------------------------------------------- memory
class RssSampler:
    """Samples a function returning bytes every `period` s in a thread; keeps overall and
    per-mark peaks."""

    def __init__(self, sample: Callable[[], int], period: float = 0.5):
        self.sample, self.period = sample, period
        self.peak = 0
        self.window_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.sample()
            except Exception:  # noqa: BLE001 - a process may vanish between listing and reading
                value = 0
            self.samples += 1
            self.peak = max(self.peak, value)
            self.window_peak = max(self.window_peak, value)
            self._stop.wait(self.period)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def reset_window(self) -> None:
        self.window_peak = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
