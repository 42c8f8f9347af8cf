"""Long uploads, section by section: how the streaming front (`whisper_stream`) shows progress.

The upload loop (whisper_service.upload) runs its rounds over all windows of a job: a window's
text may change until the last round is over (language reconcile, sparse-window halves, tail
retries). So the streaming front cuts the windows of a prepared upload into sections of about
`section_seconds` of audio, in time order, and runs the whole loop on each section in turn.
Once a section is done its text can no longer change: it is sent as a delta. The final
transcription is the sections' transcriptions joined (`join`), and its text is exactly the
concatenation of the deltas (`Deltas`).

What differs from the plain front on a long upload: the upload's language, when detected, is
voted per section (a recording that changes language is followed section by section). An
upload that fits in one section is transcribed exactly as the plain front does it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import List, Optional, Sequence

from whisper_triton.result import Transcription

from whisper_service.options import DecodeOptions
from whisper_service.pipeline import Job

DEFAULT_SECTION_SECONDS = 120.0


def section_indices(durations: Sequence[float], to_send: Sequence[int],
                    section_seconds: float) -> List[List[int]]:
    """Consecutive runs of `to_send` (window indices in time order) of at most
    `section_seconds` of window audio each; a window longer than that is a section alone."""
    sections: List[List[int]] = []
    current: List[int] = []
    seconds = 0.0
    for index in to_send:
        if current and seconds + durations[index] > section_seconds:
            sections.append(current)
            current, seconds = [], 0.0
        current.append(index)
        seconds += durations[index]
    if current:
        sections.append(current)
    return sections


def split(job: Job, section_seconds: float) -> List[Job]:
    """The job's windows that may hold speech as jobs of their own, one per section.

    One section: the job itself, untouched (the same path as the plain front).
    """
    durations = [window.duration for window in job.windows]
    sections = section_indices(durations, job.to_send, section_seconds)
    if len(sections) <= 1:
        return [job]
    return [Job(job.options, job.duration, [job.windows[i] for i in indices],
                list(range(len(indices))), None, results=[None] * len(indices),
                evidence=job.evidence) for indices in sections]


def join(parts: Sequence[Transcription], job: Job) -> Transcription:
    """One transcription of the whole job from its sections' ones, in order."""
    return joined(parts, job.options, job.duration, job.speech_seconds)


def joined(parts: Sequence[Transcription], options: DecodeOptions, duration: float,
           speech_seconds: Optional[float]) -> Transcription:
    """One transcription of a whole upload from its parts' ones (in upload time), in order."""
    if len(parts) == 1:
        return parts[0]
    segments = [replace(segment) for part in parts for segment in part.segments]
    for number, segment in enumerate(segments):
        segment.id = number
    if options.language:
        language, probability = options.language, 1.0
    else:
        # The language most of the speech is in, over the sections (as stitch does per window).
        seconds = defaultdict(float)
        probability_of = {}
        for part in parts:
            if part.language is None:
                continue
            seconds[part.language] += sum(s.end - s.start for s in part.segments) or 1e-9
            probability_of.setdefault(part.language, part.language_probability)
        language = max(seconds, key=seconds.get) if seconds else None
        probability = probability_of.get(language, 0.0)
    return Transcription(
        text="".join(s.text for s in segments).strip(),
        language=language,
        language_probability=probability,
        duration=round(duration, 3),
        task=options.task,
        segments=segments,
        duration_after_vad=None if speech_seconds is None else round(speech_seconds, 3),
    )


def shifted(part: Transcription, offset: float) -> Transcription:
    """A section's transcription in the time of the upload it starts `offset` seconds into."""
    if not offset:
        return part
    segments = []
    for segment in part.segments:
        words = None if segment.words is None else [
            replace(word, start=round(word.start + offset, 3), end=round(word.end + offset, 3))
            for word in segment.words]
        segments.append(replace(segment, start=round(segment.start + offset, 3),
                                end=round(segment.end + offset, 3), words=words))
    return replace(part, segments=segments)


class Deltas:
    """Text deltas whose concatenation is exactly the joined transcription's text.

    The joined text is the segments' texts concatenated and stripped; after each section,
    the text so far (stripped the same way) is a prefix of it, so what is new since the last
    delta is the next delta.
    """

    def __init__(self) -> None:
        self._raw = ""
        self.sent = ""

    def add(self, part: Transcription) -> Optional[str]:
        """The delta this section adds, or None when it adds no text."""
        self._raw += "".join(segment.text for segment in part.segments)
        text = self._raw.strip()
        delta = text[len(self.sent):]
        self.sent = text
        return delta or None
