"""scripts/bench: the command line and the order of one run.

1. peers (each in its own child process, while no managed server is running yet),
2. the served system (a ManagedServer on free ports, or --url), level by level:
   workload x concurrency x protocol, each with Triton statistics before/after and RSS sampling,
3. bench.json, bench.md, bench.png in --out, and the Markdown printed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from whisper_ops import recordings as corpus
from whisper_service.bundled_models import bundled_model_dir

from bench_lib import load, peers, report
from bench_lib.workloads import CORPUS_MODES, WorkloadBuilder, corpus_workloads, is_corpus

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ("model `whisper` defaults: beam_size 5, temperature 0 with fallback, no VAD, "
           "language detected (peers: faster-whisper transcribe defaults with beam_size=5)")


def _ints(text: str) -> List[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str, allowed) -> List[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    for name in names:
        if name not in allowed:
            raise argparse.ArgumentTypeError(f"{name!r} is not one of {', '.join(allowed)}")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Throughput, latency, accuracy and memory of the served Triton system "
                    "against in-process faster-whisper peers, same model, same recordings.")
    p.add_argument("--model", default=None,
                   help="WHISPER_MODEL for the server and the peers: base (the embedded default; "
                        "tiny.en with --quick), tiny.en, or a CTranslate2 directory")
    p.add_argument("--compute-type", default="int8")
    p.add_argument("--workload", default=None,
                   help="comma list of corpus,short,long,mix,fairness (default: corpus when the "
                        "evalset is there, else short plus a quicker long run: --long-concurrency levels "
                        "on --long-protocols only; --quick: short)")
    p.add_argument("--language", default="both", choices=("both",) + CORPUS_MODES,
                   help="corpus: the language detected, given with each file (its evalset "
                        "language, to the server and the peers), or both as two sub-workloads "
                        "corpus:detected and corpus:given (default both)")
    p.add_argument("--evalset", default=str(corpus.EVALSET_DIR),
                   help="the evaluation set of the corpus workload (default ../shared/evalset)")
    p.add_argument("--concurrency", default=None,
                   help="closed-loop levels for corpus, short and mix (default 1,4,20,64; "
                        "--quick 1,4)")
    p.add_argument("--protocols", default="grpc,http")
    p.add_argument("--requests", type=int, default=None,
                   help="requests per short/mix/corpus level, raised to the concurrency when "
                        "lower (default 30, corpus: every evalset file once; --quick 8); the "
                        "peers run the same count")
    p.add_argument("--long-concurrency", default="1,4",
                   help="levels of the long workload (default 1,4)")
    p.add_argument("--long-protocols", default="grpc",
                   help="protocols of the long workload (default grpc)")
    p.add_argument("--long-requests", type=int, default=2,
                   help="requests per long level, raised to the concurrency (default 2)")
    p.add_argument("--long-seconds", type=float, default=600.0,
                   help="length of a long recording (default 600)")
    p.add_argument("--peers", default=",".join(peers.PEERS),
                   help="which in-process peers to run (old,tuned,batched); empty for none")
    p.add_argument("--quick", action="store_true",
                   help="smoke run (~3 min): short only, concurrency 1,4, 8 requests")
    p.add_argument("--url", default=None,
                   help="HTTP host:port of a running server instead of starting one")
    p.add_argument("--grpc-url", default=None,
                   help="its gRPC host:port (default: the HTTP port + 1)")
    p.add_argument("--level-seconds", type=float, default=600.0,
                   help="time budget per level: no new request starts after it (default 600)")
    p.add_argument("--request-timeout", type=float, default=900.0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--all-recordings", action="store_true",
                   help="short clips from every recording, the Mandarin one included, even for "
                        "an English-only model (what a client sending all of them would see)")
    p.add_argument("--out", default="bench-results", help="output directory")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite bench.md and bench.png from --out/bench.json, measure nothing")
    args = p.parse_args(argv)
    args.notes = []
    args.corpus_requests = args.requests or (8 if args.quick else None)  # None: every file
    workload = args.workload
    if workload is None:
        if args.quick:
            workload = "short"
        elif corpus.evalset_available(Path(args.evalset)):
            workload = "corpus"
        else:
            workload = "short,long"
            args.notes.append(f"no evalset at {args.evalset}: the default workload is short,long "
                              "instead of corpus")
            print(f"scripts/bench: note: {args.notes[-1]}", file=sys.stderr)
    names = _names(workload, ("corpus", "short", "long", "mix", "fairness"))
    for name in ("corpus", "fairness"):
        if name in names and not corpus.evalset_available(Path(args.evalset)):
            p.error(f"--workload {name} needs the evalset: no manifest.tsv in {args.evalset}")
    modes = CORPUS_MODES if args.language == "both" else (args.language,)
    args.workloads = [w for name in names
                      for w in (corpus_workloads(modes) if name == "corpus" else [name])]
    args.concurrency = _ints(args.concurrency or ("1,4" if args.quick else "1,4,20,64"))
    args.long_concurrency = _ints(args.long_concurrency)
    args.protocols = _names(args.protocols, ("grpc", "http"))
    args.long_protocols = _names(args.long_protocols, ("grpc", "http"))
    args.requests = args.requests or (8 if args.quick else 30)
    args.model = args.model or ("tiny.en" if args.quick else "base")
    args.peers = _names(args.peers, peers.PEERS)
    return args


def plan(args) -> List[Tuple[str, str, int, int]]:
    """(workload, protocol, concurrency, requests) of every served level, in order."""
    levels = []
    for workload in args.workloads:
        if workload == "long":
            for c in args.long_concurrency:
                for protocol in args.long_protocols:
                    levels.append((workload, protocol, c, max(args.long_requests, c)))
        else:
            count = (args.corpus_requests if is_corpus(workload) or workload == "fairness"
                     else args.requests)
            for c in args.concurrency:
                for protocol in args.protocols:
                    levels.append((workload, protocol, c, max(count, c)))
    return levels


def corpus_files(args, english_only: bool):
    """The evalset files of the corpus workload, and those left out (English-only model); a
    corpus level's request count defaults to the number of files (each once)."""
    if not any(is_corpus(w) or w == "fairness" for w in args.workloads):
        return [], []
    files = list(corpus.evalset_files(Path(args.evalset)))
    skipped = [f for f in files if f.language != "en"] if english_only else []
    files = [f for f in files if f not in skipped]
    if args.corpus_requests is None:
        args.corpus_requests = len(files)
    return files, skipped


