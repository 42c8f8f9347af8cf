"""The decoding options of model `whisper`: one schema for the client, the CLI and the server.

Every option is one optional input tensor of the model, one keyword of the client, one flag
of `whisper-triton` and one field of the server's `DecodeOptions`. `OPTIONS` lists them and
`validate` holds their rules; the client calls it before sending, the server calls it on what
it received, adding its configured limits (largest beam, longest prompt), so that both sides
accept and refuse the same values with the same message::

    validate({"language": " EN ", "beam_size": 3})          # client: the rules
    validate(from_tensors(inputs), limits)                   # server: the rules and its limits

Only the standard library and numpy: the server imports this module as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .errors import InvalidArgumentError
from .languages import LANGUAGES

__all__ = [
    "Option",
    "OPTIONS",
    "InvalidOptionError",
    "OptionValues",
    "TranscribeOptions",
    "validate",
    "from_tensors",
    "tensors",
]

_LANGUAGE_CODES = frozenset(LANGUAGES)
_DETECT = ("", "auto")


class InvalidOptionError(InvalidArgumentError):
    """An option the schema refuses. `reason` is a short stable label (the server counts
    refusals by it), `option` the option's keyword."""

    def __init__(self, message: str, reason: str, option: Optional[str] = None):
        super().__init__(message)
        self.reason = reason
        self.option = option


@dataclass(frozen=True)
class Option:
    """One decoding option and its rule.

    `check(option, value, limits)` returns the normalised value or raises InvalidOptionError;
    a value of None means "not given" and normalises to `default`. `limit` names the
    attribute of the server's limits that bounds the option (None: no server limit).
    """

    name: str                    # client keyword, options field and CLI dest
    tensor: str                  # optional input of model `whisper`
    datatype: str                # Triton datatype of that input
    type: type                   # Python type of the normalised value
    default: Any                 # None: the input is left out and the server decides
    help: str                    # one line for `whisper-triton --help`
    check: Callable[["Option", Any, Any], Any]
    flags: Tuple[str, ...] = ()  # CLI flags; empty: --name-with-dashes
    choices: Optional[Tuple[str, ...]] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    limit: Optional[str] = None

    @property
    def cli_flags(self) -> Tuple[str, ...]:
        return self.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def reason(self) -> str:
        return f"invalid_{self.name}"

    def refuse(self, message: str, reason: Optional[str] = None) -> InvalidOptionError:
        return InvalidOptionError(message, reason or self.reason, self.name)


def _upper_limit(option: Option, limits: Any) -> Optional[float]:
    if option.limit is not None and limits is not None:
        return getattr(limits, option.limit)
    return option.maximum


def _span(low: Optional[float], high: Optional[float], decimals: bool = False) -> str:
    """ "1 to 10", "0.0 to 1.0", "1 or more": the range to put in a message."""
    def show(x: float) -> str:
        return f"{x:.1f}" if decimals else f"{x:g}"
    if high is None:
        return f"{show(low or 0)} or more"
    if low is None:
        return f"at most {show(high)}"
    return f"{show(low)} to {show(high)}"


# --- rules, one per kind of option -------------------------------------------------------

def _language(option: Option, value: Any, limits: Any) -> Optional[str]:
    """A Whisper language code; empty or "auto" means detect (None)."""
    if value is None:
        return option.default
    if not isinstance(value, str):
        raise option.refuse(f"{option.tensor} must be a language code such as 'en', "
                            f"not {value!r}.")
    code = value.strip().lower()
    if code in _DETECT:
        return None
    if code not in _LANGUAGE_CODES:
        raise option.refuse(
            f"{option.tensor} {value.strip()!r} is not a Whisper language code; use an ISO "
            "639-1 code such as en, zh, de (whisper_triton.LANGUAGES lists all "
            f"{len(LANGUAGES)}), or leave {option.tensor} out (or send 'auto') to detect it.")
    return code


def _choice(option: Option, value: Any, limits: Any) -> str:
    """One of `choices`, any case; empty means the default."""
    if value is None:
        return option.default
    if not isinstance(value, str):
        raise option.refuse(f"{option.tensor} must be text, not {value!r}.")
    text = value.strip().lower()
    if not text:
        return option.default
    if text not in (option.choices or ()):
        allowed = " or ".join(repr(c) for c in option.choices or ())
        raise option.refuse(f"{option.tensor} {value.strip()!r} is not supported; use {allowed}.")
    return text


def _whole_number(option: Option, value: Any, limits: Any) -> int:
    """An integer from `minimum` up to the server's limit (or `maximum`)."""
    if value is None:
        return option.default
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise option.refuse(f"{option.tensor} must be a whole number, not {value!r}.")
    number = int(value)
    low, high = option.minimum, _upper_limit(option, limits)
    if (low is not None and number < low) or (high is not None and number > high):
        raise option.refuse(
            f"{option.tensor} {number} is out of range; use {_span(low, high)}.")
    return number


def _number(option: Option, value: Any, limits: Any) -> float:
    """A finite number within [minimum, maximum], kept to 4 decimals (FP32 on the wire
    turns 0.2 into 0.2000000030: both sides then agree on 0.2)."""
    if value is None:
        return option.default
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)):
        raise option.refuse(f"{option.tensor} must be a number, not {value!r}.")
    number = float(value)
    low, high = option.minimum, _upper_limit(option, limits)
    if (not math.isfinite(number) or (low is not None and number < low)
            or (high is not None and number > high)):
        raise option.refuse(
            f"{option.tensor} {number:g} is out of range; use {_span(low, high, True)}.")
    return round(number, 4)


