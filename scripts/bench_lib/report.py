"""Figures of one run (throughput, latency percentiles, errors, WER/CER) and the outputs:
bench.json (everything), bench.md (tables), bench.png (if matplotlib is installed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from whisper_ops.recordings import corpus_rates
from whisper_service.accuracy import cer, error_count, uses_characters, wer

from bench_lib.workloads import Request, is_corpus

# Character edit distance is quadratic in pure Python: skip CER for long references (the
# long workload), whose WER says the same.
MAX_CER_REFERENCE_CHARS = 2000


def _mean(values: Sequence[float]) -> Optional[float]:
    return float(np.mean(values)) if len(values) else None


def summarize(requests: Sequence[Request], run: Dict) -> Dict:
    """Figures of one measured level (served) or one peer run, from its per-request results."""
    results = run.get("results") or [None] * len(requests)
    wall = run.get("wall_s")
    done = [(req, res) for req, res in zip(requests, results) if res is not None]
    ok = [(req, res) for req, res in done if res["error"] is None]
    errors = [res["error"] for _, res in done if res["error"] is not None]
    latencies = np.array([res["latency"] for _, res in ok]) if ok else np.array([])
    audio_s = float(sum(req.seconds for req, _ in ok))
    wers = [wer(req.reference, res["text"]) for req, res in ok if req.language == "en"]
    cers = [cer(req.reference, res["text"]) for req, res in ok
            if req.reference and len(req.reference) <= MAX_CER_REFERENCE_CHARS]

    def pct(q: float, values: np.ndarray = latencies) -> Optional[float]:
        return float(np.percentile(values, q)) if values.size else None

    # fairness: the evalset clips' latency apart from the long and fallback intruders'
    intruders = {req.kind for req in requests} - {"corpus"}
    clips = np.array([res["latency"] for req, res in ok if req.kind == "corpus"])
    clip_latency = ({"p50": pct(50, clips), "p95": pct(95, clips), "requests": int(clips.size),
                     "intruders": {kind: [round(res["latency"], 2) for req, res in ok
                                          if req.kind == kind] for kind in sorted(intruders)}}
                    if intruders and clips.size else None)

    return {
        "requests_planned": len(requests),
        "requests_done": len(done),
        "requests_ok": len(ok),
        "errors": len(errors) + (len(requests) - len(done) if run.get("failed") else 0),
        "not_started": len(requests) - len(done),
        "error_samples": sorted(set(errors))[:3],
        "audio_s": audio_s,
        "wall_s": wall,
        "throughput_x_realtime": audio_s / wall if wall else None,
        "requests_per_s": len(ok) / wall if wall else None,
        "latency_s": {"mean": _mean(latencies), "p50": pct(50), "p95": pct(95), "p99": pct(99),
                      "max": float(latencies.max()) if latencies.size else None},
        "wer_mean": _mean(wers),
        "wer_requests": len(wers),
        "cer_mean": _mean(cers),
        "cer_requests": len(cers),
        "sample_text": ok[0][1]["text"][:200] if ok else None,
        **({"clip_latency_s": clip_latency} if clip_latency else {}),
        **_per_language(requests, done, ok),
    }


def _per_language(requests: Sequence[Request], done, ok) -> Dict:
    """Corpus requests: corpus-level WER (CER for Chinese) per language, scored as the evalset
    README says (Whisper's normalisers), and how often the detected language was right."""
    if not any(req.kind == "corpus" for req in requests):
        return {}
    requests = [req for req in requests if req.kind == "corpus"]
    done = [(req, res) for req, res in done if req.kind == "corpus"]
    ok = [(req, res) for req, res in ok if req.kind == "corpus"]
    rates = corpus_rates((req.language, req.reference, res["text"]) for req, res in ok)
    planned: Dict[str, int] = {}
    for req in requests:
        planned[req.language] = planned.get(req.language, 0) + 1
    answered: Dict[str, int] = {}
    for req, _ in ok:
        answered[req.language] = answered.get(req.language, 0) + 1
    detected = [(req, res) for req, res in ok
                if req.given_language is None and res.get("language")]
    return {
        "worst_files": _worst_files(ok),
        "languages": {
            lang: {"metric": "CER" if uses_characters(lang) else "WER",
                   "rate": rates[lang][0] if lang in rates else None,
                   "errors": rates[lang][1] if lang in rates else None,
                   "units": rates[lang][2] if lang in rates else None,
                   "requests_planned": planned[lang], "requests_ok": answered.get(lang, 0)}
            for lang in sorted(planned)},
        "language_detected_right": (sum(1 for req, res in detected
                                        if res["language"] == req.language)
                                    if detected else None),
        "language_detected_of": len(detected) or None,
    }


WORST_FILES = 5


def _worst_files(ok) -> List[Dict]:
    """The answered corpus files with the most errors: what a level's rate is made of (a file
    taken for another language can cost more than the rest of the level together)."""
    scored = []
    for req, res in ok:
        errors, units = error_count(req.language, req.reference, res["text"])
        if errors:
            scored.append({"file": req.label, "language": req.language,
                           "detected": res.get("language"), "errors": errors, "units": units,
                           "text": (res["text"] or "")[:160]})
    return sorted(scored, key=lambda f: -f["errors"])[:WORST_FILES]


def add_ratios(bench: Dict) -> None:
    """Best peer per workload, and every row's throughput relative to it."""
    best: Dict[str, Dict] = {}
    for peer in bench["peers"]:
        value = peer.get("throughput_x_realtime")
        if value and (peer["workload"] not in best or value > best[peer["workload"]]["throughput"]):
            best[peer["workload"]] = {"peer": peer["kind"], "throughput": value}
    bench["best_peer"] = best
    for row in bench["served"]["levels"] + bench["peers"]:
        ref = best.get(row["workload"])
        value = row.get("throughput_x_realtime")
        row["vs_best_peer"] = value / ref["throughput"] if ref and value else None


# ----------------------------------------------------------------------------------- text
def _f(value, digits: int = 2, scale: float = 1.0) -> str:
    return "–" if value is None else f"{value * scale:.{digits}f}"


def _batches(row: Dict) -> str:
    sizes = row.get("engine_batch_sizes")
    if not sizes:
        return "–"
    parts = " ".join(f"{k}×{v}" for k, v in sizes.items())
    return f"{_f(row.get('engine_mean_batch_size'), 1)} ({parts})"


def _mib(value) -> str:
    return "–" if not value else f"{value / 2**20:.0f}"


def _git(git: Optional[Dict]) -> str:
    if not git or not git.get("commit"):
        return "unknown"
    changed = git.get("changed_files") or []
    if not changed:
        return f"commit {git['commit'][:12]} (clean)"
    diff = f", diff {git['diff_sha256']}" if git.get("diff_sha256") else ""
    return f"commit {git['commit'][:12]} plus changed or untracked files{diff}: {', '.join(changed)}"


def markdown(bench: Dict) -> str:
    m, c = bench["machine"], bench["config"]
    lines = [
        "# Benchmark: served Triton system vs in-process faster-whisper",
        "",
        f"- date: {m['date']}; machine: {m['cpu_model']}, {m['cores']} cores "
        f"(affinity {m['cores_available']}), {m['ram_gib']:.1f} GiB RAM, load average before "
        f"the run {m['loadavg_start']}",
        f"- model: {c['model']} ({c['compute_type']}, CPU); python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- server: {bench['served'].get('triton_version') or '?'}; "
        f"{'managed by the bench' if bench['served'].get('managed') else 'external'} "
        f"at {bench['served'].get('http_url')}; options: {c['options']}",
        f"- workloads: {c['workload_notes']}",
        f"- code: {_git(bench.get('git'))}",
        "- throughput = audio seconds / wall seconds (×realtime); latency per request in s; "
        "vs best peer = throughput / the best peer's on the same workload; WER/CER = mean over "
        "requests; engine batches = mean windows per engine execution (size×count); peak RSS = "
        "server + all stubs (sampled every 0.5 s), or the peer process's ru_maxrss",
    ]
    if c.get("corpus_skipped"):
        lines.append(f"- corpus: {len(c['corpus_skipped'])} evalset files left out "
                     f"({c.get('corpus_skipped_reason')}): {', '.join(c['corpus_skipped'])}")
    if c.get("corpus_missing"):
        lines.append(f"- corpus: {c['corpus_missing']}")
    for workload in c["workloads"]:
        rows = [r for r in bench["served"]["levels"] if r["workload"] == workload]
        peers = [p for p in bench["peers"] if p["workload"] == workload]
        if not rows and not peers:
            continue
        if is_corpus(workload):
            lines += _corpus_table(workload, rows, peers)
            continue
        lines += ["", f"## Workload `{workload}`", "",
                  "| system | proto | conc | req ok/err | audio s | wall s | ×RT | vs best peer "
                  "| p50 s | p95 s | p99 s | WER | CER | engine batches | peak RSS MiB |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for r in rows + peers:
            lat = r.get("latency_s", {})
            system = "served" if r in rows else f"peer {r['kind']}"
            proto = r.get("protocol", "in-proc")
            conc = r.get("concurrency", r.get("threads"))
            lines.append(
                f"| {system} | {proto} | {conc} | {r['requests_ok']}/{r['errors']} "
                f"| {_f(r['audio_s'], 0)} | {_f(r['wall_s'], 1)} "
                f"| {_f(r['throughput_x_realtime'], 1)} | {_f(r.get('vs_best_peer'), 2)} "
                f"| {_f(lat.get('p50'))} | {_f(lat.get('p95'))} | {_f(lat.get('p99'))} "
                f"| {_f(r['wer_mean'], 3)} | {_f(r['cer_mean'], 3)} | {_batches(r)} "
                f"| {_mib(r.get('peak_rss_bytes'))} |")
    levels = bench["served"]["levels"]
    if levels:
        lines += ["", "## Where the served time goes (means per request, ms)", "",
                  "| workload | proto | conc | front queue | front compute | engine queue "
                  "| engine compute | engine busy % |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in levels:
            lines.append(
                f"| {r['workload']} | {r['protocol']} | {r['concurrency']} "
                f"| {_f(r.get('front_queue_ms_mean'), 0)} "
                f"| {_f(r.get('front_compute_infer_ms_mean'), 0)} "
                f"| {_f(r.get('engine_queue_ms_mean'), 0)} "
                f"| {_f(r.get('engine_compute_infer_ms_mean'), 0)} "
                f"| {_f(r.get('engine_busy_fraction'), 0, 100)} |")
    lines += _fairness_table(levels)
    served = bench["served"]
    lines += ["", f"Served peak RSS over the whole run: {_mib(served.get('peak_rss_bytes'))} MiB "
              f"(idle after warm-up: {_mib(served.get('idle_rss_bytes'))} MiB)."]
    if served.get("error"):
        lines.append(f"- SERVED RUN INCOMPLETE: {served['error']}")
    for r in levels:
        if r.get("failed"):
            lines.append(f"- level {r['workload']} {r['protocol']} c={r['concurrency']} failed: "
                         f"{r['failed']}")
    for note in bench.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"


def _corpus_table(workload: str, rows: List[Dict], peers: List[Dict]) -> List[str]:
    """A corpus workload: the usual figures, then corpus-level WER/CER per language (not the
    mean per request), and for the language detected how many files it was right on."""
    languages = sorted({lang for r in rows + peers for lang in r.get("languages", {})},
                       key=lambda lang: (lang != "en", lang != "zh", lang))
    mode = workload.partition(":")[2]
    note = ("language given: each file's evalset language" if mode == "given"
            else "language detected by the model")
    head = ("| system | proto | conc | req ok/err | audio s | wall s | ×RT | vs best peer "
            "| p50 s | p95 s | "
            + " | ".join(f"{lang} {'CER' if uses_characters(lang) else 'WER'}"
                         for lang in languages)
            + (" | lang right" if mode != "given" else "") + " | peak RSS MiB |")
    cols = 10 + len(languages) + (1 if mode != "given" else 0) + 1
    align = ["---", "---"] + ["---:"] * (cols - 2)
    lines = ["", f"## Workload `{workload}` ({note})", "",
             "Per-language columns: corpus-level error rate over the level's answered files "
             "(errors / reference words, characters for zh), Whisper's normalisers "
             "(whisper_service.accuracy); (n) = files of that language.", "",
             head, "|" + "|".join(align) + "|"]
    for r in rows + peers:
        lat = r.get("latency_s", {})
        system = "served" if r in rows else f"peer {r['kind']}"
        per = r.get("languages", {})
        cells = []
        for lang in languages:
            entry = per.get(lang)
            if not entry:
                cells.append("–")
                continue
            missing = entry["requests_planned"] - entry["requests_ok"]
            cells.append(f"{_f(entry['rate'], 3)} ({entry['requests_ok']}"
                         + (f", {missing} failed" if missing else "") + ")")
        right = ""
        if mode != "given":
            right = (f" | {r['language_detected_right']}/{r['language_detected_of']}"
                     if r.get("language_detected_of") else " | –")
        lines.append(
            f"| {system} | {r.get('protocol', 'in-proc')} | "
            f"{r.get('concurrency', r.get('threads'))} | {r['requests_ok']}/{r['errors']} "
            f"| {_f(r['audio_s'], 0)} | {_f(r['wall_s'], 1)} "
            f"| {_f(r['throughput_x_realtime'], 1)} | {_f(r.get('vs_best_peer'), 2)} "
            f"| {_f(lat.get('p50'))} | {_f(lat.get('p95'))} | " + " | ".join(cells)
            + right + f" | {_mib(r.get('peak_rss_bytes'))} |")
    for r in rows + peers:
        worst = r.get("worst_files")
        if worst:
            system = (f"served {r['protocol']} c={r['concurrency']}" if r in rows
                      else f"peer {r['kind']}")
            lines.append(f"- most errors, {system}: " + "; ".join(
                f"{w['file']} ({w['errors']}/{w['units']}"
                + (f", taken for {w['detected']}" if w["detected"] not in (None, w["language"])
                   else "") + ")" for w in worst))
    return lines


def _fairness_table(levels: List[Dict]) -> List[str]:
    """Each fairness level's evalset clips against corpus:detected at the same protocol and
    concurrency: how much the long recording and the fallback clips delayed them."""
    rows = [r for r in levels if r["workload"] == "fairness" and r.get("clip_latency_s")]
    if not rows:
        return []
    lines = ["", "## Head-of-line blocking (`fairness`: evalset clips beside a long recording and "
             "fallback clips)", "",
             "Latency of the evalset clips only, in s; alone = `corpus:detected` at the same "
             "protocol and concurrency; target: p95 in the mix at most 2× alone.", "",
             "| proto | conc | clips | p50 alone | p95 alone | p50 mix | p95 mix | p95 mix / alone "
             "| long s | fallback clips s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        alone = next((a for a in levels if a["workload"] == "corpus:detected"
                      and a["protocol"] == r["protocol"]
                      and a["concurrency"] == r["concurrency"]), None)
        alone_lat = (alone or {}).get("latency_s", {})
        mix = r["clip_latency_s"]
        ratio = (mix["p95"] / alone_lat["p95"]
                 if mix.get("p95") and alone_lat.get("p95") else None)
        intruders = mix.get("intruders", {})
        lines.append(
            f"| {r['protocol']} | {r['concurrency']} | {mix['requests']} "
            f"| {_f(alone_lat.get('p50'))} | {_f(alone_lat.get('p95'))} "
            f"| {_f(mix.get('p50'))} | {_f(mix.get('p95'))} | {_f(ratio)} "
            f"| {', '.join(f'{v:.1f}' for v in intruders.get('long', [])) or '–'} "
            f"| {', '.join(f'{v:.1f}' for v in intruders.get('fallback', [])) or '–'} |")
    return lines


# ----------------------------------------------------------------------------------- plot
def plot(bench: Dict, path: Path) -> Optional[str]:
    """bench.png; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    workloads = [w for w in bench["config"]["workloads"]
                 if any(r["workload"] == w for r in bench["served"]["levels"] + bench["peers"])]
    if not workloads:
        return "nothing measured"
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 4.2 * len(workloads)), squeeze=False)
    colors = {"old": "tab:red", "tuned": "tab:green", "batched": "tab:purple"}
    for row, workload in enumerate(workloads):
        for col, (key, label) in enumerate((("throughput_x_realtime", "throughput (× realtime)"),
                                            ("p95", "p95 latency (s)"))):
            ax = axes[row][col]
            for protocol, style in (("grpc", "o-"), ("http", "s--")):
                pts = sorted((r["concurrency"], _value(r, key)) for r in bench["served"]["levels"]
                             if r["workload"] == workload and r["protocol"] == protocol
                             and _value(r, key) is not None)
                if pts:
                    ax.plot(*zip(*pts), style, label=f"served {protocol}")
            for peer in bench["peers"]:
                value = _value(peer, key)
                if peer["workload"] == workload and value is not None:
                    ax.axhline(value, color=colors.get(peer["kind"], "gray"), linestyle=":",
                               label=f"peer {peer['kind']} ({peer.get('threads')} thr)")
            ax.set_xscale("log")
            ticks = sorted({r["concurrency"] for r in bench["served"]["levels"]
                            if r["workload"] == workload})
            if ticks:
                ax.set_xticks(ticks, [str(t) for t in ticks])
                ax.minorticks_off()
            ax.set_ylim(bottom=0)
            ax.set_xlabel("concurrency (closed-loop clients)")
            ax.set_ylabel(label)
            ax.set_title(f"{workload}: {label}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
    c = bench["config"]
    fig.suptitle(f"{c['model']} {c['compute_type']} on {bench['machine']['cores']} CPU cores "
                 f"({bench['machine']['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def _value(row: Dict, key: str):
    return row.get("latency_s", {}).get(key) if key.startswith("p") else row.get(key)


def write(bench: Dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(bench)
    (out / "bench.md").write_text(text)
    why_not = plot(bench, out / "bench.png")
    bench["outputs"] = {"json": str(out / "bench.json"), "markdown": str(out / "bench.md"),
                        "png": None if why_not else str(out / "bench.png"),
                        "png_missing_reason": why_not}
    (out / "bench.json").write_text(json.dumps(bench, indent=1, ensure_ascii=False))
    return text
