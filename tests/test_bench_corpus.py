"""scripts/bench's corpus workload without a server: which levels and requests it plans, the
languages it sends, that every request's audio is distinct, and how it is scored and reported
(per language, as the evalset README says)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from whisper_ops import recordings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_lib import cli, report  # noqa: E402
from bench_lib.workloads import Request, WorkloadBuilder, interleave  # noqa: E402

pytestmark = pytest.mark.unit
needs_evalset = pytest.mark.skipif(not recordings.evalset_available(),
                                   reason="../shared/evalset not found")


def _file(path, language, reference, duration=1.0):
    return recordings.EvalFile(path, language, duration, reference)


def test_interleave_covers_every_language_first():
    files = [_file(f"en/{i}", "en", "a") for i in range(4)] + [_file("zh/0", "zh", "b"),
                                                                _file("de/0", "de", "c")]
    order = interleave(files)
    assert [f.path for f in order] == ["en/0", "zh/0", "de/0", "en/1", "en/2", "en/3"]


@needs_evalset
def test_defaults_plan_every_file_at_each_level_both_ways():
    args = cli.parse_args(["--model", "base"])
    assert args.workloads == ["corpus:detected", "corpus:given"]
    files, skipped = cli.corpus_files(args, english_only=False)
    assert len(files) == len(recordings.evalset_files()) == 66 and not skipped
    assert {f.language for f in files} == {"en", "zh", "de", "fr", "it", "pt"}
    levels = cli.plan(args)
    assert {(w, p, c) for w, p, c, _ in levels} == {
        (w, p, c) for w in ("corpus:detected", "corpus:given") for p in ("grpc", "http")
        for c in (1, 4, 20, 64)}
    assert all(n == 66 for *_, n in levels)


@needs_evalset
def test_options_language_requests_and_english_only():
    args = cli.parse_args(["--workload", "corpus,short", "--language", "given",
                           "--requests", "8", "--concurrency", "4,20", "--protocols", "grpc"])
    assert args.workloads == ["corpus:given", "short"]
    files, skipped = cli.corpus_files(args, english_only=True)
    assert files and all(f.language == "en" for f in files)
    assert {f.language for f in skipped} == {"zh", "de", "fr", "it", "pt"}
    assert cli.plan(args) == [("corpus:given", "grpc", 4, 8), ("corpus:given", "grpc", 20, 20),
                              ("short", "grpc", 4, 8), ("short", "grpc", 20, 20)]
    assert cli.parse_args(["--workload", "short"]).workloads == ["short"]
    assert cli.parse_args(["--quick"]).workloads == ["short"]


def test_without_the_evalset_the_default_falls_back(tmp_path, capsys):
    args = cli.parse_args(["--evalset", str(tmp_path)])
    assert args.workloads == ["short", "long"]
    assert args.notes and "no evalset" in args.notes[0]
    assert "no evalset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["--evalset", str(tmp_path), "--workload", "corpus"])


@needs_evalset
def test_requests_carry_the_language_and_distinct_audio():
    chosen = interleave(recordings.evalset_files())[:8]  # en zh de fr it pt en zh
    builder = WorkloadBuilder(recordings.ALL, 600, seed=1, evalset=chosen)
    detected = builder.build("corpus:detected", 10)  # cycles past the 8 files
    given = builder.build("corpus:given", 10)
    assert [r.language for r in detected] == [f.language for f in chosen] + ["en", "zh"]
    assert all(r.given_language is None for r in detected)
    assert [r.given_language for r in given] == [r.language for r in detected]
    assert all(r.kind == "corpus" and r.reference for r in detected + given)
    assert [r.label for r in given[:8]] == [f.path for f in chosen]
    # Same file, other request (cycled, or the other sub-workload): other bytes.
    payloads = [r.payload for r in detected + given]
    assert len(set(payloads)) == len(payloads)
    for request, item in zip(detected, chosen):
        assert item.duration - 0.05 < request.seconds < item.duration + 0.1
    with pytest.raises(ValueError):
        WorkloadBuilder(recordings.ALL, 600, seed=1).build("corpus:given", 1)


def test_scoring_per_language_as_the_evalset_readme_says():
    rates = recordings.corpus_rates([
        ("en", "MISTER SMITH HAS TWO DOGS", "Mr. Smith has 2 dogs."),
        ("en", "A B C D", "a b x d"),
        ("zh", "甚至出现交易几乎停滞的情况", "甚至出現交易幾乎停滯的情況。"),
        ("de", "Guten Morgen zusammen", "guten morgen"),
    ])
    assert rates["en"] == (pytest.approx(1 / 9), 1, 9)
    assert rates["zh"] == (0.0, 0, 13)
    assert rates["de"] == (pytest.approx(1 / 3), 1, 3)


def _request(language, reference, given=None):
    return Request(b"x", 2.0, reference, language, "corpus", f"{language}/file", given)


def test_summary_and_table_per_language():
    requests = [_request("en", "A B C D"), _request("en", "E F"), _request("zh", "你好世界")]
    results = [{"latency": 1.0, "text": "a b c d", "language": "en", "error": None},
               {"latency": 2.0, "text": "e", "language": "en", "error": None},
               {"latency": 3.0, "text": None, "language": None, "error": "boom"}]
    row = report.summarize(requests, {"results": results, "wall_s": 2.0})
    assert row["languages"]["en"] == {"metric": "WER", "rate": pytest.approx(1 / 6), "errors": 1,
                                      "units": 6, "requests_planned": 2, "requests_ok": 2}
    assert row["languages"]["zh"]["rate"] is None and row["languages"]["zh"]["requests_ok"] == 0
    assert (row["language_detected_right"], row["language_detected_of"]) == (2, 2)
    assert row["worst_files"] == [{"file": "en/file", "language": "en", "detected": "en",
                                   "errors": 1, "units": 2, "text": "e"}]
    given = report.summarize([_request("en", "A", "en")],
                             {"results": [results[0]], "wall_s": 1.0})
    assert given["language_detected_of"] is None
    assert "languages" not in report.summarize(
        [Request(b"x", 1.0, "a", "en", "short", "jfk.flac")], {"results": [results[0]],
                                                              "wall_s": 1.0})

    row.update({"workload": "corpus:detected", "protocol": "grpc", "concurrency": 4,
                "peak_rss_bytes": 2**30})
    peer = dict(row, kind="tuned", threads=2, workload="corpus:detected")
    del peer["protocol"], peer["concurrency"]
    bench = {"machine": {"date": "d", "cpu_model": "cpu", "cores": 2, "cores_available": 2,
                         "ram_gib": 1.0, "loadavg_start": [0], "python": "3", "versions": {}},
             "config": {"model": "base", "compute_type": "int8", "options": "o",
                        "workload_notes": "n", "workloads": ["corpus:detected"],
                        "corpus_skipped": ["zh/a.wav (zh)"], "corpus_skipped_reason": "why"},
             "served": {"levels": [row]}, "peers": [peer], "notes": []}
    report.add_ratios(bench)
    text = report.markdown(bench)
    assert "## Workload `corpus:detected` (language detected by the model)" in text
    assert "| en WER | zh CER | lang right | peak RSS MiB |" in text
    assert "| served | grpc | 4 | 2/1 |" in text
    assert "- most errors, served grpc c=4: en/file (1/2)" in text
    assert "| 0.167 (2) | – (0, 1 failed) | 2/2 | 1024 |" in text
    assert "| peer tuned | in-proc | 2 |" in text
    assert "1 evalset files left out (why): zh/a.wav (zh)" in text


@needs_evalset
def test_fairness_sends_the_long_recording_first_and_fallback_clips_among_the_clips():
    args = cli.parse_args(["--workload", "corpus,fairness", "--language", "detected",
                           "--concurrency", "20", "--protocols", "grpc"])
    files, _ = cli.corpus_files(args, english_only=False)
    assert cli.plan(args) == [("corpus:detected", "grpc", 20, len(files)),
                              ("fairness", "grpc", 20, len(files))]
    builder = WorkloadBuilder(recordings.ALL, 60, seed=1, evalset=files[:12])
    requests = builder.build("fairness", 12)
    kinds = [r.kind for r in requests]
    assert kinds[0] == "long" and requests[0].seconds >= 60
    assert kinds.count("corpus") == 12 and kinds.count("fallback") == 3
    assert all(r.given_language is None for r in requests)  # as most callers send them
    # Spread among the clips, not bunched at the start or the end.
    positions = [i for i, kind in enumerate(kinds) if kind == "fallback"]
    assert positions[0] > 2 and positions[-1] < len(kinds) - 2
    # A fallback clip is an English file played backwards: not scored.
    clip = requests[positions[0]]
    assert clip.reference == "" and clip.label.endswith("(reversed)")


def test_fairness_clip_latency_leaves_the_intruders_out_and_is_compared_with_corpus():
    clips = [_request("en", "A B"), _request("en", "C D")]
    requests = clips + [Request(b"x", 600.0, "LONG", "en", "long", "long"),
                        Request(b"x", 5.0, "", "", "fallback", "en/x (reversed)")]
    answer = {"text": "a b", "language": "en", "error": None}
    results = [dict(answer, latency=1.0), dict(answer, latency=3.0),
               dict(answer, latency=40.0), dict(answer, latency=9.0, text="la la")]
    row = report.summarize(requests, {"results": results, "wall_s": 40.0})
    assert row["clip_latency_s"]["requests"] == 2
    assert row["clip_latency_s"]["p95"] == pytest.approx(2.9)
    assert row["clip_latency_s"]["intruders"] == {"fallback": [9.0], "long": [40.0]}
    assert set(row["languages"]) == {"en"} and row["languages"]["en"]["requests_ok"] == 2
    assert "clip_latency_s" not in report.summarize(clips, {"results": results[:2],
                                                            "wall_s": 3.0})

    alone = report.summarize(clips, {"results": [dict(answer, latency=1.0),
                                                 dict(answer, latency=1.0)], "wall_s": 2.0})
    common = {"protocol": "grpc", "concurrency": 20}
    row.update(common, workload="fairness")
    alone.update(common, workload="corpus:detected")
    table = "\n".join(report._fairness_table([alone, row]))
    assert "| grpc | 20 | 2 | 1.00 | 1.00 | 2.00 | 2.90 | 2.90 | 40.0 | 9.0 |" in table
