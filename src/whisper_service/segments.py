"""Split the tokens Whisper generated for one window into timed segments (window time)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

TIME_PRECISION = 0.02  # seconds per timestamp token


def split_by_timestamps(
    tokens: Sequence[int], timestamp_begin: int, window_duration: float
) -> Tuple[List[dict], float]:
    """Complete segments {start, end, tokens} of one window, and how far they cover it.

    Whisper brackets each segment with timestamp tokens. Output that ends in text without a
    closing timestamp is an unfinished segment: like faster-whisper, drop it and report the
    window covered only up to the last timestamp, so the caller decodes the rest again.
    A single timestamp before the end of text means "nothing more": the window is covered.
    """
    positions = [i for i, t in enumerate(tokens) if t >= timestamp_begin]
    if not positions:
        # No timestamps at all: the whole window is one segment.
        text = list(tokens)
        return ([{"start": 0.0, "end": round(window_duration, 3), "tokens": text}] if text else [],
                window_duration)

    def seconds(token: int) -> float:
        return round((token - timestamp_begin) * TIME_PRECISION, 3)

    segments: List[dict] = []
    open_at = None  # index of the timestamp that opened the current segment
    for i, token in enumerate(tokens):
        if token < timestamp_begin:
            continue
        if open_at is None:
            open_at = i
            continue
        text = list(tokens[open_at + 1:i])
        if text:
            segments.append({"start": seconds(tokens[open_at]), "end": seconds(token), "tokens": text})
            # <|a|> text <|b|><|b|> next: the second <|b|> opens the next segment; a single
            # <|b|> followed by text also opens it.
            open_at = i + 1 if i + 1 < len(tokens) and tokens[i + 1] >= timestamp_begin else i
        else:
            open_at = i
    last = positions[-1]
    trailing_text = any(t < timestamp_begin for t in tokens[last + 1:])
    single_timestamp_ending = (
        not trailing_text and len(positions) >= 1 and last >= 1 and tokens[last - 1] < timestamp_begin
    )
    if trailing_text:
        covered = seconds(tokens[last])
    elif single_timestamp_ending:
        covered = window_duration
    else:
        covered = seconds(tokens[last])
    for seg in segments:
        seg["end"] = max(seg["end"], seg["start"])
    return segments, min(covered, window_duration)
