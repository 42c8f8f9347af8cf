"""Python logging inside Triton's Python stubs, routed to the server's log.

A stub's own stderr does not reach Triton's log, so records of the `whisper*` loggers (the
model.py files and whisper_service) would be lost; this handler hands them to pb_utils.Logger.
"""

from __future__ import annotations

import logging


class TritonLogHandler(logging.Handler):
    def __init__(self, pb_utils):
        super().__init__()
        self.logger = pb_utils.Logger
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.ERROR:
                self.logger.log_error(message)
            elif record.levelno >= logging.WARNING:
                self.logger.log_warn(message)
            else:
                self.logger.log_info(message)
        except Exception:  # noqa: BLE001 - logging must never fail a request
            self.handleError(record)


def route_to_triton(pb_utils, names=("whisper", "whisper_engine", "whisper_service")) -> None:
    """Send INFO and above of these loggers to Triton's log, once per stub process."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(h, TritonLogHandler) for h in logger.handlers):
            logger.addHandler(TritonLogHandler(pb_utils))
            logger.setLevel(logging.INFO)
            logger.propagate = False
