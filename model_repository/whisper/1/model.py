"""Public model `whisper`: audio bytes in, transcript out.

A thin Triton adapter over whisper_service.pipeline: decode and cut the upload here (20 CPU
instances work in parallel), send the windows to `whisper_engine` with BLS (where windows of
many requests are batched together), stitch the answers. Every request gets its own response;
a bad one gets INVALID_ARG with a sentence the caller can act on, never a traceback.
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
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_service import settings as model_settings
from whisper_service.triton_log import route_to_triton
from whisper_service.errors import InvalidInputError
from whisper_service.engine_requests import SECRET_INPUT, engine_secret
from whisper_service.gather import PreparationBoard
from whisper_service.metrics import SpeechMetrics
from whisper_service.options import Limits, parse_options
from whisper_service import upload
from whisper_service.pipeline import Pipeline, warm_up
from whisper_service.window_result import WindowResult
from whisper_triton.options import OPTIONS

# The optional inputs, as the one options schema names them (config.pbtxt declares the same).
OPTIONAL_INPUTS = tuple(option.tensor for option in OPTIONS)
log = logging.getLogger("whisper")


class TritonPythonModel:
    def initialize(self, args):
        route_to_triton(pb_utils)
        # numpy/ONNX threads: 20 instances share the cores, one thread each is enough.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        config = json.loads(args["model_config"])
        params = model_settings.config_parameters(config)
        self.engine_name = params.get("engine_model", "whisper_engine")
        self.windows_per_call = int(params.get("windows_per_engine_call", "8"))
        self.calls_in_flight = int(params.get("engine_calls_in_flight", "2"))
        self.limits = Limits.from_parameters(params)
        # Uploads that arrive together wait (at most this long) for each other before their
        # first engine call, so that they share one engine batch; 0 turns it off.
        self.gather_s = float(params.get("gather_uploads_ms", "500")) / 1000.0
        # ... and, within that bound, until no upload has arrived for this long.
        self.quiet_s = float(params.get("gather_quiet_ms", "40")) / 1000.0
        self.board = (PreparationBoard.for_server(args["model_instance_name"])
                      if self.gather_s > 0 else None)

        engine_config = Path(args["model_repository"]).parent / self.engine_name / "config.pbtxt"
        engine_params = model_settings.read_config_parameters(engine_config)
        # The front computes features, so it must agree with the engine on the mel count;
        # it resolves the model exactly as the engine does (env first, then its parameters).
        chosen = model_settings.resolve(engine_params, gpu_available=_gpu_visible(),
                                       materialize=False)
        # The engine answers only callers that present tritonserver's WHISPER_ENGINE_SECRET.
        self.engine_secret = engine_secret(os.environ)
        self.pipeline = Pipeline(self.limits, chosen.n_mels)
        warm_up(self.pipeline)
        self.metrics = SpeechMetrics(pb_utils, model=args["model_name"])
        log.info("whisper front ready: %d mel bins, engine %s, %s", chosen.n_mels,
                 self.engine_name, self.limits)

    async def execute(self, requests):
        # Each response goes out as soon as its own request is done: a request batched with
        # a slower one (Triton may hand one instance several) must not wait for it.
        await asyncio.gather(*(self._respond_when_done(request) for request in requests))
        return None

    async def _respond_when_done(self, request):
        try:
            response = await self._respond(request)
        except BaseException:  # noqa: BLE001 - the request must be answered whatever happens
            log.exception("whisper request failed outside its handler")
            response = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                "internal error while transcribing; see the server log",
                pb_utils.TritonError.INTERNAL))
        request.get_response_sender().send(
            response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def _respond(self, request):
        self.metrics.started()
        self._mark_preparing(True)
        try:
            return await self._answer(request)
        finally:
            self._mark_preparing(False)
            self.metrics.finished()

    def _mark_preparing(self, preparing):
        if self.board is not None:
            self.board.mark(preparing)

    async def _gather(self):
        """Before an upload's first engine call: let uploads being prepared catch up."""
        if self.board is not None:
            self.board.mark(False)
            await self.board.wait_for_others(self.gather_s, self.quiet_s)

    async def _answer(self, request):
        started = time.perf_counter()
        try:
            rows = _rows(request)
            transcriptions = [await self._transcribe(request, row) for row in rows]
        except InvalidInputError as exc:
            self.metrics.error(exc.reason)
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
        except _Cancelled:
            self.metrics.error("cancelled")
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError("request cancelled", pb_utils.TritonError.CANCELLED))
        except _EngineError as exc:
            self.metrics.error(exc.reason)
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), exc.code))
        except Exception:  # noqa: BLE001 - one request's failure must not fail the batch
            log.exception("unexpected failure in whisper request")
            self.metrics.error("internal")
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                "internal error while transcribing; see the server log",
                pb_utils.TritonError.INTERNAL))

        audio_seconds = sum(t.duration for t in transcriptions)
        self.metrics.done(transcriptions, time.perf_counter() - started, audio_seconds)
        text = np.array([[t.text.encode("utf-8")] for t in transcriptions], dtype=np.object_)
        result = np.array([[t.to_json().encode("utf-8")] for t in transcriptions],
                          dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("TEXT", text), pb_utils.Tensor("RESULT", result)])

    async def _transcribe(self, request, row):
        options = parse_options(row, self.limits)
        job = self.pipeline.prepare(row["AUDIO"], options)
        self.metrics.vad_removed(job.vad_removed_seconds)
        try:
            transcription = await upload.transcribe(
                self.pipeline, job, self._call_engine, windows_per_call=self.windows_per_call,
                calls_in_flight=self.calls_in_flight, cancelled=request.is_cancelled,
                before_first_call=self._gather)
        except upload.Cancelled:
            raise _Cancelled() from None
        self.metrics.speech_without_text(job.windows_without_text)
        return transcription

    async def _call_engine(self, indices, features, frames, options):
        count = len(indices)
        options_json = options.to_json().encode("utf-8")
        inputs = [
            pb_utils.Tensor("FEATURES", features),
            pb_utils.Tensor("NUM_FRAMES", np.array(frames, dtype=np.int32).reshape(count, 1)),
            pb_utils.Tensor("OPTIONS", np.array([[options_json]] * count, dtype=np.object_)),
        ]
        if self.engine_secret is not None:
            secret = self.engine_secret.encode("utf-8")
            inputs.append(pb_utils.Tensor(SECRET_INPUT,
                                          np.array([[secret]] * count, dtype=np.object_)))
        response = await pb_utils.InferenceRequest(
            model_name=self.engine_name, inputs=inputs, requested_output_names=["WINDOW_RESULT"],
        ).async_exec()
        if response.has_error():
            raise _EngineError.from_triton(response.error(), self.engine_name)
        results = pb_utils.get_output_tensor_by_name(response, "WINDOW_RESULT").as_numpy()
        return [WindowResult.from_json(raw) for raw in results.reshape(-1)]

    def finalize(self):
        if self.board is not None:
            # Every instance finalizes on unload; removing a mapped file is harmless.
            self.board.close(remove=True)
        log.info("whisper front unloaded")


