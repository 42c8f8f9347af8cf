"""Split the tokens Whisper generated for one window into timed segments (window time)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

TIME_PRECISION = 0.02  # seconds per timestamp token


def split_by_timestamps(
    tokens: Sequence[int], timestamp_begin: int, window_duration: float
) -> Tuple[List[dict], float]:
    """Segments {start, end, tokens} of one window, and up to where the text is complete.

    Whisper brackets each segment with timestamp tokens. Text after the last timestamp is an
    unfinished segment: it is returned too, marked `"unfinished": True` and running to the end
    of the window, and `covered` stops at its opening timestamp, so that the caller may decode
    the rest of the window again and keep this text only if that finds nothing. No text is
    ever dropped here. A single timestamp after text means "nothing more": the window is
    covered.
    """
    positions = [i for i, t in enumerate(tokens) if t >= timestamp_begin]
    end_of_window = round(window_duration, 3)
    if not positions:
        # No timestamps at all: the whole window is one segment.
        text = list(tokens)
        return ([{"start": 0.0, "end": end_of_window, "tokens": text}] if text else [],
                window_duration)

    def seconds(token: int) -> float:
        return min(round((token - timestamp_begin) * TIME_PRECISION, 3), end_of_window)

    segments: List[dict] = []
    if positions[0] > 0:
        # Text before any timestamp (not produced with timestamps on, but never lost).
        segments.append({"start": 0.0, "end": seconds(tokens[positions[0]]),
                         "tokens": list(tokens[:positions[0]])})
    open_at = positions[0]  # index of the timestamp that opened the current segment
    for i in positions[1:]:
        text = list(tokens[open_at + 1:i])
        if text:
            segments.append({"start": seconds(tokens[open_at]), "end": seconds(tokens[i]),
                             "tokens": text})
            # <|a|> text <|b|><|b|> next: the second <|b|> opens the next segment; a single
            # <|b|> followed by text also opens it.
            open_at = i + 1 if i + 1 < len(tokens) and tokens[i + 1] >= timestamp_begin else i
        else:
            open_at = i
    last = positions[-1]
    trailing = list(tokens[last + 1:])
    if trailing:
        covered = seconds(tokens[last])
        segments.append({"start": covered, "end": end_of_window, "tokens": trailing,
                         "unfinished": True})
    elif last >= 1 and tokens[last - 1] < timestamp_begin:
        covered = window_duration  # single timestamp ending: nothing more in this window
    else:
        covered = seconds(tokens[last])
    for seg in segments:
        seg["end"] = max(seg["end"], seg["start"])
    return segments, min(covered, window_duration)
