"""What the front model does for one uploaded file, without Triton in the way.

prepare(): decode, validate, (VAD), cut into windows, drop silent ones.
chunks(): the windows still to transcribe, in engine-sized groups, with their features.
finish(): stitch the engine's window results into one Transcription.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import numpy as np

from whisper_triton.result import Transcription

from whisper_service.audio import SAMPLE_RATE, decode_audio
from whisper_service.errors import InvalidAudioError
from whisper_service.features import WindowFeatures
from whisper_service.options import DecodeOptions, Limits
from whisper_service.stitch import stitch
from whisper_service.windows import Window, fixed_windows, speech_spans, speech_windows


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

    def chunks(self, job: Job, size: int) -> Iterator[Tuple[List[int], np.ndarray, List[int]]]:
        """(window indices, features [k, n_mels, 3000], content frames) for k <= size."""
        for first in range(0, len(job.to_send), size):
            indices = job.to_send[first:first + size]
            features, frames = self.features([job.windows[i] for i in indices])
            yield indices, features, frames

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
