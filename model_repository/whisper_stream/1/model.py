"""Public model `whisper_stream`: `whisper` with the transcript sent as it becomes final.

Decoupled (`model_transaction_policy { decoupled: true }`): for each request, zero or more
responses with `DELTA` (text that can no longer change, in order), then one response with
`TEXT` and `RESULT` exactly as `whisper` gives them, flagged final. The deltas of a request
concatenate to its TEXT. A long upload is transcribed section by section
(whisper_service.sections); everything else is whisper_service.front, shared with `whisper`.
An error is one final error response, after any deltas already sent.

While a request is worked on, a response without outputs goes out every
`stream_heartbeat_ms` (5000), from a thread of its own (decoding a long upload holds the event
loop): a caller that hears nothing for much longer knows the instance died. Triton 2.51 keeps
the stream of a request whose stub was killed open and silent for ever (measured:
tests/test_gateway_server.py), and the gateway gives up on such a stream after
GATEWAY_STREAM_IDLE_SECS.
"""

# Triton's Python stub ignores PYTHONPATH; scripts/serve names this environment's packages
# here (the container installs them system-wide and leaves it unset).
import os, site, sys  # noqa: E401
_before = list(sys.path)
for _entry in filter(None, os.environ.get("WHISPER_SITE_PACKAGES", "").split(os.pathsep)):
    site.addsitedir(_entry)
sys.path[:] = [p for p in sys.path if p not in _before] + _before

import asyncio
import json
import logging
import os
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_service import front, sections
from whisper_service.triton_log import route_to_triton

log = logging.getLogger("whisper")


class TritonPythonModel:
    def initialize(self, args):
        route_to_triton(pb_utils)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                "whisper_stream must be decoupled: set model_transaction_policy { decoupled: true }")
        self.front = front.Front(pb_utils, args, config)
        self.section_seconds = float(self.front.params.get(
            "stream_section_seconds", str(sections.DEFAULT_SECTION_SECONDS)))
        if self.section_seconds < 30:
            raise pb_utils.TritonModelException("stream_section_seconds must be at least 30")
        self.heartbeat_s = float(self.front.params.get("stream_heartbeat_ms", "5000")) / 1000.0
        if self.heartbeat_s <= 0:
            raise pb_utils.TritonModelException("stream_heartbeat_ms must be positive")
        log.info("whisper_stream front ready: sections of %.0f s, engine %s",
                 self.section_seconds, self.front.engine_name)

    async def execute(self, requests):
        await asyncio.gather(*(self._stream(request) for request in requests))
        return None

    async def _stream(self, request):
        sender = _Sender(request.get_response_sender(), self.heartbeat_s)
        # One per request: a long upload reaches by_sections a section at a time.
        deltas = sections.Deltas()

        async def by_sections(shared, request, job):
            parts = []
            pieces = sections.split(job, self.section_seconds)
            for piece in pieces:
                part = await shared.transcribe(request, piece)
                parts.append(part)
                delta = deltas.add(part)
                if delta is not None:
                    sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(
                        "DELTA", np.array([[delta.encode("utf-8")]], dtype=np.object_))]))
            if pieces != [job]:
                job.windows_without_text = sum(p.windows_without_text for p in pieces)
            return sections.join(parts, job)

        try:
            response = await self.front.respond(request, by_sections)
        finally:
            sender.stop_heartbeat()
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        self.front.finalize()
        log.info("whisper_stream front unloaded")


class _Sender:
    """A request's response sender, with a heartbeat thread until the final response."""

    def __init__(self, sender, heartbeat_s):
        self._sender = sender
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_s,), daemon=True)
        self._thread.start()

    def _beat(self, interval):
        while not self._stopped.wait(interval):
            with self._lock:
                if self._stopped.is_set():
                    return
                try:
                    self._sender.send(pb_utils.InferenceResponse(output_tensors=[]))
                except Exception:  # noqa: BLE001 - the caller went away: nothing to tell
                    return

    def stop_heartbeat(self):
        with self._lock:
            self._stopped.set()

    def send(self, response, flags=0):
        with self._lock:
            self._sender.send(response, flags=flags)
