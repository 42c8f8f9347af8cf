"""Exceptions of the client, and the one place that turns transport errors into them.

::

    WhisperError                       base of everything the client raises on purpose
    ├── InvalidArgumentError           (also ValueError) a bad option; fix the call
    ├── InvalidAudioError              (also ValueError) the audio cannot be used as audio
    ├── ServerUnavailableError         (also ConnectionError) refused, unreachable, not ready
    ├── OverloadedError                the server's queue is full; try later or elsewhere
    ├── RequestTimeoutError            (also TimeoutError) no answer in time, or queue timeout
    └── ServerError                    anything else the server reported (internal errors...)

`retryable` is True on the three classes a retry (or another server) may cure. Everything
the server or the transport raises goes through `map_error`, which is pure: it only reads
the exception it is given.
"""

from __future__ import annotations

import re
from typing import Optional, Type

__all__ = [
    "WhisperError",
    "InvalidArgumentError",
    "InvalidAudioError",
    "ServerUnavailableError",
    "OverloadedError",
    "RequestTimeoutError",
    "ServerError",
    "map_error",
]


class WhisperError(Exception):
    """Base class. `status` is the transport's status when one was given ("400",
    "StatusCode.UNAVAILABLE"...), `url` the server the failed call went to."""

    retryable = False

    def __init__(self, message: str, *, status: Optional[str] = None, url: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url


class InvalidArgumentError(WhisperError, ValueError):
    """An option is wrong (unknown language, beam size out of range...)."""


class InvalidAudioError(WhisperError, ValueError):
    """The audio is empty, truncated, or not in a format the server can decode."""


class ServerUnavailableError(WhisperError, ConnectionError):
    """Nothing answers at the address, or the server/model is not ready."""

    retryable = True


class OverloadedError(WhisperError):
    """The server refused the request because its queue is full."""

    retryable = True


class RequestTimeoutError(WhisperError, TimeoutError):
    """The request did not finish in time (client deadline or server queue timeout)."""

    retryable = True


class ServerError(WhisperError):
    """The server failed in a way the caller cannot fix (internal error, unknown model...)."""


# Status spellings of both transports, reduced to one key: HTTP gives "400", gRPC gives
# "StatusCode.INVALID_ARGUMENT"; tritonclient's own client-side errors give None.
_STATUS = {
    "400": "INVALID_ARGUMENT",
    "404": "NOT_FOUND",
    "408": "DEADLINE_EXCEEDED",
    "429": "RESOURCE_EXHAUSTED",
    "499": "CANCELLED",
    "500": "INTERNAL",
    "502": "UNAVAILABLE",
    "503": "UNAVAILABLE",
    "504": "DEADLINE_EXCEEDED",
}

# The server's audio messages all start with "AUDIO ..." (see whisper_service.audio); the
# generic words cover other decoders and future wording.
_AUDIO_MESSAGE = re.compile(
    r"\bAUDIO (is|has|could|contains)\b|decod|not an audio|no audio stream|invalid data found",
    re.IGNORECASE,
)
_QUEUE_FULL = re.compile(r"queue (is )?full|maximum queue size|exceeds .*queue", re.IGNORECASE)
_QUEUE_TIMEOUT = re.compile(r"timeout expired|timed out|deadline", re.IGNORECASE)
_REFUSED = re.compile(
    r"connection refused|failed to connect|connect call failed|name resolution|"
    r"unreachable|no route to host|socket closed|connection reset",
    re.IGNORECASE,
)


def normalize_status(status: Optional[str]) -> Optional[str]:
    """"StatusCode.INVALID_ARGUMENT" and "400" both become "INVALID_ARGUMENT"."""
    if status is None:
        return None
    status = str(status).strip()
    if status.startswith("StatusCode."):
        return status[len("StatusCode."):]
    return _STATUS.get(status, status.upper())


def _classify(status: Optional[str], message: str) -> Type[WhisperError]:
    code = normalize_status(status)
    if code == "INVALID_ARGUMENT":
        return InvalidAudioError if _AUDIO_MESSAGE.search(message) else InvalidArgumentError
    if code in ("UNAVAILABLE", "RESOURCE_EXHAUSTED"):
        if _QUEUE_FULL.search(message) or code == "RESOURCE_EXHAUSTED":
            return OverloadedError
        if _QUEUE_TIMEOUT.search(message):
            return RequestTimeoutError
        return ServerUnavailableError
    if code == "DEADLINE_EXCEEDED":
        return RequestTimeoutError
    if code is None and _REFUSED.search(message):
        return ServerUnavailableError
    return ServerError


def map_error(exc: BaseException, url: Optional[str] = None) -> WhisperError:
    """Translate what tritonclient (HTTP or gRPC, sync or aio) or the network raised.

    Returns the new exception; the caller raises it `from exc` so the original stays in
    the traceback. A WhisperError passes through unchanged.
    """
    if isinstance(exc, WhisperError):
        return exc
    status_fn = getattr(exc, "status", None)
    message_fn = getattr(exc, "message", None)
    if callable(status_fn) and callable(message_fn):
        # tritonclient.utils.InferenceServerException, duck-typed so this stays pure.
        status = status_fn()
        message = message_fn() or str(exc) or "no message"
        cls = _classify(status, message)
        prefix = {
            ServerUnavailableError: f"server at {url} is unavailable: " if url else "",
            RequestTimeoutError: f"request to {url} timed out: " if url else "",
        }.get(cls, "")
        return cls(prefix + message, status=None if status is None else str(status), url=url)
    # Raw network errors: sync HTTP (geventhttpclient) raises socket errors, HTTP aio
    # raises aiohttp errors; neither is wrapped by tritonclient.
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) or type(exc).__name__ in ("ServerTimeoutError", "Timeout"):
        return RequestTimeoutError(f"request to {url} timed out ({detail})", url=url)
    if isinstance(exc, OSError) or type(exc).__module__.startswith("aiohttp"):
        return ServerUnavailableError(f"cannot reach the server at {url}: {detail}", url=url)
    return ServerError(f"{type(exc).__name__}: {detail}", url=url)
