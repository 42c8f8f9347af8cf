"""Public model `whisper`: audio bytes in, transcript out.

A thin Triton adapter over whisper_service.front (shared with `whisper_stream`): decode and cut
the upload here (20 CPU instances work in parallel), send the windows to `whisper_engine` with
BLS (where windows of many requests are batched together), stitch the answers. Every request
gets its own response; a bad one gets INVALID_ARG with a sentence the caller can act on, never
a traceback.
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

import triton_python_backend_utils as pb_utils

from whisper_service import front
from whisper_service.triton_log import route_to_triton

# The optional inputs, as the one options schema names them (config.pbtxt declares the same).
OPTIONAL_INPUTS = front.OPTIONAL_INPUTS
log = logging.getLogger("whisper")


class TritonPythonModel:
    def initialize(self, args):
        route_to_triton(pb_utils)
        # numpy/ONNX threads: 20 instances share the cores, one thread each is enough.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        # Configuration, engine model choice, warm-up and metrics: shared with whisper_stream.
        self.front = front.Front(pb_utils, args, json.loads(args["model_config"]))
        log.info("whisper front ready: %d mel bins, engine %s, %s", self.front.n_mels,
                 self.front.engine_name, self.front.limits)

    async def execute(self, requests):
        # Each response goes out as soon as its own request is done: a request batched with
        # a slower one (Triton may hand one instance several) must not wait for it.
        await asyncio.gather(*(self._respond_when_done(request) for request in requests))
        return None

    async def _respond_when_done(self, request):
        response = await self.front.respond(request)
        request.get_response_sender().send(
            response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        self.front.finalize()
        log.info("whisper front unloaded")


def _rows(request):
    """The request's inputs, one dict per batch row (AUDIO plus the optional inputs given)."""
    return front.rows(pb_utils, request)