def _flag(option: Option, value: Any, limits: Any) -> bool:
    if value is None:
        return option.default
    if not isinstance(value, (bool, np.bool_)):
        raise option.refuse(f"{option.tensor} must be true or false, not {value!r}.")
    return bool(value)


def _text(option: Option, value: Any, limits: Any) -> Optional[str]:
    """Free text up to the server's limit of characters; blank means not given."""
    if value is None:
        return option.default
    if not isinstance(value, str):
        raise option.refuse(f"{option.tensor} must be text (str), not {type(value).__name__}.",
                            "invalid_text")
    if not value.strip():
        return option.default
    high = _upper_limit(option, limits)
    if high is not None and len(value) > high:
        raise option.refuse(
            f"{option.tensor} has {len(value)} characters; the limit is {high:g}.",
            "text_too_long")
    return value


# --- the schema --------------------------------------------------------------------------

OPTIONS: Tuple[Option, ...] = (
    Option("language", "LANGUAGE", "BYTES", str, None,
           "language code such as en or zh (default: detect)", _language),
    Option("task", "TASK", "BYTES", str, "transcribe",
           "transcribe, or translate into English (default: transcribe)", _choice,
           choices=("transcribe", "translate")),
    Option("beam_size", "BEAM_SIZE", "INT32", int, 5,
           "beams of the search; 1 is greedy (default: 5; the server sets the maximum)",
           _whole_number, minimum=1, limit="max_beam_size"),
    Option("word_timestamps", "WORD_TIMESTAMPS", "BOOL", bool, False,
           "start and end time of every word", _flag),
    Option("vad_filter", "VAD_FILTER", "BOOL", bool, False,
           "skip silence with voice detection", _flag, flags=("--vad", "--vad-filter")),
    Option("initial_prompt", "INITIAL_PROMPT", "BYTES", str, None,
           "text that primes vocabulary and style", _text, limit="max_prompt_chars"),
    Option("hotwords", "HOTWORDS", "BYTES", str, None,
           "words to favour", _text, limit="max_prompt_chars"),
    Option("temperature", "TEMPERATURE", "FP32", float, 0.0,
           "sampling temperature, 0 to 1; 0 is greedy with fallback to higher ones "
           "when decoding fails (default: 0)", _number, minimum=0.0, maximum=1.0),
)

_BY_NAME = {option.name: option for option in OPTIONS}
_NUMPY_TYPES = {"BYTES": np.object_, "INT32": np.int32, "BOOL": np.bool_, "FP32": np.float32}


def validate(values: Mapping[str, Any], limits: Any = None) -> Dict[str, Any]:
    """Every option's normalised value from the given ones (keyword -> value; missing or
    None = default), or InvalidOptionError naming the first wrong one and how to fix it.

    `limits`: the server's bounds, any object with the attributes the options' `limit`
    name (whisper_service.options.Limits); None on the client, which leaves them to the server.
    """
    unknown = sorted(set(values) - set(_BY_NAME))
    if unknown:
        raise InvalidOptionError(
            f"unknown option(s): {', '.join(unknown)}; the options are "
            f"{', '.join(_BY_NAME)}.", "unknown_option")
    return {o.name: o.check(o, values.get(o.name), limits) for o in OPTIONS}


def from_tensors(inputs: Mapping[str, Any]) -> Dict[str, Any]:
    """Option values (keyword -> value) from one request's inputs (tensor name -> one value),
    for `validate`: BYTES become text, numpy scalars Python scalars; absent inputs are left out.
    """
    values: Dict[str, Any] = {}
    for option in OPTIONS:
        if option.tensor not in inputs:
            continue
        value = inputs[option.tensor]
        if isinstance(value, np.generic):
            value = value.item()
        if option.datatype == "BYTES" and isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise option.refuse(f"{option.tensor} is not UTF-8 text; send text inputs "
                                    "encoded as UTF-8.", "invalid_text") from None
        values[option.name] = value
    return values


def tensors(values: Mapping[str, Any]) -> List[Tuple[str, str, np.ndarray]]:
    """(input name, Triton datatype, [1, 1] array) of every option whose value is not None,
    in schema order; `values` are validated ones."""
    out = []
    for option in OPTIONS:
        value = values.get(option.name)
        if value is None:
            continue
        if option.datatype == "BYTES":
            value = value.encode("utf-8")
        out.append((option.tensor, option.datatype,
                    np.array([[value]], dtype=_NUMPY_TYPES[option.datatype])))
    return out


# --- the client's options object ---------------------------------------------------------

def _post_init(self: Any) -> None:
    for name, value in validate({f.name: getattr(self, f.name) for f in fields(self)}).items():
        object.__setattr__(self, name, value)


def _tensors(self: Any) -> List[Tuple[str, str, np.ndarray]]:
    return tensors({f.name: getattr(self, f.name) for f in fields(self)})


# One field per option, built from OPTIONS so that a new option is a new field without
# another list to keep in step: the client's TranscribeOptions and the server's DecodeOptions
# both derive from it.
OptionValues = make_dataclass(
    "OptionValues",
    [(o.name, o.type if o.default is not None else Optional[o.type], field(default=o.default))
     for o in OPTIONS],
    frozen=True,
    namespace={"__doc__": "One field per option of OPTIONS, with its default."},
)
OptionValues.__module__ = __name__

TranscribeOptions = make_dataclass(
    "TranscribeOptions",
    [],
    bases=(OptionValues,),
    frozen=True,
    namespace={
        "__doc__": "Validated decoding options of one request (see OPTIONS); a None value "
                   "leaves its input out.\n\nRaises InvalidOptionError (an InvalidArgumentError).",
        "__post_init__": _post_init,
        "tensors": _tensors,
    },
)
TranscribeOptions.__module__ = __name__
