"""The multipart form of `/v1/audio/transcriptions` and `/translations`, read and checked.

Fields as the openai SDK sends them: `file`, `model`, `language`, `prompt`, `response_format`,
`temperature`, `timestamp_granularities[]`, `stream`; this server's extensions `beam_size`,
`hotwords`, `vad_filter`. Unknown fields are ignored. The decoding options are then checked by
whisper_triton's own options schema (the same rules and messages as the client and server).
Pure: `parse` takes the fields as {name: [values]} and never touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from whisper_triton.errors import InvalidArgumentError
from whisper_triton.options import validate

from whisper_gateway.errors import ApiError, FORM_NAME, invalid, unknown_model
from whisper_gateway.formats import FORMATS

GRANULARITIES = ("segment", "word")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


@dataclass
class AudioForm:
    task: str
    """transcribe or translate (which endpoint)."""
    model: str
    response_format: str = "json"
    granularities: Tuple[str, ...] = ()
    stream: bool = False
    options: Dict[str, Any] = field(default_factory=dict)
    """Keywords of whisper_triton's transcribe(), validated."""


def _one(fields: Mapping[str, Sequence[Any]], name: str) -> Any:
    values = fields.get(name) or []
    return values[-1] if values else None


def _text(fields: Mapping[str, Sequence[Any]], name: str) -> str | None:
    value = _one(fields, name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"'{name}' must be a form field, not a file.", name)
    return value.strip()


def _flag(fields: Mapping[str, Sequence[Any]], name: str) -> bool | None:
    value = _text(fields, name)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise invalid(f"'{name}' must be true or false, not {value!r}.", name)


def _number(fields: Mapping[str, Sequence[Any]], name: str, kind: type) -> Any:
    value = _text(fields, name)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise invalid(f"'{name}' must be a {'whole ' if kind is int else ''}number, "
                      f"not {value!r}.", name) from None


def parse(fields: Mapping[str, Sequence[Any]], task: str, model_ids: Sequence[str]) -> AudioForm:
    """The checked form; raises ApiError (400, or 404 for an unknown model)."""
    model = _text(fields, "model")
    if not model:
        raise invalid("you must provide a model parameter", "model", None)
    if model not in model_ids:
        raise unknown_model(model)
    response_format = (_text(fields, "response_format") or "json").lower()
    if response_format not in FORMATS:
        raise invalid(f"'{response_format}' is not one of {', '.join(FORMATS)} - "
                      "'response_format'", "response_format")
    granularities: List[str] = []
    for name in ("timestamp_granularities[]", "timestamp_granularities"):
        for value in fields.get(name) or []:
            value = str(value).strip().lower()
            if value not in GRANULARITIES:
                raise invalid(f"'{value}' is not one of segment, word - "
                              "'timestamp_granularities'", "timestamp_granularities")
            if value not in granularities:
                granularities.append(value)
    if "word" in granularities and response_format != "verbose_json":
        raise invalid("response_format must be verbose_json to use word timestamps "
                      "(timestamp_granularities word)", "timestamp_granularities")
    stream = bool(_flag(fields, "stream"))
    if stream and task != "transcribe":
        raise invalid("stream is only available for transcriptions", "stream")
    if stream and response_format not in ("json", "text"):
        raise invalid("stream=true works with response_format json or text", "stream")

    options: Dict[str, Any] = {"task": task, "word_timestamps": "word" in granularities}
    language = _text(fields, "language")
    if task == "transcribe" and language:
        options["language"] = language.lower()
    prompt = _text(fields, "prompt")
    if prompt:
        options["initial_prompt"] = prompt
    hotwords = _text(fields, "hotwords")
    if hotwords:
        options["hotwords"] = hotwords
    temperature = _number(fields, "temperature", float)
    if temperature is not None:
        options["temperature"] = temperature
    beam_size = _number(fields, "beam_size", int)
    if beam_size is not None:
        options["beam_size"] = beam_size
    vad = _flag(fields, "vad_filter")
    if vad is not None:
        options["vad_filter"] = vad
    try:
        validate(options)
    except InvalidArgumentError as exc:
        option = getattr(exc, "option", None)
        raise ApiError(400, str(exc), "invalid_request_error",
                       FORM_NAME.get(option, option), "invalid_value") from None
    return AudioForm(task, model, response_format, tuple(granularities), stream, options)
