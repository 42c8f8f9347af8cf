"""Blocking client: `WhisperClient`, built on tritonclient.grpc / tritonclient.http."""

from __future__ import annotations

import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

from ._base import ClientBase
from .audio_input import AudioInput, audio_to_bytes
from .errors import ServerUnavailableError, WhisperError
from .result import Transcription


class WhisperClient(ClientBase):
    """Transcribe audio with model `whisper` on one or more Triton servers.

    Safe to share between threads: gRPC shares one channel per address; HTTP
    (geventhttpclient, which is bound to the thread that made it) keeps one connection per
    thread and address. Use it as a context manager or call `close()`.
    """

    def _init_transports(self) -> None:
        self._lock = threading.Lock()
        self._shared: Dict[str, Any] = {}  # grpc: url -> client
        self._local = threading.local()  # http: per-thread url -> client
        # Every client made, to close them; weak, so a finished worker thread's HTTP
        # clients go away with its thread-local storage.
        self._every: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._closed = False

    # --- transports ------------------------------------------------------------------

    def _cache(self) -> Dict[str, Any]:
        if self.protocol == "grpc":
            return self._shared
        if not hasattr(self._local, "clients"):
            self._local.clients = {}
        return self._local.clients

    def _transport(self, url: str) -> Any:
        if self._closed:
            raise WhisperError("the client is closed")
        cache = self._cache()
        with self._lock:
            client = cache.get(url)
            if client is None:
                client = self._module().InferenceServerClient(
                    url, **self._transport_kwargs(aio=False))
                cache[url] = client
                self._every.add(client)
        return client

    def _forget(self, url: str) -> None:
        # A gRPC channel that saw a refused connection waits out its own reconnect
        # backoff; the next call gets a fresh one. The old one is not closed here: another
        # thread may still be using it; it closes when the last reference goes.
        with self._lock:
            self._cache().pop(url, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._every = list(self._every), weakref.WeakSet()
            self._shared.clear()
        for client in clients:
            _close_quietly(client)

    def __enter__(self) -> "WhisperClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- sending ---------------------------------------------------------------------

    def _send(self, call: Callable[[Any], Any], parse: Callable[[Any], Any]) -> Any:
        """Run `call` on the addresses in turn, backing off between rounds."""
        error: Optional[WhisperError] = None
        cause: Optional[BaseException] = None
        current_round = 0
        for round_no, url in self._attempts():
            if round_no != current_round:
                current_round = round_no
                time.sleep(self.retry_policy.delay(round_no))
            try:
                return parse(call(self._transport(url)))
            except WhisperError:
                raise
            except Exception as exc:  # noqa: BLE001 - every transport error is mapped
                error, cause = self._map_error(exc, url), exc
                if isinstance(error, ServerUnavailableError):
                    self._forget(url)
                if not self.retry_policy.should_retry(error):
                    raise error from exc
        assert error is not None
        raise error from cause

    # --- public API ------------------------------------------------------------------

    def transcribe(
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
        """Transcribe one recording.

        audio: a path, bytes, a binary file object, or a numpy array of samples shaped
        (frames,) or (frames, channels) together with `sample_rate`.
        language None detects it. Raises a WhisperError subclass (see errors.py), or
        OSError when a path cannot be read.
        """
        options = self._options(
            language=language, task=task, beam_size=beam_size,
            word_timestamps=word_timestamps, vad_filter=vad_filter,
            initial_prompt=initial_prompt, hotwords=hotwords, temperature=temperature)
        inputs = self._build_inputs(audio_to_bytes(audio, sample_rate), options)
        return self._send(*self._infer_request(inputs))

    def transcribe_many(
        self,
        items: Iterable[AudioInput],
        *,
        concurrency: int = 4,
        sample_rate: Optional[int] = None,
        **options: Any,
    ) -> List[Union[Transcription, Exception]]:
        """Transcribe several recordings, `concurrency` at a time, on a thread pool.

        Returns one entry per item, in input order: the Transcription, or the exception
        that item raised (check with isinstance). Bad options raise at once instead.
        """
        items = list(items)
        self._options(**options)  # fail fast on options shared by every item
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")

        def one(item: AudioInput) -> Union[Transcription, Exception]:
            try:
                return self.transcribe(item, sample_rate=sample_rate, **options)
            except Exception as exc:  # noqa: BLE001 - reported in the item's slot
                return exc

        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(concurrency, len(items)),
                                thread_name_prefix="whisper-triton") as pool:
            return list(pool.map(one, items))

    def is_ready(self) -> bool:
        """True when some address answers and has the model ready; never raises."""
        for url in self._url_order():
            try:
                transport = self._transport(url)
                kwargs = self._probe_kwargs()
                if transport.is_server_ready(**kwargs) and transport.is_model_ready(
                        self.model_name, **kwargs):
                    return True
            except Exception:  # noqa: BLE001 - "not ready" is the answer
                self._forget(url)
        return False

    def server_metadata(self) -> Dict[str, Any]:
        """Triton's server metadata: name, version, extensions."""
        return self._send(*self._server_metadata_request())

    def model_metadata(self) -> Dict[str, Any]:
        """The model's name, versions, inputs and outputs (shapes as ints)."""
        return self._send(*self._model_metadata_request())


def _close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - closing must not hide the real error
        pass
