"""API keys (`Authorization: Bearer <key>`) and per-key concurrency limits.

No keys configured: the gateway is open (the app logs so at start), and all callers share
one concurrency budget. Keys are compared in constant time. A key that has its limit of
requests in flight is answered 429 with Retry-After, in OpenAI's envelope.
"""

from __future__ import annotations

import hmac
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Sequence

from whisper_gateway.errors import ApiError

OPEN = "(open)"


class Access:
    def __init__(self, keys: Sequence[str], max_concurrent: int, retry_after_s: int = 1):
        self.keys = tuple(keys)
        self.max_concurrent = max_concurrent
        self.retry_after_s = retry_after_s
        self.in_flight: Dict[str, int] = {}

    @property
    def open(self) -> bool:
        return not self.keys

    def identify(self, authorization: Optional[str]) -> str:
        """The caller's key (OPEN when no keys are configured); raises 401."""
        if self.open:
            return OPEN
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if not authorization or scheme.lower() != "bearer" or not token:
            raise ApiError(401, "You didn't provide an API key. Provide it in the Authorization "
                                "header as 'Authorization: Bearer YOUR_KEY'.",
                           "invalid_request_error", None, None)
        for key in self.keys:
            if hmac.compare_digest(key.encode(), token.encode()):
                return key
        shown = token[:3] + "*" * max(0, min(len(token) - 7, 20)) + token[-4:] if len(token) > 8 else "***"
        raise ApiError(401, f"Incorrect API key provided: {shown}.", "invalid_request_error",
                       None, "invalid_api_key")

    def acquire(self, key: str) -> None:
        """Take one of the key's concurrent slots; raises 429 when none is free."""
        if self.in_flight.get(key, 0) >= self.max_concurrent:
            raise ApiError(429, f"Too many requests in flight for this key (limit "
                                f"{self.max_concurrent}); retry when one has finished.",
                           "requests", None, "rate_limit_exceeded",
                           {"Retry-After": str(self.retry_after_s)})
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def release(self, key: str) -> None:
        self.in_flight[key] -= 1
        if not self.in_flight[key]:
            del self.in_flight[key]

    @contextmanager
    def slot(self, key: str) -> Iterator[None]:
        """Hold one of the key's slots for the block (acquire, then release)."""
        self.acquire(key)
        try:
            yield
        finally:
            self.release(key)