def git_state() -> Dict:
    """Which code was measured: the commit, and the files changed on top of it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
    diff = git("diff", "HEAD")
    return {"commit": git("rev-parse", "HEAD").strip() or None,
            "changed_files": [line[3:] for line in git("status", "--porcelain").splitlines()],
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None}


def machine_info() -> Dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                           if line.startswith("MemTotal:")))
    except (OSError, StopIteration):
        mem_kib = 0
    versions = {}
    for dist in ("faster-whisper", "ctranslate2", "tritonclient", "nvidia-pytriton", "numpy",
                 "av", "soundfile", "onnxruntime"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "ram_gib": mem_kib / 2**20,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        import json

        bench = json.loads((out / "bench.json").read_text())
        print(report.write(bench, out))
        return 0

    english_only = args.model.endswith(".en") and not args.all_recordings
    model_dir = args.model if os.path.isdir(args.model) else bundled_model_dir(args.model)
    if model_dir is None:
        print(f"model {args.model!r} is neither bundled (tiny.en, base) nor a directory",
              file=sys.stderr)
        return 2
    recordings = corpus.ENGLISH if english_only else corpus.ALL
    files, skipped = corpus_files(args, english_only)
    builder = WorkloadBuilder(recordings, args.long_seconds, args.seed, files,
                              Path(args.evalset))
    levels = plan(args)
    bench: Dict = {
        "schema": 1,
        "machine": machine_info(),
        "git": git_state(),
        "config": {
            "model": args.model, "model_dir": str(model_dir), "compute_type": args.compute_type,
            "device": "cpu", "workloads": args.workloads, "concurrency": args.concurrency,
            "protocols": args.protocols, "requests": args.requests, "quick": args.quick,
            "long_concurrency": args.long_concurrency, "long_protocols": args.long_protocols,
            "long_seconds": args.long_seconds, "seed": args.seed, "english_only": english_only,
            "recordings": [r.name for r in recordings], "peers": args.peers, "options": OPTIONS,
            "levels": [{"workload": w, "protocol": p, "concurrency": c, "requests": n}
                       for w, p, c, n in levels],
            "language": args.language,
            "evalset": args.evalset if files else None,
            "corpus_files": [f.path for f in files],
            "corpus_requests": args.corpus_requests if files else None,
            "corpus_skipped": [f"{f.path} ({f.language})" for f in skipped],
            "corpus_skipped_reason": ("English-only model: files in other languages are left "
                                      "out (--all-recordings keeps them)") if skipped else None,
            "workload_notes": (
                f"short = {', '.join(r.name for r in recordings)} cycled, each request shifted "
                "1-32 ms, random gain 0.8-1.0 and dither, re-encoded WAV (distinct audio per "
                f"request); long = English recordings joined to >= {args.long_seconds:.0f} s, "
                "same perturbation, FLAC; mix = every 5th request long; fairness = corpus:detected with "
                "the long recording sent first and 3 reversed evalset clips spread among the "
                "clips (no peers)"
                + ("; the Mandarin recording is left out: English-only model"
                   if english_only else "; WER over English requests, CER over all")
                + (f"; corpus = {len(files)} evalset files ({_languages(files)}), languages "
                   "interleaved, cycled to the level's request count, same perturbation, WAV; "
                   "corpus:detected = language detected, corpus:given = each file's language "
                   "sent with it (server and peers); scored per language over the level "
                   "(WER, CER for zh; Whisper's normalisers)" if files else "")),
        },
        "served": {"levels": []},
        "peers": [],
        "notes": list(args.notes),
    }
    log(f"model {args.model} ({model_dir}); {len(levels)} served levels; peers {args.peers}")

    # ---- 1. peers, with no managed server running yet
    for workload in args.workloads:
        if workload == "fairness":
            continue  # compared with corpus:detected served, not with the peers
        count = max((n for w, _, _, n in levels if w == workload), default=args.requests)
        if workload != "long":
            count = args.corpus_requests if is_corpus(workload) else args.requests
        requests = builder.build(workload, count)
        for kind in args.peers:
            log(f"peer {kind}: {workload}, {count} requests")
            result = peers.run_peer(kind, str(model_dir), args.compute_type,
                                    [r.payload for r in requests], args.level_seconds,
                                    timeout=args.level_seconds + 300,
                                    languages=[r.given_language for r in requests])
            entry = {k: v for k, v in result.items() if k != "results"}
            entry.update({"workload": workload, "requests": count})
            entry.update(report.summarize(requests, result))
            if result.get("failed"):
                log(f"peer {kind} failed: {result['failed']}\n{result.get('log_tail')}")
            bench["peers"].append(entry)
            log(f"peer {kind}: {_short(entry)}")

    # ---- 2. the served system
    server = None
    sampler = None
    try:
        if args.url:
            http_url = args.url
            host, port = http_url.rsplit(":", 1)
            grpc_url = args.grpc_url or f"{host}:{int(port) + 1}"
        else:
            from whisper_ops.managed_server import ManagedServer

            log("starting the server")
            t0 = time.monotonic()
            server = ManagedServer(env={"WHISPER_MODEL": args.model,
                                        "WHISPER_COMPUTE_TYPE": args.compute_type}).start()
            bench["served"]["start_s"] = time.monotonic() - t0
            http_url, grpc_url = server.http_url, server.grpc_url
            sampler = load.RssSampler(server.rss_bytes).start()
        served = bench["served"]
        served.update({"managed": server is not None, "http_url": http_url, "grpc_url": grpc_url})
        meta = load.server_metadata(http_url)
        served["triton_version"] = f"{meta.get('name', 'triton')} {meta.get('version', '?')}"
        if server:
            served["server_pid"] = server.server_pid()
            served["stub_pids"] = server.stub_pids()

        log("warming up")
        warm = builder.build("short", 4)
        for protocol in args.protocols:
            run = load.run_level(protocol, grpc_url if protocol == "grpc" else http_url,
                                 warm, 2, args.request_timeout, args.level_seconds)
            bad = [r["error"] for r in run["results"] if r and r["error"]]
            if bad:
                served.setdefault("warmup_errors", []).extend(bad)
        if server:
            time.sleep(1.0)
            served["idle_rss_bytes"] = server.rss_bytes()

        for workload, protocol, concurrency, count in levels:
            requests = builder.build(workload, count)
            url = grpc_url if protocol == "grpc" else http_url
            row = {"workload": workload, "protocol": protocol, "concurrency": concurrency,
                   "requests": count}
            try:
                before = load.snapshot(http_url)
                if sampler:
                    sampler.reset_window()
                run = load.run_level(protocol, url, requests, concurrency, args.request_timeout,
                                     args.level_seconds)
                answered = sum(1 for r in run["results"] if r is not None)
                after = load.settled_snapshot(http_url, before, answered)
                row["peak_rss_bytes"] = sampler.window_peak if sampler else None
                row.update(report.summarize(requests, run))
                row.update(load.stats_delta(before, after, run["wall_s"]))
            except Exception as exc:  # noqa: BLE001 - keep what was measured, say what broke
                failure = f"{type(exc).__name__}: {exc}"
                row.update(report.summarize(requests, {"results": None, "wall_s": None,
                                                       "failed": failure}))
                row["failed"] = failure
            served["levels"].append(row)
            log(f"served {workload} {protocol} c={concurrency}: "
                + (f"FAILED {row['failed']}" if row.get("failed") else _short(row)))
            if server and server.process.poll() is not None:
                served["error"] = (f"the server exited with {server.process.returncode} during "
                                   "the run (was it sent a signal from outside?)")
                served["log_tail"] = server.log_tail(40)
                log(served["error"])
                break
            if row.get("failed") and not load.is_live(http_url):
                served["error"] = f"the server stopped answering: {row['failed']}"
                if server:
                    served["log_tail"] = server.log_tail(40)
                log(served["error"])
                break
    except Exception as exc:  # noqa: BLE001 - the peers' figures are still worth writing
        bench["served"]["error"] = f"{type(exc).__name__}: {exc}"
        if server:
            bench["served"]["log_tail"] = server.log_tail(40)
        log(f"served run failed: {bench['served']['error']}")
    finally:
        if sampler:
            sampler.stop()
            bench["served"]["peak_rss_bytes"] = sampler.peak
            bench["served"]["rss_samples"] = sampler.samples
        if server:
            stubs = server.stub_pids()
            code = server.stop()
            time.sleep(0.5)
            left = [pid for pid in stubs + [bench["served"].get("server_pid")]
                    if pid and Path(f"/proc/{pid}").exists()]
            bench["served"].update({"exit_code": code, "left_running": left})
            log(f"server stopped (exit {code}); left running: {left or 'none'}")

    bench["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report.add_ratios(bench)
    bench["notes"] += _notes(bench)
    text = report.write(bench, out)
    print(text)
    failed = bench["served"].get("error") or any(r.get("failed") for r in bench["served"]["levels"])
    if bench["outputs"]["png_missing_reason"]:
        log(f"no bench.png: {bench['outputs']['png_missing_reason']} "
            "(add matplotlib to the bench/test extra)")
    log(f"wrote {out}/bench.json, bench.md" + ("" if bench["outputs"]["png_missing_reason"]
                                                else ", bench.png"))
    return 1 if failed else 0


def _languages(files) -> str:
    counts: Dict[str, int] = {}
    for f in files:
        counts[f.language] = counts.get(f.language, 0) + 1
    return ", ".join(f"{n} {lang}" for lang, n in counts.items())


def _short(row: Dict) -> str:
    lat = row.get("latency_s", {})
    if row.get("languages"):
        accuracy = ", ".join(f"{lang} {e['metric']} {report._f(e['rate'], 3)}"
                             for lang, e in row["languages"].items())
    else:
        accuracy = f"WER {report._f(row['wer_mean'], 3)}"
    return (f"{row['requests_ok']} ok, {row['errors']} errors, "
            f"{report._f(row['throughput_x_realtime'], 1)}x realtime, "
            f"p50 {report._f(lat.get('p50'))} s, p95 {report._f(lat.get('p95'))} s, "
            + accuracy)


def _notes(bench: Dict) -> List[str]:
    notes = []
    m = bench["machine"]
    if max(m["loadavg_start"][0], m.get("loadavg_end", [0])[0]) > 0.5 * m["cores_available"]:
        notes.append(f"The machine was busy (load average {m['loadavg_start']} at the start, "
                     f"{m.get('loadavg_end')} at the end; other work or the tail of an earlier "
                     "run): timings may be disturbed.")
    for w, best in bench.get("best_peer", {}).items():
        rows = [r for r in bench["served"]["levels"] if r["workload"] == w and r["vs_best_peer"]]
        if rows:
            top = max(rows, key=lambda r: r["vs_best_peer"])
            notes.append(f"{w}: best peer {best['peer']} at {best['throughput']:.1f}x realtime; "
                         f"best served level {top['protocol']} c={top['concurrency']} at "
                         f"{top['throughput_x_realtime']:.1f}x ({top['vs_best_peer']:.2f} of the "
                         "best peer).")
    return notes