def _rows(request):
    """The request's inputs, one dict per batch row (AUDIO plus the optional inputs given)."""
    audio = pb_utils.get_input_tensor_by_name(request, "AUDIO")
    if audio is None:
        raise InvalidInputError("the AUDIO input is missing.", "missing_audio")
    audio = audio.as_numpy().reshape(len(audio.as_numpy()), -1)
    rows = [{"AUDIO": bytes(row[0]) if row.size else b""} for row in audio]
    for name in OPTIONAL_INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            continue
        values = tensor.as_numpy().reshape(-1)
        if values.size != len(rows):
            raise InvalidInputError(
                f"{name} must have one value per AUDIO row ({len(rows)}), not {values.size}.",
                "invalid_shape")
        for row, value in zip(rows, values):
            row[name] = value.item() if isinstance(value, np.generic) else value
    return rows


def _gpu_visible() -> bool:
    try:
        import ctranslate2
        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime at all means no GPU
        return False


class _Cancelled(Exception):
    pass


class _EngineError(Exception):
    def __init__(self, message, code, reason):
        super().__init__(message)
        self.code = code
        self.reason = reason

    @classmethod
    def from_triton(cls, error, engine):
        code = error.code()
        message = error.message()
        if code == pb_utils.TritonError.INVALID_ARG:
            # The engine's own words are for the caller (e.g. language not supported).
            return cls(message, code, "engine_invalid_argument")
        if "is not ready" in message or "unknown model" in message.lower():
            return cls(f"model '{engine}' is not loaded (unloaded through the repository API?); "
                       f"load it with POST /v2/repository/models/{engine}/load",
                       pb_utils.TritonError.UNAVAILABLE, "engine_not_loaded")
        if code == pb_utils.TritonError.UNAVAILABLE or "queue" in message.lower():
            return cls(f"the engine is overloaded: {message}", pb_utils.TritonError.UNAVAILABLE,
                       "overloaded")
        log.error("engine call failed: %s", message)
        return cls("the transcription engine failed; see the server log",
                   pb_utils.TritonError.INTERNAL, "engine_failure")
