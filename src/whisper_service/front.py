"""What the two public models (`whisper`, `whisper_stream`) do with a request, given Triton.

Both model.py files are thin adapters over `Front`: it parses the model's configuration once,
turns a request into rows of audio and options, runs the upload loop (whisper_service.upload)
with BLS calls to the engine, and turns every failure into the error response of its own
request. `pb_utils` (triton_python_backend_utils) is handed in, so this module imports nothing
that exists only inside a Python-backend stub.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from whisper_triton.options import OPTIONS
from whisper_triton.result import Transcription

from whisper_service import settings as model_settings
from whisper_service import sections, upload
from whisper_service.engine_requests import SECRET_INPUT, engine_secret
from whisper_service.errors import InvalidInputError, ServerBusyError
from whisper_service.gather import PreparationBoard
from whisper_service.gpu import gpu_visible
from whisper_service.memory import give_back_freed_memory, map_large_buffers_apart
from whisper_service.metrics import SpeechMetrics
from whisper_service.options import Limits, parse_options
from whisper_service.pipeline import Job, Pipeline, warm_up
from whisper_service.window_result import WindowResult

# The optional inputs, as the one options schema names them (config.pbtxt declares the same).
OPTIONAL_INPUTS = tuple(option.tensor for option in OPTIONS)
# Shorter sections would cut long uploads into pieces with too little context for Whisper.
MIN_UPLOAD_SECTION_SECONDS = 60.0
INTERNAL_MESSAGE = "internal error while transcribing; see the server log"
log = logging.getLogger("whisper")

# How a model transcribes one prepared upload: (front, request, job) -> Transcription. The
# plain front runs the upload loop once; the streaming front runs it section by section.
Transcriber = Callable[["Front", Any, Job], Any]


class Front:
    def __init__(self, pb_utils: Any, args: Dict[str, Any], config: Dict[str, Any]):
        self.pb = pb_utils
        # Decoded sections, VAD batches and features go back to the system when freed (see
        # memory): a front that served a long upload returns to its idle size.
        map_large_buffers_apart()
        params = model_settings.config_parameters(config)
        self.params = params
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
        self._uploads_in_flight = 0  # this instance's (several when Triton batches requests)

        engine_config = Path(args["model_repository"]).parent / self.engine_name / "config.pbtxt"
        engine_params = model_settings.read_config_parameters(engine_config)
        # The front computes features, so it must agree with the engine on the mel count;
        # it resolves the model exactly as the engine does (env first, then its parameters).
        chosen = model_settings.resolve(engine_params, gpu_available=gpu_visible(),
                                       materialize=False)
        # The engine answers only callers that present tritonserver's WHISPER_ENGINE_SECRET.
        self.engine_secret = engine_secret(os.environ)
        self.pipeline = Pipeline.for_server(self.limits, chosen.n_mels)
        self.pipeline.section_seconds = float(
            params.get("upload_section_seconds", str(self.pipeline.section_seconds)))
        if self.pipeline.section_seconds < MIN_UPLOAD_SECTION_SECONDS:
            raise ValueError(f"upload_section_seconds must be at least "
                             f"{MIN_UPLOAD_SECTION_SECONDS:g}")
        self.pipeline.section_slack_seconds = min(
            self.pipeline.section_slack_seconds, self.pipeline.section_seconds / 4)
        warm_up(self.pipeline)
        self.metrics = SpeechMetrics(pb_utils, model=args["model_name"])
        self.n_mels = chosen.n_mels

    # --- one request -------------------------------------------------------------------

    async def respond(self, request: Any, transcriber: Optional[Transcriber] = None) -> Any:
        """The response of one request (its error response when it fails): never raises."""
        self.metrics.started()
        self._mark_preparing(True)
        self._count_in_flight(+1)
        try:
            return await self._answer(request, transcriber or Front.transcribe)
        except BaseException:  # noqa: BLE001 - the request must be answered whatever happens
            log.exception("whisper request failed outside its handler")
            return self.error_response(INTERNAL_MESSAGE, self.pb.TritonError.INTERNAL)
        finally:
            self._count_in_flight(-1)
            self._mark_preparing(False)
            self.metrics.finished()
            # The upload's samples are freed by now: hand the pages back.
            give_back_freed_memory()

    def error_response(self, message: str, code: Any) -> Any:
        return self.pb.InferenceResponse(error=self.pb.TritonError(message, code))

    def _mark_preparing(self, preparing: bool) -> None:
        if self.board is not None:
            self.board.mark(preparing)

    def _count_in_flight(self, change: int) -> None:
        self._uploads_in_flight += change
        if self.board is not None:
            self.board.mark_in_flight(self._uploads_in_flight > 0)

    def windows_per_call_now(self) -> int:
        """Windows an upload may send per engine call now: windows_per_engine_call when no
        other front has an upload in flight, else a share of it (at least one).

        A 10-minute upload sent 8 windows per call, 2 calls at once, beside 20 short clips of
        one window each: it filled half of every engine batch and doubled the clips' median
        latency (docs/performance.md, head-of-line blocking).
        """
        if self.board is None:
            return self.windows_per_call
        return max(1, self.windows_per_call // (1 + self.board.others_in_flight()))

    async def _gather(self) -> None:
        """Before an upload's first engine call: let uploads being prepared catch up."""
        if self.board is not None:
            self.board.mark(False)
            await self.board.wait_for_others(self.gather_s, self.quiet_s)

    async def _answer(self, request: Any, transcriber: Transcriber) -> Any:
        pb = self.pb
        started = time.perf_counter()
        try:
            transcriptions = []
            for row in rows(pb, request):
                options = parse_options(row, self.limits)
                transcriptions.append(
                    await self._transcribe_upload(request, row["AUDIO"], options, transcriber))
        except InvalidInputError as exc:
            self.metrics.error(exc.reason)
            return self.error_response(str(exc), pb.TritonError.INVALID_ARG)
        except ServerBusyError as exc:
            self.metrics.error(exc.reason)
            return self.error_response(str(exc), pb.TritonError.UNAVAILABLE)
        except _Cancelled:
            self.metrics.error("cancelled")
            return self.error_response("request cancelled", pb.TritonError.CANCELLED)
        except EngineError as exc:
            self.metrics.error(exc.reason)
            return self.error_response(str(exc), exc.code)
        except Exception:  # noqa: BLE001 - one request's failure must not fail the batch
            log.exception("unexpected failure in whisper request")
            self.metrics.error("internal")
            return self.error_response(INTERNAL_MESSAGE, pb.TritonError.INTERNAL)

        audio_seconds = sum(t.duration for t in transcriptions)
        self.metrics.done(transcriptions, time.perf_counter() - started, audio_seconds)
        return self.result_response(transcriptions)

    async def _transcribe_upload(self, request: Any, data: bytes, options, transcriber
                                 ) -> Transcription:
        """One upload, section by section (Pipeline.sections: one section unless it is long)."""
        sections_of_upload = self.pipeline.sections(data, options)
        parts, duration, speech = [], 0.0, None
        try:
            while True:
                # In a worker thread: decoding, or waiting for the server's decoded-audio
                # budget, holds up no other upload of this instance.
                section = await self.pipeline.next_section(sections_of_upload)
                if section is None:
                    break
                job = section.job
                self.metrics.vad_removed(job.vad_removed_seconds)
                try:
                    part = await transcriber(self, request, job)
                except upload.Cancelled:
                    raise _Cancelled() from None
                self.metrics.speech_without_text(job.windows_without_text)
                parts.append(sections.shifted(part, section.offset))
                duration = section.offset + job.duration
                if job.speech_seconds is not None:
                    speech = (speech or 0.0) + job.speech_seconds
                # Let go of the section's samples before the next one is decoded.
                del section, job
        finally:
            try:
                sections_of_upload.close()
            except ValueError:  # still decoding in its thread: it is released when done
                pass
        return sections.joined(parts, options, duration, speech)

    def result_response(self, transcriptions: List[Transcription]) -> Any:
        pb = self.pb
        text = np.array([[t.text.encode("utf-8")] for t in transcriptions], dtype=np.object_)
        result = np.array([[t.to_json().encode("utf-8")] for t in transcriptions],
                          dtype=np.object_)
        return pb.InferenceResponse(output_tensors=[
            pb.Tensor("TEXT", text), pb.Tensor("RESULT", result)])

    async def transcribe(self, request: Any, job: Job) -> Transcription:
        """The whole upload loop on one prepared upload."""
        return await upload.transcribe(
            self.pipeline, job, self.call_engine, windows_per_call=self.windows_per_call_now,
            calls_in_flight=self.calls_in_flight, cancelled=request.is_cancelled,
            before_first_call=self._gather)

    # --- the engine --------------------------------------------------------------------

    async def call_engine(self, indices, features, frames, options) -> List[WindowResult]:
        pb = self.pb
        count = len(indices)
        if self.board is not None:
            self.board.mark_in_flight(True)  # renewed: a long upload outlives the stale bound
        options_json = options.to_json().encode("utf-8")
        inputs = [
            pb.Tensor("FEATURES", features),
            pb.Tensor("NUM_FRAMES", np.array(frames, dtype=np.int32).reshape(count, 1)),
            pb.Tensor("OPTIONS", np.array([[options_json]] * count, dtype=np.object_)),
        ]
        if self.engine_secret is not None:
            secret = self.engine_secret.encode("utf-8")
            inputs.append(pb.Tensor(SECRET_INPUT, np.array([[secret]] * count, dtype=np.object_)))
        response = await pb.InferenceRequest(
            model_name=self.engine_name, inputs=inputs, requested_output_names=["WINDOW_RESULT"],
        ).async_exec()
        if response.has_error():
            raise EngineError.from_triton(pb, response.error(), self.engine_name)
        results = pb.get_output_tensor_by_name(response, "WINDOW_RESULT").as_numpy()
        return [WindowResult.from_json(raw) for raw in results.reshape(-1)]

    def finalize(self) -> None:
        if self.board is not None:
            # Every instance finalizes on unload; removing a mapped file is harmless.
            self.board.close(remove=True)


