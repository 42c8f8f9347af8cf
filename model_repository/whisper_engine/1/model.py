"""Model `whisper_engine`: the one copy of the Whisper model, fed by dynamic batching.

Each request carries one or more 30 s windows (features) of one upload; Triton's dynamic
batcher joins requests from many uploads, and WhisperEngine encodes and decodes all their
windows together. A window that fails fails only the request that owns it.

With the `defer_fallback` parameter on (the default), responses go out through each
request's response sender (allowed in Triton's default mode since 24.06), so that a window
that needs temperature fallback (sampling at up to five temperatures: tens of seconds on a
CPU) does not hold the batch: the other requests are answered, execute returns and the next
batch starts, while one background thread finishes that window and answers its request.

The engine is internal but reachable by anyone who reaches Triton's ports: every request is
checked (whisper_service.engine_requests) before its windows join the batch, callers without
the front's secret (WHISPER_ENGINE_SECRET) are turned away, and nothing raises out of execute.
"""

# Triton's Python stub ignores PYTHONPATH; scripts/serve names this environment's packages
# here (the container installs them system-wide and leaves it unset).
import os, site, sys  # noqa: E401
_before = list(sys.path)
for _entry in filter(None, os.environ.get("WHISPER_SITE_PACKAGES", "").split(os.pathsep)):
    site.addsitedir(_entry)
sys.path[:] = [p for p in sys.path if p not in _before] + _before

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_service import settings as model_settings
from whisper_service.triton_log import route_to_triton
from whisper_service.engine import WhisperEngine
from whisper_service.engine_requests import (NOT_THE_FRONT, SECRET_ENV, SECRET_INPUT,
                                             caller_allowed, engine_secret, read_request)
from whisper_service.errors import InvalidInputError
from whisper_service.memory import (give_back_freed_memory, map_large_buffers_apart_until_ready,
                                     serve_from_the_heaps)
from whisper_service.metrics import EngineMetrics
from whisper_service.options import Limits

log = logging.getLogger("whisper_engine")

ENGINE_FAILED = "the transcription engine failed; see the server log"
FRONT_MODEL = "whisper"
WARM_UP_WINDOWS = 4
# Windows at most waiting for their fallback in the background; past it, a batch's fallbacks
# run inside execute as before (the engine takes no new batch until they are done), so a
# flood of noise cannot pile up work and memory behind the requests that are answered.
MAX_DEFERRED_WINDOWS = 4


