"""The benchmark behind scripts/bench: served Triton system against in-process faster-whisper.

workloads.py  request payloads (distinct audio per request) and their reference transcripts
load.py       closed-loop load on tritonclient's asyncio clients, Triton statistics, RSS sampling
peers.py      in-process faster-whisper peers, each in a child process of its own
report.py     figures, bench.json, bench.md, bench.png
cli.py        the command line and the order of the run
"""