def rows(pb_utils: Any, request: Any) -> List[Dict[str, Any]]:
    """The request's inputs, one dict per batch row (AUDIO plus the optional inputs given)."""
    audio = pb_utils.get_input_tensor_by_name(request, "AUDIO")
    if audio is None:
        raise InvalidInputError("the AUDIO input is missing.", "missing_audio")
    audio = audio.as_numpy().reshape(len(audio.as_numpy()), -1)
    result = [{"AUDIO": bytes(row[0]) if row.size else b""} for row in audio]
    for name in OPTIONAL_INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            continue
        values = tensor.as_numpy().reshape(-1)
        if values.size != len(result):
            raise InvalidInputError(
                f"{name} must have one value per AUDIO row ({len(result)}), not {values.size}.",
                "invalid_shape")
        for row, value in zip(result, values):
            row[name] = value.item() if isinstance(value, np.generic) else value
    return result


class _Cancelled(Exception):
    pass


class EngineError(Exception):
    """A BLS call to the engine failed: the message and code the caller gets."""

    def __init__(self, message: str, code: Any, reason: str):
        super().__init__(message)
        self.code = code
        self.reason = reason

    @classmethod
    def from_triton(cls, pb_utils: Any, error: Any, engine: str) -> "EngineError":
        codes = pb_utils.TritonError
        code = error.code()
        message = error.message()
        if code == codes.INVALID_ARG:
            # The engine's own words are for the caller (e.g. language not supported).
            return cls(message, code, "engine_invalid_argument")
        if "is not ready" in message or "unknown model" in message.lower():
            return cls(f"model '{engine}' is not loaded (unloaded through the repository API?); "
                       f"load it with POST /v2/repository/models/{engine}/load",
                       codes.UNAVAILABLE, "engine_not_loaded")
        if code == codes.UNAVAILABLE or "queue" in message.lower():
            return cls(f"the engine is overloaded: {message}", codes.UNAVAILABLE, "overloaded")
        log.error("engine call failed: %s", message)
        return cls("the transcription engine failed; see the server log",
                   codes.INTERNAL, "engine_failure")