class TritonPythonModel:
    def initialize(self, args):
        route_to_triton(pb_utils)
        config = json.loads(args["model_config"])
        on_gpu = args.get("model_instance_kind") == "GPU"
        device_index = int(args.get("model_instance_device_id", 0)) if on_gpu else 0
        self.settings = model_settings.resolve(
            model_settings.config_parameters(config), gpu_available=on_gpu or _cuda_visible())
        pb_utils.Logger.log_info(f"whisper_engine loading: {self.settings.reason}")
        # Anyone who reaches Triton's ports can call this model: it holds requests to the
        # front's limits, and answers only callers that present the front's secret.
        self.limits = _front_limits(Path(args["model_repository"]).parent)
        self.secret = engine_secret(os.environ)
        if self.secret is None:
            log.warning("%s is not set: whisper_engine accepts requests from any caller, not "
                        "only from model '%s' (scripts/serve and the container set it)",
                        SECRET_ENV, FRONT_MODEL)
        # Loading and warm-up leave their large buffers in no heap (see memory).
        map_large_buffers_apart_until_ready()
        self.engine = WhisperEngine(self.settings, device_index=device_index)
        self.metrics = EngineMetrics(pb_utils, model=args["model_name"])
        self.defer_fallback = model_settings.config_parameters(config).get(
            "defer_fallback", "true").strip().lower() == "true"
        self._later = ThreadPoolExecutor(1, thread_name_prefix="whisper-fallback")
        self._deferred_lock = threading.Lock()
        self._deferred_windows = 0  # waiting for the background thread
        # "Ready" means warm: Triton reports the model ready only once initialize returns.
        self.engine.warm_up(WARM_UP_WINDOWS)
        serve_from_the_heaps()
        pb_utils.Logger.log_info(
            f"whisper_engine ready: {self.engine.n_mels} mel bins, "
            f"{'multilingual' if self.engine.multilingual else 'English-only'}, "
            f"instance {args['model_instance_name']} on {self.settings.device}:{device_index}, "
            f"{self.limits}")

    def execute(self, requests):
        # Response senders only when a window may be deferred; otherwise the responses are
        # returned from execute, as before deferral existed.
        senders = ([request.get_response_sender() for request in requests]
                   if self.defer_fallback else None)
        responses = [None] * len(requests)
        later = {}  # request index -> its outcomes so far and its deferred windows
        accepted = {}  # request index -> EngineRequest
        for r, request in enumerate(requests):
            try:
                accepted[r] = self._read(request)
            except InvalidInputError as exc:
                responses[r] = _error(str(exc), pb_utils.TritonError.INVALID_ARG)
            except Exception:  # noqa: BLE001 - one request's failure must not fail the batch
                log.exception("whisper_engine could not read a request")
                responses[r] = _error(ENGINE_FAILED, pb_utils.TritonError.INTERNAL)
        if accepted:
            try:
                later = self._decode(accepted, responses)
            except Exception:  # noqa: BLE001 - nothing may raise out of execute
                log.exception("whisper_engine batch of %d windows failed",
                              sum(len(windows) for windows in accepted.values()))
                later = {}
                for r in accepted:
                    if responses[r] is None:
                        responses[r] = _error(ENGINE_FAILED, pb_utils.TritonError.INTERNAL)
        if senders is None:
            give_back_freed_memory()  # a big batch's activations are freed: hand pages back
            return responses
        for r, sender in enumerate(senders):
            if r not in later:
                _send(sender, responses[r])
        if later:
            self._later.submit(self._finish_later, later, {r: senders[r] for r in later})
        give_back_freed_memory()
        return None

    def _read(self, request):
        """The request's windows, checked; InvalidInputError with a sentence otherwise."""
        secret = pb_utils.get_input_tensor_by_name(request, SECRET_INPUT)
        if not caller_allowed(None if secret is None else secret.as_numpy(), self.secret):
            raise InvalidInputError(NOT_THE_FRONT, "not_the_front")
        return read_request(_input(request, "FEATURES"), _input(request, "NUM_FRAMES"),
                            _input(request, "OPTIONS"), n_mels=self.engine.n_mels,
                            limits=self.limits)

    def _decode(self, accepted, responses):
        """Decode the windows of all accepted requests together; answer each request whose
        windows are all done. Returns the others: request -> (its outcomes by batch index,
        its deferred windows)."""
        owners = [r for r, windows in accepted.items() for _ in range(len(windows))]
        features = np.concatenate([windows.features for windows in accepted.values()])
        frames = [n for windows in accepted.values() for n in windows.frames]
        options = [o for windows in accepted.values() for o in windows.options]
        self.metrics.batch(len(options))
        with self._deferred_lock:
            room = self.defer_fallback and self._deferred_windows < MAX_DEFERRED_WINDOWS
        if room:
            outcomes, deferred = self.engine.transcribe_windows_deferring_fallback(
                features, frames, options)
        else:
            outcomes, deferred = self.engine.transcribe_windows(features, frames, options), []
        with self._deferred_lock:
            self._deferred_windows += len(deferred)
        later = {}
        for r in accepted:
            mine = {i: outcomes[i] for i, owner in enumerate(owners) if owner == r}
            waiting = [d for d in deferred if owners[d.index] == r]
            if waiting:
                later[r] = (mine, waiting)
            else:
                responses[r] = _answer(list(mine.values()))
        return later

    def _finish_later(self, later, senders):
        """In the background thread: finish the deferred windows, answer their requests."""
        for r, (mine, waiting) in later.items():
            try:
                for deferred in waiting:
                    mine[deferred.index] = self.engine.finish(deferred)
                response = _answer(list(mine.values()))
            except Exception:  # noqa: BLE001 - the request must be answered whatever happens
                log.exception("whisper_engine could not finish a deferred window")
                response = _error(ENGINE_FAILED, pb_utils.TritonError.INTERNAL)
            finally:
                with self._deferred_lock:
                    self._deferred_windows -= len(waiting)
            _send(senders[r], response)
        give_back_freed_memory()

    def finalize(self):
        # Requests whose windows are still finishing in the background are answered first.
        self._later.shutdown(wait=True)
        # Unload through the repository API is the old service's "clear GPU memory": free the
        # CTranslate2 model now rather than when the stub process happens to exit.
        self.engine.release()
        pb_utils.Logger.log_info("whisper_engine unloaded, model memory released")


def _front_limits(repository):
    """The limits the front applies (its config.pbtxt parameters), or the defaults."""
    front_config = repository / FRONT_MODEL / "config.pbtxt"
    try:
        return Limits.from_parameters(model_settings.read_config_parameters(front_config))
    except (OSError, ValueError) as exc:
        log.warning("whisper_engine uses the default limits: %s could not be read (%s)",
                    front_config, exc)
        return Limits()


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _answer(outcomes):
    try:
        return _response(outcomes)
    except Exception:  # noqa: BLE001 - e.g. a result that does not serialise
        log.exception("whisper_engine could not answer a request")
        return _error(ENGINE_FAILED, pb_utils.TritonError.INTERNAL)


def _send(sender, response):
    """The request's one response, final."""
    try:
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    except Exception:  # noqa: BLE001 - e.g. the request was cancelled and its sender closed
        log.exception("whisper_engine could not send a response")


def _response(outcomes):
    for outcome in outcomes:
        if isinstance(outcome, InvalidInputError):
            return _error(str(outcome), pb_utils.TritonError.INVALID_ARG)
        if isinstance(outcome, Exception):
            log.error("whisper_engine window failed", exc_info=outcome)
            return _error(ENGINE_FAILED, pb_utils.TritonError.INTERNAL)
    data = np.array([[o.to_json().encode("utf-8")] for o in outcomes], dtype=np.object_)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("WINDOW_RESULT", data)])


def _error(message, code):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def _cuda_visible():
    try:
        import ctranslate2
        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime means no GPU
        return False
