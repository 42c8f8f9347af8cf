"""Speech metrics on Triton's metrics endpoint (`whisper_*`), through pb_utils.MetricFamily.

Each Python-backend instance is its own process; families with the same name and kind are
shared by Triton, and each instance adds to the same labelled series. Updates are plain calls
into the backend (no lock, no I/O of ours); per-label Metric objects are created once and kept.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable

# Processing seconds per audio second: <1 is faster than real time.
RT_FACTOR_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
BATCH_BUCKETS = [1, 2, 4, 8, 12, 16, 24, 32, 48, 64]


class SpeechMetrics:
    """Front-model metrics: audio processed, speed, languages, errors, VAD."""

    def __init__(self, pb_utils, model: str):
        family = pb_utils.MetricFamily
        self._labels = {"model": model}
        # A MetricFamily must outlive its Metrics, so every family is kept on self.
        self._audio_family = family(
            name="whisper_audio_seconds_total",
            description="Seconds of audio transcribed successfully",
            kind=family.COUNTER,
        )
        self._audio = self._audio_family.Metric(labels=self._labels)
        self._vad_family = family(
            name="whisper_vad_removed_seconds_total",
            description="Seconds of audio removed as non-speech by VAD",
            kind=family.COUNTER,
        )
        self._vad = self._vad_family.Metric(labels=self._labels)
        self._rtf_family = family(
            name="whisper_processing_seconds_per_audio_second",
            description="Wall seconds spent per second of audio, per request",
            kind=family.HISTOGRAM,
        )
        self._rtf = self._rtf_family.Metric(labels=self._labels, buckets=RT_FACTOR_BUCKETS)
        self._languages_family = family(
            name="whisper_requests_total",
            description="Transcribed files by language (detected or given)",
            kind=family.COUNTER,
        )
        self._errors_family = family(
            name="whisper_errors_total",
            description="Failed requests by reason",
            kind=family.COUNTER,
        )
        self._in_flight_family = family(
            name="whisper_requests_in_flight",
            description="Requests the whisper model is working on now (the launcher drains them on SIGTERM)",
            kind=family.GAUGE,
        )
        # Per process: a stub that dies mid-request leaves its series behind, and the
        # launcher's drain must be able to ignore it.
        self._in_flight = self._in_flight_family.Metric(labels={**self._labels, "pid": str(os.getpid())})
        self._lost_family = family(
            name="whisper_windows_without_text_total",
            description="Windows where the VAD heard speech but Whisper returned no text",
            kind=family.COUNTER,
        )
        self._lost = self._lost_family.Metric(labels=self._labels)
        self._by_language: Dict[str, object] = {}
        self._by_reason: Dict[str, object] = {}

    def started(self) -> None:
        self._in_flight.increment(1)

    def finished(self) -> None:
        self._in_flight.increment(-1)

    def done(self, transcriptions: Iterable, seconds: float, audio_seconds: float) -> None:
        self._audio.increment(audio_seconds)
        if audio_seconds > 0:
            self._rtf.observe(seconds / audio_seconds)
        for transcription in transcriptions:
            language = transcription.language or "none"
            metric = self._by_language.get(language)
            if metric is None:
                metric = self._languages_family.Metric(labels={**self._labels, "language": language})
                self._by_language[language] = metric
            metric.increment(1)

    def error(self, reason: str) -> None:
        metric = self._by_reason.get(reason)
        if metric is None:
            metric = self._errors_family.Metric(labels={**self._labels, "reason": reason})
            self._by_reason[reason] = metric
        metric.increment(1)

    def speech_without_text(self, windows: int) -> None:
        if windows > 0:
            self._lost.increment(windows)

    def vad_removed(self, seconds: float) -> None:
        if seconds > 0:
            self._vad.increment(seconds)


class EngineMetrics:
    """Engine-model metrics: how full its batches are."""

    def __init__(self, pb_utils, model: str):
        family = pb_utils.MetricFamily
        self._windows_family = family(
            name="whisper_engine_batch_windows",
            description="Windows encoded and decoded together in one engine batch",
            kind=family.HISTOGRAM,
        )
        self._windows = self._windows_family.Metric(labels={"model": model}, buckets=BATCH_BUCKETS)

    def batch(self, windows: int) -> None:
        self._windows.observe(windows)
