"""In-process faster-whisper peers, each run in a child process of its own so that its memory
(ru_maxrss from os.wait4) and its threads are its own.

old      the old FastAPI service's design: one WhisperModel (default threads, one worker),
         20 threads behind a threading.Semaphore(20), each calling model.transcribe
tuned    WhisperModel(cpu_threads=1, num_workers=<cores>) with <cores> threads
batched  faster_whisper.BatchedInferencePipeline(model).transcribe(batch_size=8), file by file
         (its defaults: VAD on, as the batched pipeline needs speech chunks)

Each peer is a closed loop at its own concurrency (20, <cores>, 1): its threads take the next
payload as soon as they are free. One untimed call warms the model up first. Latency is the
time of one transcribe call including consuming its segments.

Run as a child: python -m bench_lib.peers SPEC.json (the parent writes SPEC and payloads).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

PEERS = ("old", "tuned", "batched")
DESCRIPTIONS = {
    "old": "old service: 1 WhisperModel, 20 threads, Semaphore(20), beam 5",
    "tuned": "WhisperModel(cpu_threads=1, num_workers=cores), cores threads, beam 5",
    "batched": "BatchedInferencePipeline, batch_size=8, file by file, beam 5 (VAD on)",
}


def cores() -> int:
    return len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------ child side
def _child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    with open(spec["payloads"], "rb") as f:
        payloads: List[bytes] = pickle.load(f)
    languages: List = spec.get("languages") or [None] * len(payloads)
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    kind, model_dir, compute_type = spec["kind"], spec["model_dir"], spec["compute_type"]
    t0 = time.perf_counter()
    if kind == "old":
        model = WhisperModel(model_dir, device="cpu", compute_type=compute_type)
        threads = 20
    elif kind == "tuned":
        threads = cores()
        model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=1,
                             num_workers=threads)
    elif kind == "batched":
        model = WhisperModel(model_dir, device="cpu", compute_type=compute_type)
        pipeline = BatchedInferencePipeline(model)
        threads = 1
    else:
        raise ValueError(kind)
    load_s = time.perf_counter() - t0

    def transcribe(data: bytes, language=None):
        if kind == "batched":
            segments, info = pipeline.transcribe(io.BytesIO(data), batch_size=8, beam_size=5,
                                                 language=language)
        else:
            segments, info = model.transcribe(io.BytesIO(data), beam_size=5, language=language)
        return "".join(segment.text for segment in segments).strip(), info.language

    t0 = time.perf_counter()
    transcribe(payloads[0], languages[0])
    warmup_s = time.perf_counter() - t0

    semaphore = threading.Semaphore(threads)
    lock = threading.Lock()
    counter = iter(range(len(payloads)))
    results: List = [None] * len(payloads)
    started = time.perf_counter()
    deadline = started + float(spec["time_budget"])

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None or time.perf_counter() > deadline:
                return
            with semaphore:
                a = time.perf_counter()
                try:
                    (text, language), error = transcribe(payloads[index], languages[index]), None
                except Exception as exc:  # noqa: BLE001 - counted as an error
                    text, language = None, None
                    error = f"{type(exc).__name__}: {str(exc)[:300]}"
                b = time.perf_counter()
            results[index] = {"start": a - started, "end": b - started, "latency": b - a,
                              "text": text, "language": language, "error": error}

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - started
    Path(spec["result"]).write_text(json.dumps({
        "kind": kind, "threads": threads, "load_s": load_s, "warmup_s": warmup_s,
        "wall_s": wall, "results": results,
    }))


# ----------------------------------------------------------------------------- parent side
def run_peer(kind: str, model_dir: str, compute_type: str, payloads: Sequence[bytes],
             time_budget: float, timeout: float, languages: Optional[Sequence] = None) -> Dict:
    """Run one peer in a fresh child process; its result plus its peak RSS (ru_maxrss).
    languages: per payload, the language to give transcribe (None: detected)."""
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        tmp = Path(tmp)
        with open(tmp / "payloads.pkl", "wb") as f:
            pickle.dump(list(payloads), f, protocol=pickle.HIGHEST_PROTOCOL)
        spec = {"kind": kind, "model_dir": model_dir, "compute_type": compute_type,
                "payloads": str(tmp / "payloads.pkl"), "result": str(tmp / "result.json"),
                "time_budget": time_budget,
                "languages": list(languages) if languages is not None else None}
        (tmp / "spec.json").write_text(json.dumps(spec))
        scripts_dir = str(Path(__file__).resolve().parents[1])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [scripts_dir,
                                                           os.environ.get("PYTHONPATH")]))}
        log_path = tmp / "peer.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "bench_lib.peers", str(tmp / "spec.json")],
                                    env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        started = time.monotonic()
        status, usage, killed = None, None, False
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                if time.monotonic() - started > timeout and not killed:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                time.sleep(0.2)
        except BaseException:
            if status is None:
                os.killpg(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
            raise
        finally:
            proc.returncode = os.waitstatus_to_exitcode(status) if status is not None else -9
        out = {"kind": kind, "description": DESCRIPTIONS[kind], "exit_code": proc.returncode,
               "peak_rss_bytes": usage.ru_maxrss * 1024 if usage else None,
               "cpu_user_s": usage.ru_utime if usage else None,
               "cpu_system_s": usage.ru_stime if usage else None,
               "process_s": time.monotonic() - started}
        result_path = tmp / "result.json"
        if proc.returncode == 0 and result_path.is_file():
            out.update(json.loads(result_path.read_text()))
        else:
            tail = log_path.read_text(errors="replace").splitlines()[-30:]
            out.update({"failed": "killed after timeout" if killed else "child failed",
                        "log_tail": "\n".join(tail), "results": [None] * len(payloads),
                        "wall_s": None})
        return out


if __name__ == "__main__":
    _child(sys.argv[1])
