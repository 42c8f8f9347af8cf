"""Soak test: N clients send real recordings back to back for a fixed time, loopback only.

Every request is checked (language and words of the reference transcript), and the server
processes' resident memory is sampled, so a leak or a slow failure shows up as numbers.
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
    parser.add_argument("--out", default="bench-results/soak.json")
    return parser.parse_args(argv)


async def soak(args, http_url: str, grpc_url: str, memory) -> dict:
    rng = np.random.default_rng(0)
    clips = [(r, samples(r)) for r in ALL]
    deadline = time.monotonic() + args.seconds
    counts = {"requests": 0, "ok": 0, "wrong": 0, "failed": 0}
    errors: dict = {}
    latencies: List[float] = []
    memory_samples = [memory()]

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

    async def sampler() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(5)
            memory_samples.append(memory())

    started = time.monotonic()
    await asyncio.gather(sampler(), *(client(i) for i in range(args.clients)))
    wall = time.monotonic() - started
    memory_samples.append(memory())
    return {
        "clients": args.clients, "seconds": round(wall, 1), **counts,
        "errors": errors,
        "requests_per_second": round(counts["requests"] / wall, 2),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 3) if latencies else None,
        "server_rss_mib_start": round(memory_samples[0] / 2**20, 1),
        "server_rss_mib_end": round(memory_samples[-1] / 2**20, 1),
        "server_rss_mib_peak": round(max(memory_samples) / 2**20, 1),
    }


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    server = None
    if args.http_url and args.grpc_url:
        http_url, grpc_url, memory = args.http_url, args.grpc_url, (lambda: 0)
    else:
        server = ManagedServer(env={"WHISPER_MODEL": args.model} if args.model else None).start()
        http_url, grpc_url, memory = server.http_url, server.grpc_url, server.rss_bytes
    try:
        report = asyncio.run(soak(args, http_url, grpc_url, memory))
        if server is not None:
            report["server_ready_after"] = server.is_ready()
    finally:
        if server is not None:
            server.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["failed"] == 0 and report["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
