"""When a decode is good enough: faster-whisper's quality rules, stated once.

A window's text is decoded again at a higher temperature when it is too repetitive
(compression ratio) or too improbable (average log-probability), unless the window is
silence, where a higher temperature will not find speech. The thresholds are faster-whisper's
defaults for transcribe(), so that quality matches it.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import List, Sequence

from faster_whisper.transcribe import get_compression_ratio

from whisper_service.text_weight import text_weight

COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
TEMPERATURE_STEP = 0.2
# A packed clip of at least this many seconds whose text weighs less than this per second of
# the clip is decoded again alone. Read speech weighs 5.3-15 per second of clip on the evalset
# (English about 12, Mandarin about 13); packed decodes that dropped most of a clip measured
# 1.2 ("It is" for 3.4 s) and 1.5 ("But she said," for 6.7 s). Shorter clips stay packed, so
# that bursts of one-word commands do not each cost an encode of their own.
SPARSE_CLIP_SECONDS = 3.0
SPARSE_CLIP_TEXT_PER_SECOND = 2.0
# ... and said far too much: read speech weighs at most about 14 per second on the evalset; a
# 4 s clip that a packed decode gave its sentence twice weighed 25. A clip under 2 s may be
# one quick phrase, so it is not judged.
DENSE_CLIP_SECONDS = 2.0
DENSE_CLIP_TEXT_PER_SECOND = 22.0


@dataclass
class Attempt:
    """One decode of one window at one temperature."""
    tokens: List[int]
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    off_target: bool = False
    """A translation that is not in English (see off_target)."""


def compression_ratio(text: str) -> float:
    return get_compression_ratio(text) if text else 0.0


def is_silence(no_speech_prob: float, avg_logprob: float) -> bool:
    """Whisper's own verdict that the window holds no speech: its text is dropped."""
    return no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob < LOG_PROB_THRESHOLD


def too_repetitive(ratio: float) -> bool:
    return ratio > COMPRESSION_RATIO_THRESHOLD


def needs_fallback(avg_logprob: float, no_speech_prob: float, ratio: float = 0.0,
                   wrong_language: bool = False) -> bool:
    """Whether to decode again at the next temperature (never for silence)."""
    if is_silence(no_speech_prob, avg_logprob):
        return False
    return too_repetitive(ratio) or wrong_language or avg_logprob < LOG_PROB_THRESHOLD


def off_target(text: str, task: str) -> bool:
    """Whether a translation came back in another script than English's.

    Whisper translates into English only, yet small models sometimes sample a transcript of
    Mandarin speech instead ("甚至出现交易..." for a translation); such an attempt counts as
    failed, like a repetitive one. Most letters must be Latin: names and loanwords keep
    their accents, and a stray character of another script is tolerated.
    """
    if task != "translate":
        return False
    letters = [ch for ch in text if ch.isalpha()]
    foreign = sum(1 for ch in letters if not unicodedata.name(ch, "").startswith("LATIN"))
    return foreign * 2 > len(letters)


def too_sparse_for_clip(text: str, seconds: float) -> bool:
    """Whether a packed decode said too little for a clip this long: Whisper sometimes skips
    most of one clip in a packed window, which the clip decoded alone does not."""
    return (seconds >= SPARSE_CLIP_SECONDS
            and text_weight(text) < SPARSE_CLIP_TEXT_PER_SECOND * seconds)


def too_dense_for_clip(text: str, seconds: float) -> bool:
    """Whether a packed decode said more than anyone says in a clip this long: Whisper
    looped, or gave the clip words of its neighbour."""
    return (seconds >= DENSE_CLIP_SECONDS
            and text_weight(text) > DENSE_CLIP_TEXT_PER_SECOND * seconds)


def temperature_schedule(first: float) -> List[float]:
    """The first temperature, then fallbacks up to 1.0 in steps of 0.2."""
    schedule = [first]
    step = 1
    while round(first + step * TEMPERATURE_STEP, 4) <= 1.0 + 1e-9:
        schedule.append(round(first + step * TEMPERATURE_STEP, 4))
        step += 1
    return schedule


def best_attempt(attempts: Sequence[Attempt]) -> Attempt:
    """When every temperature failed: the most probable attempt that is not repetitive and,
    for a translation, is in English; failing that, one that is not repetitive."""
    good = [a for a in attempts if not too_repetitive(a.compression_ratio) and not a.off_target]
    good = good or [a for a in attempts if not too_repetitive(a.compression_ratio)]
    return max(good or attempts, key=lambda a: a.avg_logprob)
