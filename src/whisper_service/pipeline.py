"""What the front model does for one uploaded file, without Triton in the way.

prepare(): decode, validate, (VAD), cut into windows, drop silent ones.
chunks(): the windows still to transcribe, in engine-sized groups, with their features.
finish(): stitch the engine's window results into one Transcription.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from whisper_triton.result import Transcription

from whisper_service.audio import SAMPLE_RATE, decode_audio
from whisper_service.errors import InvalidAudioError
from whisper_service.features import WindowFeatures
from whisper_service.options import DecodeOptions, Limits
from whisper_service.stitch import stitch
from whisper_service.windows import (Window, fixed_windows, loud_seconds, speech_spans,
                                     speech_windows, tail)

# A tail shorter than this is not worth a window of its own.
MIN_TAIL_SECONDS = 1.0
MAX_TAIL_ROUNDS = 3
END_MARGIN_SECONDS = 0.5
MIN_LEFTOVER_SOUND_SECONDS = 2.0


@dataclass
class Job:
    options: DecodeOptions
    duration: float
    windows: List[Window]
    to_send: List[int]
    """Indices of the windows that are not silent."""
    speech_seconds: Optional[float] = None
    """Seconds left after VAD, when VAD was on."""
    results: List[Optional[dict]] = field(default_factory=list)
    rounds: Dict[int, int] = field(default_factory=dict)
    """How many times a window's tail has been decoded again (its ancestry depth)."""

    @property
    def vad_removed_seconds(self) -> float:
        return 0.0 if self.speech_seconds is None else max(0.0, self.duration - self.speech_seconds)


class Pipeline:
    def __init__(self, limits: Limits, n_mels: int):
        self.limits = limits
        self.features = WindowFeatures(n_mels)

    def prepare(self, data: bytes, options: DecodeOptions) -> Job:
        if len(data) > self.limits.max_audio_bytes:
            raise InvalidAudioError(
                f"AUDIO has {len(data)} bytes; the limit is {self.limits.max_audio_bytes}. "
                "Send a compressed format (FLAC, MP3, OGG) or split the file.",
                "audio_too_large",
            )
        audio = decode_audio(data, self.limits.max_audio_seconds)
        duration = audio.size / SAMPLE_RATE
        speech_seconds = None
        if options.vad_filter:
            spans = speech_spans(audio)
            speech_seconds = sum(end - start for start, end in spans) / SAMPLE_RATE
            windows = speech_windows(audio, spans)
        else:
            windows = fixed_windows(audio)
        to_send = [i for i, w in enumerate(windows) if not w.is_silent()]
        return Job(options, duration, windows, to_send, speech_seconds,
                   results=[None] * len(windows))

    def chunks(self, job: Job, size: int, indices: Optional[Sequence[int]] = None
               ) -> Iterator[Tuple[List[int], np.ndarray, List[int]]]:
        """(window indices, features [k, n_mels, 3000], content frames) for k <= size."""
        todo = list(job.to_send if indices is None else indices)
        for first in range(0, len(todo), size):
            indices = todo[first:first + size]
            features, frames = self.features([job.windows[i] for i in indices])
            yield indices, features, frames

    def retry_tails(self, job: Job, indices: List[int]) -> List[int]:
        """New windows for what the engine left undecoded at the end of these windows.

        Windows are decoded independently, so when Whisper stops early (an unfinished last
        segment, or an end-of-text before speech that is still there), the rest of the window
        is decoded again on its own instead of being lost. Returns the new windows' indices.
        """
        added = []
        for index in indices:
            result, window = job.results[index], job.windows[index]
            if not result or job.rounds.get(index, 0) >= MAX_TAIL_ROUNDS:
                continue
            segments_end = max([s["end"] for s in result["segments"]], default=0.0)
            covered = result.get("covered", window.duration)
            if covered < window.duration - MIN_TAIL_SECONDS:
                # An unfinished last segment was dropped: decode from its start again.
                start, needed = covered, 0.0
            else:
                # Whisper said "done" early: only worth a retry if plenty of sound is left
                # after the last segment (timestamps are coarse near the end).
                start, needed = segments_end + END_MARGIN_SECONDS, MIN_LEFTOVER_SOUND_SECONDS
            if window.duration - start < MIN_TAIL_SECONDS:
                continue
            rest = tail(window, start)
            if rest.is_silent() or loud_seconds(rest.audio) < needed:
                continue
            job.windows.append(rest)
            job.results.append(None)
            job.rounds[len(job.windows) - 1] = job.rounds.get(index, 0) + 1
            added.append(len(job.windows) - 1)
            # Only what was complete stays; the tail window brings the rest.
            result["segments"] = [s for s in result["segments"] if s["end"] <= start + 0.01]
        return added

    def finish(self, job: Job) -> Transcription:
        return stitch(job.windows, job.results, job.options, job.duration, job.speech_seconds)


def warm_up(pipeline: Pipeline, with_vad: bool = True) -> None:
    """Run the real decode/feature path once on a synthetic WAV so the first request is fast."""
    import io
    import soundfile

    tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    buffer = io.BytesIO()
    soundfile.write(buffer, tone.astype(np.float32), SAMPLE_RATE, format="WAV")
    job = pipeline.prepare(buffer.getvalue(), DecodeOptions(vad_filter=with_vad))
    for _ in pipeline.chunks(job, 1):
        pass
