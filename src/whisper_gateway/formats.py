"""Response bodies of the five `response_format`s, from a whisper_triton Transcription.

    json          application/json   {"text"}
    text          text/plain         the transcript and a newline
    srt, vtt      text/plain         subtitles (whisper_triton.writers)
    verbose_json  application/json   task, language (English name), duration, text,
                                     segments (when asked; the default), words (when asked)

Pure functions; the app sets the content type from `CONTENT_TYPES`.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, Tuple

from whisper_triton.result import Transcription
from whisper_triton.writers import to_srt, to_vtt

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
CONTENT_TYPES = {"json": "application/json", "verbose_json": "application/json",
                 "text": "text/plain; charset=utf-8", "srt": "text/plain; charset=utf-8",
                 "vtt": "text/plain; charset=utf-8"}

# Whisper's names of its languages, as OpenAI's verbose_json gives them.
LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian",
    "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala",
    "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi",
    "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian",
    "ln": "lingala", "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese",
    "yue": "cantonese",
}


def language_name(code: str | None) -> str:
    """"en" -> "english"; an unknown or missing code is passed on as it is ("" for none)."""
    if not code:
        return ""
    return LANGUAGE_NAMES.get(code, code)


def verbose(result: Transcription, granularities: Iterable[str] = ("segment",)) -> Dict[str, Any]:
    granularities = set(granularities) or {"segment"}
    body: Dict[str, Any] = {
        # OpenAI's translations report the language of their output: always english.
        "task": result.task,
        "language": "english" if result.task == "translate" else language_name(result.language),
        "duration": result.duration,
        "text": result.text,
    }
    if "segment" in granularities:
        body["segments"] = [{
            "id": s.id,
            # Whisper's seek is its window offset in 10 ms frames; the server cuts its own
            # windows, so this is the segment's start in that unit.
            "seek": int(round(s.start * 100)),
            "start": s.start,
            "end": s.end,
            "text": s.text,
            "tokens": [],  # token ids are not part of the server's RESULT
            "temperature": s.temperature,
            "avg_logprob": s.avg_logprob,
            "compression_ratio": s.compression_ratio,
            "no_speech_prob": s.no_speech_prob,
        } for s in result.segments]
    if "word" in granularities:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                         for w in result.words]
    return body


def render(result: Transcription, response_format: str,
           granularities: Iterable[str] = ()) -> Tuple[str, str]:
    """(body, content type) of a finished transcription."""
    if response_format == "json":
        body = json.dumps({"text": result.text}, ensure_ascii=False)
    elif response_format == "verbose_json":
        body = json.dumps(verbose(result, granularities), ensure_ascii=False)
    elif response_format == "text":
        body = result.text + "\n"
    elif response_format == "srt":
        body = to_srt(result)
    elif response_format == "vtt":
        body = to_vtt(result)
    else:
        raise ValueError(f"unknown response_format {response_format!r}")
    return body, CONTENT_TYPES[response_format]


def sse(event: Dict[str, Any]) -> bytes:
    """One server-sent event carrying `event` as JSON (the type is in the data, as OpenAI's)."""
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode("utf-8")


def delta_event(delta: str) -> Dict[str, Any]:
    return {"type": "transcript.text.delta", "delta": delta}


def done_event(text: str, duration: float) -> Dict[str, Any]:
    # whisper-1 is billed by audio duration: OpenAI's "duration" usage.
    return {"type": "transcript.text.done", "text": text,
            "usage": {"type": "duration", "seconds": duration}}
