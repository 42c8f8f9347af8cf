"""What model `whisper_engine` accepts: one request's inputs, checked before any decoding.

The engine answers anyone who reaches Triton's ports, not only the front model `whisper`
that feeds it over BLS, so it is a trust boundary: every input is checked here (shape, data
type, values, the decoding options with the front's own limits) and a caller that does not
present the shared secret is turned away. Pure functions over numpy arrays; a refusal is an
InvalidInputError whose message is a sentence for the caller.

    if not caller_allowed(secret_rows, expected=engine_secret(os.environ)):
        ...  # answer NOT_THE_FRONT
    windows = read_request(features, frames, options, n_mels=80, limits=Limits())
"""

from __future__ import annotations

import hmac
from dataclasses import asdict, dataclass
from typing import Any, List, Mapping, Optional

import numpy as np

from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions, Limits
from whisper_triton.options import InvalidOptionError, validate

WINDOW_FRAMES = 3000
"""Frames of one 30 s window of log-mel features (Whisper's N_FRAMES)."""

SECRET_ENV = "WHISPER_ENGINE_SECRET"
"""Environment variable of tritonserver that holds the secret the front presents."""

SECRET_INPUT = "CALLER_SECRET"
"""Optional input of the engine through which the front presents it."""

NOT_THE_FRONT = "whisper_engine is internal: call model 'whisper' instead."

_DEFAULTS = asdict(DecodeOptions())


@dataclass(frozen=True)
class EngineRequest:
    """The checked inputs of one engine request: k windows."""

    features: np.ndarray            # [k, n_mels, 3000], float32, finite
    frames: List[int]               # k values, 1..3000: frames that hold audio
    options: List[DecodeOptions]    # k options, within the front's limits

    def __len__(self) -> int:
        return len(self.frames)


def engine_secret(environ: Mapping[str, str]) -> Optional[str]:
    """The secret callers must present, or None when none is configured (empty counts as none)."""
    return environ.get(SECRET_ENV) or None


def caller_allowed(presented: Optional[np.ndarray], expected: Optional[str]) -> bool:
    """Whether the CALLER_SECRET input (None: not sent) matches the expected secret.

    No expected secret: everyone is allowed. Otherwise every row must carry it exactly;
    compared in constant time.
    """
    if expected is None:
        return True
    if presented is None:
        return False
    values = np.asarray(presented).reshape(-1)
    if values.size == 0:
        return False
    wanted = expected.encode("utf-8")
    allowed = True
    for value in values:
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray)):
            return False
        allowed &= hmac.compare_digest(bytes(value), wanted)
    return allowed


def read_request(features: Optional[np.ndarray], frames: Optional[np.ndarray],
                 options: Optional[np.ndarray], *, n_mels: int, limits: Limits) -> EngineRequest:
    """Every input of one request, checked; raises InvalidInputError naming the first fault."""
    checked = check_features(features, n_mels)
    rows = checked.shape[0]
    return EngineRequest(checked, check_frames(frames, rows), check_options(options, rows, limits))


def check_features(features: Optional[np.ndarray], n_mels: int) -> np.ndarray:
    """FEATURES: [k, n_mels, 3000] float32, k >= 1, every value finite."""
    if features is None:
        raise _refuse("the FEATURES input is missing.", "invalid_features")
    if features.dtype != np.float32:
        raise _refuse(f"FEATURES must be FP32 (float32), not {_type_name(features)}.",
                      "invalid_features")
    if features.ndim != 3 or features.shape[0] < 1:
        raise _refuse(f"FEATURES must have shape [windows, {n_mels}, {WINDOW_FRAMES}] with at "
                      f"least one window, not {_shape(features)}.", "invalid_features")
    if features.shape[1] != n_mels:
        raise _refuse(f"FEATURES has {features.shape[1]} mel bins; the served model expects "
                      f"{n_mels}.", "invalid_features")
    if features.shape[2] != WINDOW_FRAMES:
        raise _refuse(f"FEATURES has {features.shape[2]} frames per window; a window has "
                      f"{WINDOW_FRAMES} (30 s, padded).", "invalid_features")
    if not np.isfinite(features).all():
        raise _refuse("FEATURES holds non-finite values (NaN or infinity); send log-mel "
                      "features as the front model computes them.", "invalid_features")
    return features


