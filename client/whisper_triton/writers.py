"""Render a Transcription as txt, json (OpenAI verbose_json), srt, vtt or tsv.

Every writer is a pure function `Transcription -> str`; `write_result` adds the file or
stream. Cue times are rounded to whole milliseconds once, so srt/vtt/tsv agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, TextIO, Tuple, Union

from .result import Segment, Transcription

__all__ = ["FORMATS", "format_result", "write_result", "to_txt", "to_json", "to_srt",
           "to_vtt", "to_tsv"]


def _ms(seconds: float) -> int:
    return max(0, int(round(float(seconds) * 1000)))


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    # A blank line ends a cue and "-->" starts a timing line, in both srt and vtt.
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines).replace("-->", "->")


def _cues(result: Transcription) -> List[Tuple[int, int, str]]:
    """(start_ms, end_ms, text) per non-empty segment, in time order, never backwards."""
    cues = []
    for segment in sorted(result.segments, key=lambda s: (s.start, s.id)):
        text = _cue_text(segment.text)
        if not text:
            continue
        start = _ms(segment.start)
        cues.append((start, max(start, _ms(segment.end)), text))
    return cues


def to_txt(result: Transcription) -> str:
    """One line per segment, like Whisper's own txt output."""
    lines = [" ".join(_cue_text(s.text).split("\n")) for s in result.segments]
    lines = [line for line in lines if line]
    if not lines and result.text.strip():
        lines = [result.text.strip()]
    return "".join(line + "\n" for line in lines)


def _verbose_segment(segment: Segment) -> Dict:
    return {
        "id": segment.id,
        # Whisper's seek is the window offset in 10 ms mel frames; the server does not send
        # windows, so this is the segment start in the same unit.
        "seek": int(round(segment.start * 100)),
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": [],  # token ids are not part of the RESULT contract
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }


def to_verbose_dict(result: Transcription) -> Dict:
    """The fields of OpenAI's verbose_json; `words` only when word timestamps exist.

    `language` stays the ISO code the server reports (OpenAI writes the English name).
    """
    data: Dict = {
        "task": result.task,
        "language": result.language,
        "duration": result.duration,
        "text": result.text,
        "segments": [_verbose_segment(s) for s in result.segments],
    }
    words = result.words
    if words:
        data["words"] = [{"word": w.word, "start": w.start, "end": w.end,
                          "probability": w.probability} for w in words]
    return data


def to_json(result: Transcription) -> str:
    return json.dumps(to_verbose_dict(result), ensure_ascii=False, indent=2) + "\n"


def to_srt(result: Transcription) -> str:
    blocks = [f"{i}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
              for i, (start, end, text) in enumerate(_cues(result), start=1)]
    return "\n".join(blocks)


def to_vtt(result: Transcription) -> str:
    blocks = [f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n"
              for start, end, text in _cues(result)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_tsv(result: Transcription) -> str:
    """start and end in integer milliseconds, as Whisper's tsv writer does."""
    rows = ["start\tend\ttext"]
    rows += [f"{start}\t{end}\t{' '.join(text.split())}" for start, end, text in _cues(result)]
    return "\n".join(rows) + "\n"


FORMATS: Dict[str, Callable[[Transcription], str]] = {
    "txt": to_txt,
    "json": to_json,
    "srt": to_srt,
    "vtt": to_vtt,
    "tsv": to_tsv,
}


def format_result(result: Transcription, fmt: str) -> str:
    try:
        writer = FORMATS[fmt.lower()]
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}") from None
    return writer(result)


def write_result(result: Transcription, fmt: str,
                 target: Union[str, Path, TextIO], *, encoding: Optional[str] = "utf-8") -> None:
    """Write to a path (created with its parent folders) or to an open text stream."""
    text = format_result(result, fmt)
    if isinstance(target, (str, Path)):
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding=encoding)
    else:
        target.write(text)
