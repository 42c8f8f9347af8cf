"""The gateway's own Prometheus metrics, rendered as Prometheus text (`GET /metrics`).

    gateway_requests_total{endpoint, status}            counter
    gateway_request_duration_seconds{endpoint}          histogram
    gateway_requests_in_flight                          gauge
    gateway_audio_bytes_total                           counter

One process, one event loop: plain dicts, no locks.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Tuple

BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests: Dict[Tuple[str, str], int] = defaultdict(int)
        self.durations: Dict[str, List[int]] = {}
        self.duration_sums: Dict[str, float] = defaultdict(float)
        self.in_flight = 0
        self.audio_bytes = 0

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, str(status))] += 1
        counts = self.durations.setdefault(endpoint, [0] * (len(BUCKETS) + 1))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.duration_sums[endpoint] += seconds

    def render(self) -> str:
        lines = ["# HELP gateway_requests_total Requests answered, by endpoint and status code.",
                 "# TYPE gateway_requests_total counter"]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f"gateway_requests_total{_labels(endpoint=endpoint, status=status)} {count}")
        lines += ["# HELP gateway_request_duration_seconds Time to answer a request, by endpoint.",
                  "# TYPE gateway_request_duration_seconds histogram"]
        for endpoint, counts in sorted(self.durations.items()):
            for bound, count in zip(BUCKETS, counts):
                lines.append("gateway_request_duration_seconds_bucket"
                             f"{_labels(endpoint=endpoint, le=repr(bound))} {count}")
            lines.append("gateway_request_duration_seconds_bucket"
                         f"{_labels(endpoint=endpoint, le='+Inf')} {counts[-1]}")
            lines.append(f"gateway_request_duration_seconds_sum{_labels(endpoint=endpoint)} "
                         f"{self.duration_sums[endpoint]}")
            lines.append(f"gateway_request_duration_seconds_count{_labels(endpoint=endpoint)} "
                         f"{counts[-1]}")
        lines += ["# HELP gateway_requests_in_flight Requests being answered.",
                  "# TYPE gateway_requests_in_flight gauge",
                  f"gateway_requests_in_flight {self.in_flight}",
                  "# HELP gateway_audio_bytes_total Bytes of audio files received.",
                  "# TYPE gateway_audio_bytes_total counter",
                  f"gateway_audio_bytes_total {self.audio_bytes}"]
        return "\n".join(lines) + "\n"
