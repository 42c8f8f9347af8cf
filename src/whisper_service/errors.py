"""Errors that belong to one request and are reported to its caller."""


class InvalidInputError(ValueError):
    """The request itself is wrong: the message tells the caller what to change.

    `reason` is a short stable label for metrics (`whisper_errors_total{reason=...}`).
    """

    def __init__(self, message: str, reason: str = "invalid_argument"):
        super().__init__(message)
        self.reason = reason


class InvalidAudioError(InvalidInputError):
    """The AUDIO bytes cannot be used as audio."""

    def __init__(self, message: str, reason: str = "invalid_audio"):
        super().__init__(message, reason)


class ServerBusyError(Exception):
    """The request is fine but the server cannot take it now (UNAVAILABLE): retry later."""

    def __init__(self, message: str, reason: str = "busy"):
        super().__init__(message)
        self.reason = reason
