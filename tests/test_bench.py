"""Smoke test of scripts/bench --quick: it runs end to end, writes every section, the numbers are
sane, and nothing it started is left running. Speed is never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.server]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), "--quick",
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"scripts/bench failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out, json.loads((out / "bench.json").read_text()), proc.stdout


def _sane_run(row):
    assert row["requests_ok"] == row["requests_planned"] > 0, row.get("error_samples")
    assert row["errors"] == 0, row.get("error_samples")
    assert row["audio_s"] > 0 and row["wall_s"] > 0
    assert row["throughput_x_realtime"] > 0
    lat = row["latency_s"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    # tiny.en on these recordings is far from perfect (hotwords.mp3 needs a prompt), but a
    # broken pipeline gives WER near 1.
    assert 0 <= row["wer_mean"] < 0.6
    assert 0 <= row["cer_mean"] < 0.6


def test_sections(bench):
    out, data, _ = bench
    for key in ("machine", "git", "config", "served", "peers", "best_peer", "notes", "outputs"):
        assert key in data, key
    machine = data["machine"]
    assert machine["cores"] >= 1 and machine["ram_gib"] > 0 and machine["python"]
    assert machine["versions"]["faster-whisper"] and machine["versions"]["tritonclient"]
    assert data["config"]["model"] == "tiny.en" and data["config"]["compute_type"] == "int8"
    assert (out / "bench.md").is_file()
    assert (out / "bench.png").is_file() == (data["outputs"]["png"] is not None)


def test_served_levels(bench):
    _, data, _ = bench
    served = data["served"]
    levels = served["levels"]
    assert {(r["protocol"], r["concurrency"]) for r in levels} == {
        (p, c) for p in ("grpc", "http") for c in (1, 4)}
    for row in levels:
        _sane_run(row)
        batches = {int(k): v for k, v in row["engine_batch_sizes"].items()}
        assert batches and all(1 <= size <= 16 and n > 0 for size, n in batches.items())
        assert row["engine_windows"] >= row["requests_ok"]
        assert row["front_requests"] == row["requests_ok"]
        assert row["peak_rss_bytes"] > 0
    assert served["peak_rss_bytes"] >= max(r["peak_rss_bytes"] for r in levels)


def test_peers(bench):
    _, data, _ = bench
    assert {p["kind"] for p in data["peers"]} == {"old", "tuned", "batched"}
    for peer in data["peers"]:
        assert peer["exit_code"] == 0, peer.get("log_tail")
        _sane_run(peer)
        assert peer["peak_rss_bytes"] > 50 * 2**20
        assert peer["requests_ok"] == data["served"]["levels"][0]["requests_ok"]
    best = data["best_peer"]["short"]["throughput"]
    assert best == max(p["throughput_x_realtime"] for p in data["peers"])
    for row in data["served"]["levels"] + data["peers"]:
        assert row["vs_best_peer"] == pytest.approx(row["throughput_x_realtime"] / best)


def test_nothing_left_running(bench):
    _, data, _ = bench
    served = data["served"]
    assert served["exit_code"] == 0
    assert served["left_running"] == []
    port = served["http_url"].rsplit(":", 1)[1]
    mine = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"--http-port={port}".encode() in (proc / "cmdline").read_bytes():
                mine.append(int(proc.name))
        except OSError:
            pass
    assert not mine, f"the bench's server is still running: {mine}"


def test_markdown_printed(bench):
    _, data, stdout = bench
    assert "| served | grpc | 1 |" in stdout and "| peer tuned |" in stdout


# --- the corpus workload, cut short: 3 evalset files a level, one protocol, one peer -------------

CORPUS_ARGS = ["--model", "tiny.en", "--workload", "corpus", "--language", "both",
               "--concurrency", "2", "--protocols", "grpc", "--requests", "3", "--peers", "tuned"]


@pytest.fixture(scope="module")
def corpus_bench(tmp_path_factory):
    from whisper_ops import recordings

    if not recordings.evalset_available():
        pytest.skip("../shared/evalset not found")
    out = tmp_path_factory.mktemp("bench-corpus")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), *CORPUS_ARGS,
                           "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"scripts/bench failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return out, json.loads((out / "bench.json").read_text()), proc.stdout


def test_corpus_levels_languages_and_report(corpus_bench):
    _, data, stdout = corpus_bench
    config = data["config"]
    assert config["model"] == "tiny.en" and config["workloads"] == ["corpus:detected",
                                                                      "corpus:given"]
    # tiny.en is English-only: the files in other languages are left out, and said so.
    skipped = config["corpus_skipped"]
    assert skipped and all(not s.endswith("(en)") for s in skipped)
    levels = data["served"]["levels"]
    assert [(r["workload"], r["protocol"], r["concurrency"]) for r in levels] == [
        ("corpus:detected", "grpc", 2), ("corpus:given", "grpc", 2)]
    assert {(p["workload"], p["kind"]) for p in data["peers"]} == {
        ("corpus:detected", "tuned"), ("corpus:given", "tuned")}
    for row in levels + data["peers"]:
        assert row["requests_ok"] == row["requests_planned"] == 3 and row["errors"] == 0
        assert row["throughput_x_realtime"] > 0 and row["vs_best_peer"] > 0
        assert list(row["languages"]) == ["en"]
        assert 0 <= row["languages"]["en"]["rate"] < 0.6
    assert data["peers"][0]["language_detected_of"] == 3
    assert "## Workload `corpus:given`" in stdout and "| en WER |" in stdout
    assert "evalset files left out" in stdout
