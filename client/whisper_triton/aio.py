"""asyncio client: `AsyncWhisperClient`, built on tritonclient.grpc.aio / tritonclient.http.aio.

Same methods and arguments as `WhisperClient`, as coroutines.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from ._base import ClientBase
from .audio_input import AudioInput, audio_to_bytes
from .errors import ServerUnavailableError, WhisperError
from .result import Transcription


class AsyncWhisperClient(ClientBase):
    """Transcribe audio with model `whisper` from asyncio code.

    One tritonclient aio client per address, made on first use inside the running loop;
    use `async with` or `await close()`, from the loop that used it.
    """

    def _init_transports(self) -> None:
        self._clients: Dict[str, Any] = {}
        self._retired: List[Any] = []
        self._closed = False

    # --- transports ------------------------------------------------------------------

    def _aio_module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as module
        else:
            import tritonclient.http.aio as module
        return module

    def _transport(self, url: str) -> Any:
        if self._closed:
            raise WhisperError("the client is closed")
        client = self._clients.get(url)
        if client is None:
            client = self._aio_module().InferenceServerClient(
                url, **self._transport_kwargs(aio=True))
            self._clients[url] = client
        return client

    async def _forget(self, url: str) -> None:
        # Fresh client next time (see WhisperClient._forget); other tasks may still be
        # awaiting the old one, so it is only closed by close().
        client = self._clients.pop(url, None)
        if client is not None:
            self._retired.append(client)

    async def close(self) -> None:
        self._closed = True
        clients = list(self._clients.values()) + self._retired
        self._clients, self._retired = {}, []
        for client in clients:
            await _close_quietly(client)

    async def __aenter__(self) -> "AsyncWhisperClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # --- sending ---------------------------------------------------------------------

    async def _send(self, call: Callable[[Any], Any], parse: Callable[[Any], Any]) -> Any:
        """Await `call` on the addresses in turn, backing off between rounds."""
        error: Optional[WhisperError] = None
        cause: Optional[BaseException] = None
        current_round = 0
        for round_no, url in self._attempts():
            if round_no != current_round:
                current_round = round_no
                await asyncio.sleep(self.retry_policy.delay(round_no))
            try:
                return parse(await call(self._transport(url)))
            except WhisperError:
                raise
            except Exception as exc:  # noqa: BLE001 - every transport error is mapped
                error, cause = self._map_error(exc, url), exc
                if isinstance(error, ServerUnavailableError):
                    await self._forget(url)
                if not self.retry_policy.should_retry(error):
                    raise error from exc
        assert error is not None
        raise error from cause

    # --- public API ------------------------------------------------------------------

    async def transcribe(
        self,
        audio: AudioInput,
        *,
        sample_rate: Optional[int] = None,
        language: Optional[str] = None,
        task: str = "transcribe",
        beam_size: int = 5,
        word_timestamps: bool = False,
        vad_filter: bool = False,
        initial_prompt: Optional[str] = None,
        hotwords: Optional[str] = None,
        temperature: float = 0.0,
    ) -> Transcription:
        """Transcribe one recording; see `WhisperClient.transcribe`."""
        options = self._options(
            language=language, task=task, beam_size=beam_size,
            word_timestamps=word_timestamps, vad_filter=vad_filter,
            initial_prompt=initial_prompt, hotwords=hotwords, temperature=temperature)
        if isinstance(audio, (bytes, bytearray, memoryview)):
            data = audio_to_bytes(audio, sample_rate)
        else:
            # Reading a file or encoding samples blocks; keep it off the event loop.
            data = await asyncio.to_thread(audio_to_bytes, audio, sample_rate)
        inputs = self._build_inputs(data, options)
        return await self._send(*self._infer_request(inputs))

    async def transcribe_many(
        self,
        items: Iterable[AudioInput],
        *,
        concurrency: int = 4,
        sample_rate: Optional[int] = None,
        **options: Any,
    ) -> List[Union[Transcription, Exception]]:
        """Transcribe several recordings, at most `concurrency` in flight (a semaphore).

        Returns one entry per item, in input order: the Transcription, or the exception
        that item raised. Bad options raise at once instead.
        """
        items = list(items)
        self._options(**options)
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        gate = asyncio.Semaphore(concurrency)

        async def one(item: AudioInput) -> Union[Transcription, Exception]:
            async with gate:
                try:
                    return await self.transcribe(item, sample_rate=sample_rate, **options)
                except Exception as exc:  # noqa: BLE001 - reported in the item's slot
                    return exc

        return list(await asyncio.gather(*(one(item) for item in items)))

    async def is_ready(self) -> bool:
        """True when some address answers and has the model ready; never raises."""
        for url in self._url_order():
            try:
                transport = self._transport(url)
                kwargs = self._probe_kwargs()
                if await transport.is_server_ready(**kwargs) and await transport.is_model_ready(
                        self.model_name, **kwargs):
                    return True
            except Exception:  # noqa: BLE001 - "not ready" is the answer
                await self._forget(url)
        return False

    async def server_metadata(self) -> Dict[str, Any]:
        """Triton's server metadata: name, version, extensions."""
        return await self._send(*self._server_metadata_request())

    async def model_metadata(self) -> Dict[str, Any]:
        """The model's name, versions, inputs and outputs (shapes as ints)."""
        return await self._send(*self._model_metadata_request())


async def _close_quietly(client: Any) -> None:
    try:
        await client.close()
    except Exception:  # noqa: BLE001 - closing must not hide the real error
        pass
