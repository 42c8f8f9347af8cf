"""The gateway's configuration: every value from the environment, with defaults, in one place.

| variable | default | meaning |
| --- | --- | --- |
| GATEWAY_HOST, GATEWAY_PORT | 0.0.0.0, 8080 | where the gateway listens |
| GATEWAY_TRITON_URLS | localhost:8001 | Triton gRPC address(es), comma separated: round robin, failover |
| GATEWAY_MODEL_ID | whisper | the model id callers name (also accepted: whisper-1) |
| GATEWAY_API_KEYS | (none) | accepted API keys, comma separated |
| GATEWAY_API_KEYS_FILE | (none) | a file of API keys, one a line (a mounted secret) |
| GATEWAY_MAX_UPLOAD_MB | 256 | largest request body, MiB (413 above) |
| GATEWAY_MAX_CONCURRENT_PER_KEY | 8 | requests in flight per key (429 above; the open gateway counts all callers as one) |
| GATEWAY_TIMEOUT_SECS | 600 | one transcription's time limit, end to end |
| GATEWAY_RETRIES | 1 | extra rounds over the Triton addresses for unavailable/overloaded |
| GATEWAY_STREAM_IDLE_SECS | 30 | a stream that hears nothing (not even whisper_stream's heartbeat) this long fails with 503 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Mapping, Optional, Tuple

ALIAS = "whisper-1"


@dataclass(frozen=True)
class Settings:
    triton_urls: Tuple[str, ...] = ("localhost:8001",)
    model_id: str = "whisper"
    triton_model: str = "whisper"
    stream_model: str = "whisper_stream"
    api_keys: Tuple[str, ...] = ()
    max_upload_bytes: int = 256 * 1024 * 1024
    max_concurrent_per_key: int = 8
    timeout_s: float = 600.0
    retries: int = 1
    stream_idle_s: float = 30.0
    host: str = "0.0.0.0"
    port: int = 8080
    aliases: Tuple[str, ...] = field(default=(ALIAS,))

    @property
    def model_ids(self) -> Tuple[str, ...]:
        """Every name a caller may give as `model`."""
        return tuple(dict.fromkeys((self.model_id,) + self.aliases))

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Settings":
        env = os.environ if env is None else env
        urls = tuple(u.strip() for u in env.get("GATEWAY_TRITON_URLS", "localhost:8001").split(",")
                     if u.strip())
        if not urls:
            raise ValueError("GATEWAY_TRITON_URLS names no Triton address")
        limit = int(env.get("GATEWAY_MAX_CONCURRENT_PER_KEY", "8"))
        if limit < 1:
            raise ValueError("GATEWAY_MAX_CONCURRENT_PER_KEY must be at least 1")
        return cls(
            triton_urls=urls,
            model_id=env.get("GATEWAY_MODEL_ID", "whisper").strip() or "whisper",
            api_keys=read_keys(env.get("GATEWAY_API_KEYS", ""), env.get("GATEWAY_API_KEYS_FILE")),
            max_upload_bytes=int(float(env.get("GATEWAY_MAX_UPLOAD_MB", "256")) * 1024 * 1024),
            max_concurrent_per_key=limit,
            timeout_s=float(env.get("GATEWAY_TIMEOUT_SECS", "600")),
            retries=int(env.get("GATEWAY_RETRIES", "1")),
            stream_idle_s=float(env.get("GATEWAY_STREAM_IDLE_SECS", "30")),
            host=env.get("GATEWAY_HOST", "0.0.0.0"),
            port=int(env.get("GATEWAY_PORT", "8080")),
        )


def read_keys(listed: str, path: Optional[str]) -> Tuple[str, ...]:
    """Keys from a comma-separated list and from a file (one a line, # comments)."""
    keys: List[str] = [k.strip() for k in listed.split(",") if k.strip()]
    if path:
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    return tuple(dict.fromkeys(keys))
