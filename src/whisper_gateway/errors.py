"""OpenAI's error envelope, and the one place that maps the client's errors onto it.

Every error the gateway answers is an `ApiError`: status code, message, type, param, code,
rendered as ``{"error": {"message", "type", "param", "code"}}`` like OpenAI's API.

    whisper_triton error        status  type                    code
    InvalidAudioError           400     invalid_request_error   invalid_file
    InvalidArgumentError        400     invalid_request_error   invalid_value
    OverloadedError             503     server_error            overloaded       (Retry-After)
    ServerUnavailableError      503     server_error            service_unavailable (Retry-After)
    RequestTimeoutError         504     server_error            timeout
    ServerError, anything else  500     server_error            internal_error
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from whisper_triton.errors import (InvalidArgumentError, InvalidAudioError, OverloadedError,
                                   RequestTimeoutError, ServerUnavailableError, WhisperError)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
# The form's names for the client's option names (the rest are the same).
FORM_NAME = {"initial_prompt": "prompt"}


@dataclass
class ApiError(Exception):
    status: int
    message: str
    type: str = INVALID_REQUEST
    param: Optional[str] = None
    code: Optional[str] = None
    headers: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def invalid(message: str, param: Optional[str] = None, code: Optional[str] = "invalid_value"
            ) -> ApiError:
    return ApiError(400, message, INVALID_REQUEST, param, code)


def unknown_model(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                    INVALID_REQUEST, "model", "model_not_found")


def from_client_error(error: BaseException, retry_after: int = 1) -> ApiError:
    """What the caller gets for an error of whisper_triton (or anything unexpected)."""
    message = str(error) or type(error).__name__
    if isinstance(error, InvalidAudioError):
        return ApiError(400, f"The audio file could not be transcribed: {message}",
                        INVALID_REQUEST, "file", "invalid_file")
    if isinstance(error, InvalidArgumentError):
        option = getattr(error, "option", None)
        param = FORM_NAME.get(option, option) if option else None
        return ApiError(400, message, INVALID_REQUEST, param, "invalid_value")
    wait = {"Retry-After": str(retry_after)}
    if isinstance(error, OverloadedError):
        return ApiError(503, "The speech service is overloaded; retry after a short wait.",
                        SERVER_ERROR, None, "overloaded", wait)
    if isinstance(error, ServerUnavailableError):
        return ApiError(503, "The speech service is unavailable; retry after a short wait.",
                        SERVER_ERROR, None, "service_unavailable", wait)
    if isinstance(error, RequestTimeoutError):
        return ApiError(504, "The transcription took too long and was stopped.",
                        SERVER_ERROR, None, "timeout")
    if isinstance(error, WhisperError):
        return ApiError(500, "The speech service failed; see its log.", SERVER_ERROR, None,
                        "internal_error")
    return ApiError(500, "Internal error in the gateway; see its log.", SERVER_ERROR, None,
                    "internal_error")
