"""Split the tokens Whisper generated for one window into timed segments (window time)."""

from __future__ import annotations

from typing import List, Sequence

TIME_PRECISION = 0.02  # seconds per timestamp token


def split_by_timestamps(
    tokens: Sequence[int], timestamp_begin: int, window_duration: float
) -> List[dict]:
    """Segments {start, end, tokens} from one window's generated tokens.

    Whisper brackets each segment with a pair of timestamp tokens. Windows here are decoded
    independently, so an unfinished last segment (no closing timestamp) is kept and closed at
    the end of the window's audio instead of being re-decoded from the next window.
    """
    segments: List[dict] = []
    start_token = None
    text: List[int] = []
    for token in tokens:
        if token >= timestamp_begin:
            if start_token is None:
                start_token = token
            elif text:
                segments.append(_segment(start_token, token, text, timestamp_begin))
                start_token, text = None, []
            else:
                # Two timestamps in a row with nothing between: the later one opens.
                start_token = token
        else:
            if start_token is None:
                start_token = segments[-1]["end_token"] if segments else timestamp_begin
            text.append(token)
    if text:
        end = max(window_duration, (start_token - timestamp_begin) * TIME_PRECISION)
        seg = _segment(start_token, None, text, timestamp_begin)
        seg["end"] = round(min(end, window_duration) if window_duration > seg["start"] else end, 3)
        segments.append(seg)
    for seg in segments:
        seg.pop("end_token", None)
        seg["end"] = max(seg["end"], seg["start"])
    return segments


def _segment(start_token: int, end_token, text: List[int], timestamp_begin: int) -> dict:
    start = (start_token - timestamp_begin) * TIME_PRECISION
    end = (end_token - timestamp_begin) * TIME_PRECISION if end_token is not None else start
    return {
        "start": round(start, 3),
        "end": round(end, 3),
        "tokens": list(text),
        "end_token": end_token if end_token is not None else start_token,
    }
