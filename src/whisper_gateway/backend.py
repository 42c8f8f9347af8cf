"""The gateway's way to Triton: `whisper` through whisper_triton.AsyncWhisperClient, and the
decoupled `whisper_stream` through tritonclient's asyncio gRPC stream.

Several addresses: the client's round robin with failover (and retries with backoff for
unavailable or overloaded servers); a stream fails over to the next address when the server
it tried cannot be reached, before any text came back.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

import numpy as np

from whisper_triton import AsyncWhisperClient, ServerUnavailableError, Transcription, WhisperError
from whisper_triton.errors import ServerError, map_error
from whisper_triton.options import tensors, validate

from whisper_gateway.settings import Settings


class TritonBackend:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = AsyncWhisperClient(list(settings.triton_urls), protocol="grpc",
                                         model_name=settings.triton_model,
                                         timeout=settings.timeout_s, retries=settings.retries)
        self._streams: Dict[str, Any] = {}
        self._retired: List[Any] = []
        self._rotation = itertools.count()

    async def transcribe(self, audio: bytes, options: Dict[str, Any]) -> Transcription:
        return await self.client.transcribe(audio, **options)

    async def ready(self) -> bool:
        return await self.client.is_ready()

    def _stream_client(self, url: str) -> Any:
        client = self._streams.get(url)
        if client is None:
            import tritonclient.grpc.aio as grpcaio

            client = grpcaio.InferenceServerClient(url)
            self._streams[url] = client
        return client

    async def stream(self, audio: bytes, options: Dict[str, Any]
                     ) -> AsyncIterator[Tuple[str, Any]]:
        """("delta", text) as whisper_stream sends them, then ("done", Transcription)."""
        import tritonclient.grpc as grpcclient

        values = validate(options)
        inputs: List[Any] = []
        for name, dtype, array in [("AUDIO", "BYTES", np.array([[audio]], dtype=np.object_))] \
                + tensors(values):
            tensor = grpcclient.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        urls = list(self.settings.triton_urls)
        start = next(self._rotation) % len(urls)
        error: Optional[WhisperError] = None
        for url in urls[start:] + urls[:start]:
            received = False
            try:
                async for kind, value in self._stream_from(url, inputs):
                    received = True
                    yield kind, value
                return
            except WhisperError as exc:
                if received or not isinstance(exc, ServerUnavailableError):
                    raise
                error = exc
                # A fresh client next time; other streams may still use this one (closing it
                # would cancel them), so it is closed with the backend.
                stale = self._streams.pop(url, None)
                if stale is not None:
                    self._retired.append(stale)
        assert error is not None
        raise error

    async def _stream_from(self, url: str, inputs: List[Any]) -> AsyncIterator[Tuple[str, Any]]:
        finished = asyncio.Event()
        request_id = uuid.uuid4().hex

        async def requests():
            yield {"model_name": self.settings.stream_model, "inputs": inputs,
                   "request_id": request_id}
            # The stream stays open until the final response is in.
            await finished.wait()

        try:
            responses = self._stream_client(url).stream_infer(
                requests(), stream_timeout=self.settings.timeout_s).__aiter__()
            while True:
                try:
                    # whisper_stream sends a response without outputs every few seconds while
                    # it works: silence means its instance died (Triton 2.51 keeps such a
                    # stream open for ever).
                    result, failure = await asyncio.wait_for(
                        responses.__anext__(), self.settings.stream_idle_s)
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    raise ServerUnavailableError(
                        f"no response from {self.settings.stream_model} at {url} for "
                        f"{self.settings.stream_idle_s:g} s", url=url) from None
                if failure is not None:
                    raise map_error(_WithStatus(failure), url) from failure
                delta = result.as_numpy("DELTA")
                if delta is not None and delta.size:
                    yield "delta", _text(delta)
                raw = result.as_numpy("RESULT")
                if raw is not None and raw.size:
                    yield "done", Transcription.from_json(raw.reshape(-1)[0])
                    return
            raise ServerError(f"the stream from {url} ended without a result", url=url)
        except WhisperError:
            raise
        except Exception as exc:  # noqa: BLE001 - every transport error is mapped
            raise map_error(_as_triton_error(exc), url) from exc
        finally:
            finished.set()

    async def close(self) -> None:
        await self.client.close()
        for client in list(self._streams.values()) + self._retired:
            await _close_quietly(client)
        self._streams.clear()
        self._retired.clear()


class _WithStatus:
    """A stream error with the status tritonclient leaves out.

    tritonclient's gRPC stream gives an error response's message without its status code;
    the fronts' messages tell which it was (whisper_service.front: a bad request's sentence is
    INVALID_ARG, the rest say what they are), so the error maps as on a plain request.
    """

    def __init__(self, error: Any):
        self._message = error.message() if callable(getattr(error, "message", None)) else str(error)
        status = error.status() if callable(getattr(error, "status", None)) else None
        self._status = status or _status_of(self._message)

    def status(self) -> Optional[str]:
        return self._status

    def message(self) -> str:
        return self._message


def _as_triton_error(exc: BaseException) -> BaseException:
    """tritonclient's stream passes grpc's own errors through (a refused connection is an
    AioRpcError, with code() and details()): in tritonclient's form, for map_error."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details) and not callable(getattr(exc, "status", None)):
        from tritonclient.utils import InferenceServerException

        return InferenceServerException(msg=details() or str(exc), status=str(code()))
    return exc


def _status_of(message: str) -> str:
    lowered = message.lower()
    if "internal error" in lowered or "engine failed" in lowered:
        return "StatusCode.INTERNAL"
    if "cancelled" in lowered:
        return "StatusCode.CANCELLED"
    if ("overloaded" in lowered or "queue" in lowered or "not loaded" in lowered
            or "not ready" in lowered or "unavailable" in lowered
            # Triton's own words for a request on a dead stub
            or "not healthy" in lowered or "failed to process the request" in lowered):
        return "StatusCode.UNAVAILABLE"
    return "StatusCode.INVALID_ARGUMENT"


def _text(array: np.ndarray) -> str:
    value = array.reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


async def _close_quietly(client: Any) -> None:
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - closing must not hide the real error
        pass
