"""Decoding options of one request: the server's limits and its side of validation.

The options themselves (names, inputs, defaults, rules) are the client package's schema,
`whisper_triton.options`: `parse_options` applies the same `validate` the client applies
before sending, plus the `Limits` built from config parameters. One `DecodeOptions` travels
from the front model to the engine (as JSON per window) instead of a dozen loose values.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterator, Mapping

from whisper_service.errors import InvalidInputError
from whisper_triton.options import InvalidOptionError, OptionValues, from_tensors, validate


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
class DecodeOptions(OptionValues):
    """Validated options, as the engine receives them: the schema's fields
    (whisper_triton.options.OPTIONS: same names and defaults, defined there only)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "DecodeOptions":
        """Options as the engine receives them (empty text: the defaults; the engine model
        refuses empty OPTIONS before it gets here).

        The engine is callable by anyone who reaches the server, so what arrives is checked
        by the same rules as a request's inputs (without the front's limits); keys of no
        option are ignored. Raises InvalidInputError.
        """
        if not text:
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise InvalidInputError(
                "OPTIONS is not a JSON object of decoding options (DecodeOptions.to_json).",
                "invalid_options")
        with _refusals_as_input_errors():
            return cls(**validate({k: v for k, v in data.items() if k in cls.__dataclass_fields__}))

    def generation_key(self) -> tuple:
        """Windows whose options share this key can be decoded in one generate call.

        Language, task, prompt and hotwords only change the prompt tokens, which may differ
        per window inside one call; beam size and temperature may not.
        """
        return (self.beam_size, self.temperature)


def parse_options(raw: Mapping[str, Any], limits: Limits) -> DecodeOptions:
    """Validate the optional inputs of one request (input name -> value; others ignored)
    against the shared schema and these limits; raise InvalidInputError with a fix."""
    with _refusals_as_input_errors():
        return DecodeOptions(**validate(from_tensors(raw), limits))


@contextmanager
def _refusals_as_input_errors() -> Iterator[None]:
    """The schema's refusal (the client's error type) as the server's InvalidInputError,
    same message and reason: the one place the two are mapped."""
    try:
        yield
    except InvalidOptionError as exc:
        raise InvalidInputError(exc.message, exc.reason) from None