def check_frames(frames: Optional[np.ndarray], rows: int) -> List[int]:
    """NUM_FRAMES: [k, 1] or [k] whole numbers, each 1..3000."""
    if frames is None:
        raise _refuse("the NUM_FRAMES input is missing.", "invalid_frames")
    if frames.dtype.kind not in "iu":
        raise _refuse(f"NUM_FRAMES must be whole numbers (INT32), not {_type_name(frames)}.",
                      "invalid_frames")
    values = _one_per_row("NUM_FRAMES", frames, rows, "invalid_frames")
    for row, value in enumerate(values):
        if not 1 <= int(value) <= WINDOW_FRAMES:
            raise _refuse(f"NUM_FRAMES of window {row} is {int(value)}; use 1 to "
                          f"{WINDOW_FRAMES} (the frames of the window that hold audio).",
                          "invalid_frames")
    return [int(value) for value in values]


def check_options(options: Optional[np.ndarray], rows: int, limits: Limits
                  ) -> List[DecodeOptions]:
    """OPTIONS: [k, 1] or [k] JSON texts of DecodeOptions, each valid and within the limits."""
    if options is None:
        raise _refuse("the OPTIONS input is missing.", "invalid_options")
    values = _one_per_row("OPTIONS", options, rows, "invalid_options")
    return [parse_options(value, limits, row) for row, value in enumerate(values)]


def parse_options(raw: Any, limits: Limits, row: int = 0) -> DecodeOptions:
    """One OPTIONS value: non-empty JSON of DecodeOptions, by the shared schema's rules and
    the front's limits (largest beam, longest prompt)."""
    if not isinstance(raw, (bytes, str)):
        raise _refuse(f"OPTIONS of window {row} must be text (BYTES), not "
                      f"{type(raw).__name__}.", "invalid_options")
    if not raw.strip():
        raise _refuse(f"OPTIONS of window {row} is empty; send the decoding options as JSON "
                      "(DecodeOptions.to_json).", "invalid_options")
    if len(raw) > max_options_length(limits):
        raise _refuse(f"OPTIONS of window {row} has {len(raw)} bytes; decoding options within "
                      f"the limits take at most {max_options_length(limits)}.",
                      "invalid_options")
    options = DecodeOptions.from_json(raw)
    # The front checks the values a request gives against its limits and not the defaults
    # (a max_beam_size under the default beam size still lets the default through): the same.
    given = {name: value for name, value in asdict(options).items() if value != _DEFAULTS[name]}
    try:
        validate(given, limits)
    except InvalidOptionError as exc:
        raise InvalidInputError(exc.message, exc.reason) from None
    return options


def max_options_length(limits: Limits) -> int:
    """Longest OPTIONS text the limits allow: two prompts of max_prompt_chars characters,
    each at most 12 bytes as JSON (a \\uXXXX surrogate pair per character), and the rest."""
    return 4096 + 2 * 12 * limits.max_prompt_chars


def _one_per_row(name: str, array: np.ndarray, rows: int, reason: str) -> np.ndarray:
    if array.ndim not in (1, 2) or (array.ndim == 2 and array.shape[1] != 1):
        raise _refuse(f"{name} must have shape [windows, 1], not {_shape(array)}.", reason)
    if array.shape[0] != rows:
        raise _refuse(f"{name} has {array.shape[0]} rows; FEATURES has {rows} windows, and "
                      "each window needs one.", reason)
    return array.reshape(-1)


def _refuse(message: str, reason: str) -> InvalidInputError:
    return InvalidInputError(message, reason)


def _shape(array: np.ndarray) -> str:
    return "[" + ", ".join(str(d) for d in array.shape) + "]"


def _type_name(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == np.object_ else str(array.dtype)
