"""Soak test: N clients send real recordings back to back for a fixed time, loopback only.

Every request is checked (language and words of the reference transcript), and the server
processes' memory (RSS and PSS) is sampled every second, so a leak or a slow failure shows
up as numbers. `--long-uploads N` also sends N hours-long low-bitrate Opus uploads with speech
in parts (whisper_ops.long_audio) at once at the start, beside the normal traffic: each must be
answered with every part's words, and the peak PSS is reported against the idle PSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from whisper_ops.long_audio import long_opus, speech_parts
from whisper_ops.managed_server import ManagedServer
from whisper_ops.raw_triton import transcribe_async
from whisper_ops.recordings import ALL, encode, samples
from whisper_service.accuracy import cer, wer


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop after this many")
    parser.add_argument("--protocol", choices=("grpc", "http", "both"), default="both")
    parser.add_argument("--model", default=None, help="WHISPER_MODEL of the server it starts")
    parser.add_argument("--http-url", help="use a running server (with --grpc-url) instead")
    parser.add_argument("--grpc-url")
    parser.add_argument("--long-uploads", type=int, default=0,
                        help="also send this many hours-long Opus uploads at once at the start")
    parser.add_argument("--long-hours", type=float, default=4.0)
    parser.add_argument("--long-speech-every", type=float, default=1800.0,
                        help="seconds between the parts with speech in a long upload")
    parser.add_argument("--out", default="bench-results/soak.json")
    return parser.parse_args(argv)


# Growth is judged from this far into the run: by then every front has taken uploads (and
# loaded its VAD) and the engine has decoded full batches, so what grows after it is a leak.
SETTLED_AFTER_S = 60
WRONG_SAMPLES_KEPT = 10


async def soak(args, http_url: str, grpc_url: str, memory, pss=lambda: 0,
               pss_by_model=lambda: {}) -> dict:
    rng = np.random.default_rng(0)
    clips = [(r, samples(r)) for r in ALL]
    deadline = time.monotonic() + args.seconds
    counts = {"requests": 0, "ok": 0, "wrong": 0, "failed": 0}
    errors: dict = {}
    wrong_samples: List[dict] = []  # what wrong answers said, to look into them
    latencies: List[float] = []
    memory_samples = [memory()]
    idle_by_model = pss_by_model()
    pss_samples = [sum(idle_by_model.values()) if idle_by_model else pss()]
    peak_by_model = dict(idle_by_model)
    at_peak = dict(idle_by_model)

    def sample_pss() -> None:
        by_model = pss_by_model()
        pss_samples.append(sum(by_model.values()) if by_model else pss())
        for name, value in by_model.items():
            peak_by_model[name] = max(value, peak_by_model.get(name, 0))
        if pss_samples[-1] >= max(pss_samples):
            at_peak.clear()
            at_peak.update(by_model)
    long_results: List[dict] = []

    async def client(number: int) -> None:
        protocol = args.protocol if args.protocol != "both" else ("grpc", "http")[number % 2]
        url = grpc_url if protocol == "grpc" else http_url
        while time.monotonic() < deadline and counts["requests"] < args.max_requests:
            counts["requests"] += 1
            recording, audio = clips[int(rng.integers(len(clips)))]
            # distinct audio every time, so no cache can count as throughput
            data = encode(audio * float(rng.uniform(0.7, 1.0)), "flac")
            started = time.monotonic()
            try:
                text, result = await transcribe_async(protocol, url, data)
            except Exception as exc:  # noqa: BLE001 - every failure is counted, not raised
                counts["failed"] += 1
                key = str(exc)[:120]
                errors[key] = errors.get(key, 0) + 1
                continue
            latencies.append(time.monotonic() - started)
            score = (cer if recording.language == "zh" else wer)(recording.transcript, text)
            good = result["language"] in (recording.language, "en") and score <= 0.6
            counts["ok" if good else "wrong"] += 1
            if not good and len(wrong_samples) < WRONG_SAMPLES_KEPT:
                wrong_samples.append({"recording": recording.name, "language": result["language"],
                                      "score": round(score, 3), "text": text[:200]})

    async def long_upload(number: int, data: bytes) -> None:
        started = time.monotonic()
        try:
            text, result = await transcribe_async("grpc", grpc_url, data)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            long_results.append({"ok": False, "error": str(exc)[:200],
                                 "seconds": round(time.monotonic() - started, 1)})
            return
        heard = text.lower().count("not what your country")
        expected = speech_parts(args.long_hours * 3600, args.long_speech_every)
        long_results.append({"ok": heard >= expected, "parts_heard": heard,
                             "parts_said": expected,
                             "seconds": round(time.monotonic() - started, 1)})

    long_done = asyncio.Event()

    async def sampler() -> None:
        while time.monotonic() < deadline or not long_done.is_set():
            await asyncio.sleep(1)
            memory_samples.append(memory())
            sample_pss()

    async def long_uploads() -> None:
        if args.long_uploads:
            # distinct audio per upload, so no cache answers one for another
            uploads = [await asyncio.to_thread(long_opus, args.long_hours * 3600,
                                               args.long_speech_every, seed=i)
                       for i in range(args.long_uploads)]
            await asyncio.gather(*(long_upload(i, d) for i, d in enumerate(uploads)))
        long_done.set()

    started = time.monotonic()
    await asyncio.gather(sampler(), long_uploads(), *(client(i) for i in range(args.clients)))
    wall = time.monotonic() - started
    memory_samples.append(memory())
    sample_pss()
    settled = pss_samples[min(SETTLED_AFTER_S, len(pss_samples) - 1)]
    return {
        "clients": args.clients, "seconds": round(wall, 1), **counts,
        "errors": errors,
        "wrong_samples": wrong_samples,
        "requests_per_second": round(counts["requests"] / wall, 2),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 3) if latencies else None,
        "server_rss_mib_start": round(memory_samples[0] / 2**20, 1),
        "server_rss_mib_end": round(memory_samples[-1] / 2**20, 1),
        "server_rss_mib_peak": round(max(memory_samples) / 2**20, 1),
        "server_pss_mib_start": round(pss_samples[0] / 2**20, 1),
        "server_pss_mib_end": round(pss_samples[-1] / 2**20, 1),
        "server_pss_mib_peak": round(max(pss_samples) / 2**20, 1),
        f"server_pss_mib_after_{SETTLED_AFTER_S}s": round(settled / 2**20, 1),
        f"server_pss_growth_after_{SETTLED_AFTER_S}s_percent":
            round(100.0 * (pss_samples[-1] - settled) / settled, 1) if settled else None,
        "server_pss_mib_by_model_start": _mib(idle_by_model),
        "server_pss_mib_by_model_at_peak": _mib(at_peak),
        "server_pss_mib_by_model_peak": _mib(peak_by_model),
        "server_pss_mib_by_model_end": _mib(pss_by_model()),
        "long_uploads": long_results,
    }


def _mib(by_model: dict) -> dict:
    return {name: round(value / 2**20, 1) for name, value in sorted(by_model.items())}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    server = None
    if args.http_url and args.grpc_url:
        http_url, grpc_url, memory, pss = args.http_url, args.grpc_url, (lambda: 0), (lambda: 0)
        by_model = dict
    else:
        server = ManagedServer(env={"WHISPER_MODEL": args.model} if args.model else None).start()
        http_url, grpc_url = server.http_url, server.grpc_url
        memory, pss, by_model = server.rss_bytes, server.pss_bytes, server.pss_by_model
    try:
        report = asyncio.run(soak(args, http_url, grpc_url, memory, pss, by_model))
        if server is not None:
            report["server_ready_after"] = server.is_ready()
    finally:
        if server is not None:
            server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    long_ok = all(r["ok"] for r in report["long_uploads"])
    return 0 if report["failed"] == 0 and report["wrong"] == 0 and long_ok else 1


if __name__ == "__main__":
    sys.exit(main())
