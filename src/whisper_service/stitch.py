"""Put per-window engine results back on the upload's time line as one Transcription."""

from __future__ import annotations

from collections import defaultdict
from typing import List, Optional, Sequence

from whisper_triton.result import Segment, Transcription, Word

from whisper_service.options import DecodeOptions
from whisper_service.window_result import WindowResult
from whisper_service.windows import Window


def stitch(
    windows: Sequence[Window],
    results: Sequence[Optional[WindowResult]],
    options: DecodeOptions,
    duration: float,
    duration_after_vad: Optional[float] = None,
) -> Transcription:
    """`results[i]` is the engine's answer for `windows[i]`, or None for a silent window."""
    segments: List[Segment] = []
    origin: List[int] = []  # the window each segment came from
    speech_by_language = defaultdict(float)
    probability_by_language = {}
    for index, (window, result) in enumerate(zip(windows, results)):
        if not result:
            continue
        language = result.language
        speech_by_language[language] += window.duration
        probability_by_language.setdefault(language, result.language_probability)
        for raw in result.segments:
            start = window.to_original(raw.start)
            end = max(start, window.to_original(raw.end, is_end=True))
            words = None
            if options.word_timestamps:
                words = [
                    Word(
                        start=window.to_original(w.start),
                        end=max(window.to_original(w.start),
                                window.to_original(w.end, is_end=True)),
                        word=w.word,
                        probability=round(float(w.probability), 4),
                    )
                    for w in raw.words or []
                ]
            segments.append(
                Segment(
                    id=len(segments),
                    start=start,
                    end=end,
                    text=raw.text,
                    avg_logprob=round(result.avg_logprob, 4),
                    no_speech_prob=round(result.no_speech_prob, 4),
                    compression_ratio=round(result.compression_ratio, 4),
                    temperature=result.temperature,
                    language=language,
                    words=words,
                )
            )
            origin.append(index)
    # Tails decoded again come after all first-pass windows: put segments in time order.
    order = sorted(range(len(segments)), key=lambda i: segments[i].start)
    segments = _without_repeats([segments[i] for i in order], [origin[i] for i in order])
    for number, segment in enumerate(segments):
        segment.id = number
    _make_monotonic(segments)
    if options.language:
        language, probability = options.language, 1.0
    elif speech_by_language:
        language = max(speech_by_language, key=speech_by_language.get)
        probability = probability_by_language[language]
    else:
        language, probability = None, 0.0
    return Transcription(
        text="".join(s.text for s in segments).strip(),
        language=language,
        language_probability=round(float(probability), 4),
        duration=round(duration, 3),
        task=options.task,
        segments=segments,
        duration_after_vad=None if duration_after_vad is None else round(duration_after_vad, 3),
    )


def _without_repeats(segments: List[Segment], origin: List[int]) -> List[Segment]:
    """Drop a segment that says again what the one before it, from another window, said over
    the same time (a window and its re-decoded tail both heard it)."""
    kept: List[Segment] = []
    kept_origin: List[int] = []
    for segment, window in zip(segments, origin):
        if (kept and kept_origin[-1] != window and segment.start < kept[-1].end
                and _same_text(segment.text, kept[-1].text)):
            continue
        kept.append(segment)
        kept_origin.append(window)
    return kept


def _same_text(a: str, b: str) -> bool:
    squeeze = lambda text: "".join(ch for ch in text.lower() if ch.isalnum())  # noqa: E731
    return bool(squeeze(a)) and squeeze(a) == squeeze(b)


def _make_monotonic(segments: List[Segment]) -> None:
    """Windows are decoded apart, so a segment may claim a start before the previous one."""
    last_start = 0.0
    for segment in segments:
        segment.start = max(segment.start, last_start)
        segment.end = max(segment.end, segment.start)
        last_start = segment.start
        for word in segment.words or []:
            word.start = max(word.start, last_start)
            word.end = max(word.end, word.start)
            last_start = word.start
