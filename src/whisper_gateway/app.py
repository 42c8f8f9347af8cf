"""The ASGI app: OpenAI's speech-to-text endpoints on Starlette, health and metrics.

    POST /v1/audio/transcriptions   multipart form (see forms.py); stream=true: server-sent events
    POST /v1/audio/translations     the same, to English
    GET  /v1/models, /v1/models/{id}
    GET  /health                    the gateway is up (always 200)
    GET  /ready                     Triton and its model are ready (200) or not (503)
    GET  /metrics                   Prometheus text (metrics.py)

Errors are OpenAI's envelope (errors.py). `create_app(settings, backend)` takes the backend
(backend.TritonBackend by default), so pure tests can hand it an object of their own.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from whisper_triton.errors import WhisperError

from whisper_gateway import formats, forms
from whisper_gateway.access import Access
from whisper_gateway.errors import ApiError, from_client_error, invalid
from whisper_gateway.metrics import CONTENT_TYPE, GatewayMetrics
from whisper_gateway.settings import Settings

log = logging.getLogger("whisper_gateway")
AUDIO_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")
# The `created` time /v1/models reports: a fixed date, since the model is served, not made, here.
CREATED = 1_700_000_000


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: requests to the audio endpoints over `max_bytes` get 413, by their
    Content-Length at once, or as soon as a body without one passes the limit."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def error(self) -> ApiError:
        mib = self.max_bytes / (1024 * 1024)
        return ApiError(413, f"The request is too large: the limit is {mib:g} MiB. Send a "
                             "compressed format (FLAC, MP3, Opus) or split the file.",
                        "invalid_request_error", "file", "request_too_large")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in AUDIO_PATHS:
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await error_response(self.error())(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        scope.setdefault("state", {})["body_limit"] = self.error
        return await self.app(scope, counted, send)


def create_app(settings: Settings, backend: Optional[Any] = None) -> Any:
    if backend is None:
        from whisper_gateway.backend import TritonBackend

        backend = TritonBackend(settings)
    access = Access(settings.api_keys, settings.max_concurrent_per_key)
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app):
        if access.open:
            log.warning("no API keys configured (GATEWAY_API_KEYS, GATEWAY_API_KEYS_FILE): "
                        "the gateway is open to anyone who reaches it")
        else:
            log.info("gateway: %d API key(s), %d request(s) in flight per key",
                     len(access.keys), access.max_concurrent)
        log.info("gateway: Triton at %s, model ids %s", ", ".join(settings.triton_urls),
                 ", ".join(settings.model_ids))
        yield
        await backend.close()

    def model_card(model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "whisper-triton"}

    async def list_models(request: Request) -> Response:
        access.identify(request.headers.get("authorization"))
        return JSONResponse({"object": "list", "data": [model_card(m) for m in settings.model_ids]})

    async def get_model(request: Request) -> Response:
        access.identify(request.headers.get("authorization"))
        model_id = request.path_params["model_id"]
        if model_id not in settings.model_ids:
            raise ApiError(404, f"The model '{model_id}' does not exist", "invalid_request_error",
                           "model", "model_not_found")
        return JSONResponse(model_card(model_id))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if await backend.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "triton": list(settings.triton_urls)},
                            status_code=503)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def read_form(request: Request, task: str):
        try:
            form = await request.form(max_files=1, max_fields=100)
        except _BodyTooLarge:
            raise request.scope["state"]["body_limit"]() from None
        except Exception as exc:  # noqa: BLE001 - a malformed multipart body
            raise invalid(f"The request body could not be read as a multipart form: {exc}",
                          None, None) from None
        fields = {name: form.getlist(name) for name in form.keys()}
        upload = (fields.get("file") or [None])[-1]
        if not isinstance(upload, UploadFile):
            raise invalid("you must provide a file parameter (the audio file, as multipart "
                          "form data)", "file", None)
        parsed = forms.parse(fields, task, settings.model_ids)
        audio = await upload.read()
        await form.close()
        metrics.audio_bytes += len(audio)
        return parsed, audio

    async def audio_endpoint(request: Request, task: str) -> Response:
        key = access.identify(request.headers.get("authorization"))
        access.acquire(key)
        streaming = False
        try:
            parsed, audio = await read_form(request, task)
            if not audio:
                raise invalid("The audio file is empty.", "file", "invalid_file")
            if parsed.stream:
                response = await stream_response(audio, parsed, key)
                streaming = True
                return response
            try:
                result = await backend.transcribe(audio, parsed.options)
            except WhisperError as exc:
                raise from_client_error(exc) from exc
            body, content_type = formats.render(result, parsed.response_format,
                                                parsed.granularities)
            return Response(body, media_type=content_type)
        finally:
            if not streaming:
                access.release(key)

    async def stream_response(audio: bytes, parsed: forms.AudioForm, key: str) -> Response:
        events = backend.stream(audio, parsed.options).__aiter__()
        try:
            first = await events.__anext__()
        except WhisperError as exc:
            raise from_client_error(exc) from exc

        async def body() -> AsyncIterator[bytes]:
            item: Any = first
            try:
                while True:
                    kind, value = item
                    if kind == "delta":
                        yield formats.sse(formats.delta_event(value))
                    else:
                        yield formats.sse(formats.done_event(value.text, value.duration))
                        return
                    item = await events.__anext__()
            except WhisperError as exc:
                yield formats.sse(from_client_error(exc).body())
            except StopAsyncIteration:
                yield formats.sse(ApiError(500, "The stream ended without a result.",
                                           "server_error", None, "internal_error").body())
            finally:
                await events.aclose()
                access.release(key)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def transcriptions(request: Request) -> Response:
        return await audio_endpoint(request, "transcribe")

    async def translations(request: Request) -> Response:
        return await audio_endpoint(request, "translate")

    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = (f"Unknown request URL: {request.method} {request.url.path}."
                   if exc.status_code in (404, 405) else str(exc.detail))
        return error_response(ApiError(exc.status_code, message, "invalid_request_error",
                                       None, code))

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("gateway request failed")
        return error_response(from_client_error(exc))

    routes = [
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", translations, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: api_error, HTTPException: http_error, Exception: internal_error})
    app.state.metrics = metrics
    app.state.access = access
    return Measured(BodyLimit(app, settings.max_upload_bytes), metrics)


class Measured:
    """ASGI middleware: every answered request counted by endpoint and status, timed."""

    def __init__(self, app: Any, metrics: GatewayMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = [500]

        async def watched(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, watched)
        finally:
            self.metrics.in_flight -= 1
            path = scope["path"]
            endpoint = path if path in AUDIO_PATHS or path in (
                "/v1/models", "/health", "/ready", "/metrics") else (
                "/v1/models/{id}" if path.startswith("/v1/models/") else "other")
            self.metrics.observe(endpoint, status[0], time.monotonic() - started)
