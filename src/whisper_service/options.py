"""Decoding options of one request: defaults, limits and validation.

One `DecodeOptions` travels from the front model to the engine (as JSON per window) instead of
a dozen loose values. Limits are a `Limits` object built from config parameters.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

from faster_whisper.tokenizer import _LANGUAGE_CODES

from whisper_service.errors import InvalidInputError

LANGUAGE_CODES = frozenset(_LANGUAGE_CODES)
TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class Limits:
    max_audio_bytes: int = 256 * 1024 * 1024
    max_audio_seconds: float = 4 * 3600.0
    max_beam_size: int = 10
    max_prompt_chars: int = 1000

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> "Limits":
        values = {}
        for f in fields(cls):
            raw = params.get(f.name)
            if raw:
                values[f.name] = int(float(raw)) if isinstance(f.default, int) else float(raw)
        limits = cls(**values)
        if min(limits.max_audio_bytes, limits.max_audio_seconds, limits.max_beam_size) <= 0:
            raise ValueError(f"limits must be positive: {limits}")
        return limits


@dataclass(frozen=True)
class DecodeOptions:
    language: Optional[str] = None
    task: str = "transcribe"
    beam_size: int = 5
    word_timestamps: bool = False
    vad_filter: bool = False
    initial_prompt: Optional[str] = None
    hotwords: Optional[str] = None
    temperature: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "DecodeOptions":
        """Options as the engine receives them; empty text (warm-up) means defaults."""
        if not text:
            return cls()
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def generation_key(self) -> tuple:
        """Windows whose options share this key can be decoded in one generate call.

        Language, task, prompt and hotwords only change the prompt tokens, which may differ
        per window inside one call; beam size and temperature may not.
        """
        return (self.beam_size, self.temperature)


def parse_options(raw: Mapping[str, Any], limits: Limits) -> DecodeOptions:
    """Validate the optional inputs of one request; raise InvalidInputError with a fix."""
    language = _text(raw.get("LANGUAGE"))
    if language is not None:
        language = language.strip().lower()
        if language in ("", "auto"):
            language = None
        elif language not in LANGUAGE_CODES:
            raise InvalidInputError(
                f"LANGUAGE {language!r} is not a Whisper language code; use an ISO 639-1 code "
                "such as en, zh, de, or leave LANGUAGE out to detect it.",
                "invalid_language",
            )
    task = (_text(raw.get("TASK")) or "transcribe").strip().lower()
    if task not in TASKS:
        raise InvalidInputError(
            f"TASK {task!r} is not supported; use 'transcribe' or 'translate'.", "invalid_task"
        )
    beam_size = raw.get("BEAM_SIZE")
    beam_size = 5 if beam_size is None else int(beam_size)
    if not 1 <= beam_size <= limits.max_beam_size:
        raise InvalidInputError(
            f"BEAM_SIZE {beam_size} is out of range; use 1 to {limits.max_beam_size}.",
            "invalid_beam_size",
        )
    temperature = raw.get("TEMPERATURE")
    temperature = 0.0 if temperature is None else float(temperature)
    if not math.isfinite(temperature) or not 0.0 <= temperature <= 1.0:
        raise InvalidInputError(
            f"TEMPERATURE {temperature} is out of range; use 0.0 (greedy, with fallback) "
            "to 1.0.",
            "invalid_temperature",
        )
    prompt = _bounded_text(raw.get("INITIAL_PROMPT"), "INITIAL_PROMPT", limits)
    hotwords = _bounded_text(raw.get("HOTWORDS"), "HOTWORDS", limits)
    return DecodeOptions(
        language=language,
        task=task,
        beam_size=beam_size,
        word_timestamps=bool(raw.get("WORD_TIMESTAMPS", False)),
        vad_filter=bool(raw.get("VAD_FILTER", False)),
        initial_prompt=prompt,
        hotwords=hotwords,
        temperature=round(temperature, 4),
    )


def _text(value: Any) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError("text inputs must be UTF-8.", "invalid_text") from exc
    return str(value)


def _bounded_text(value: Any, name: str, limits: Limits) -> Optional[str]:
    text = _text(value)
    if text is None or not text.strip():
        return None
    if len(text) > limits.max_prompt_chars:
        raise InvalidInputError(
            f"{name} has {len(text)} characters; the limit is {limits.max_prompt_chars}.",
            "text_too_long",
        )
    return text
