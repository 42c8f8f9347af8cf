"""Everything the sync and async clients share and that does no I/O.

Addresses, tensor building (options: see options.py), response parsing, error mapping and the
retry/failover plan live here, so `WhisperClient` and `AsyncWhisperClient` only differ in
how they send (blocking calls versus awaits).
"""

from __future__ import annotations

import itertools
import random
import ssl as ssl_module
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InvalidArgumentError, ServerError, WhisperError, map_error
from .options import TranscribeOptions, validate
from .result import Transcription

PROTOCOLS = ("grpc", "http")
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
DEFAULT_MODEL = "whisper"


def default_url(protocol: str) -> str:
    return f"localhost:{DEFAULT_PORTS[protocol]}"


def parse_urls(url: Union[str, Sequence[str]]) -> Tuple[List[str], bool]:
    """["host:port", ...] and whether any address asked for TLS with https://.

    Accepts one address, a comma-separated string, or a list; tritonclient wants no scheme,
    so "http://", "https://" and "grpc://" are stripped.
    """
    raw = url.split(",") if isinstance(url, str) else list(url)
    urls, tls = [], False
    for item in raw:
        if not isinstance(item, str):
            raise InvalidArgumentError(f"server address must be a string, not {item!r}")
        item = item.strip()
        scheme, sep, rest = item.partition("://")
        if sep:
            if scheme.lower() not in ("http", "https", "grpc", "grpcs"):
                raise InvalidArgumentError(f"unknown scheme in server address {item!r}")
            tls = tls or scheme.lower() in ("https", "grpcs")
            item = rest
        item = item.rstrip("/")
        if item:
            urls.append(item)
    if not urls:
        raise InvalidArgumentError("no server address given")
    return urls, tls


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, for retryable errors only.

    `retries` is how many extra rounds follow the first; one round tries every address
    once, so with several servers a refused connection fails over without waiting.
    """

    retries: int = 2
    backoff: float = 0.5
    max_backoff: float = 8.0
    jitter: float = 0.5  # share of the delay that is random: 0 = none, 1 = "full jitter"

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise InvalidArgumentError("retries and backoff must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise InvalidArgumentError("jitter must be between 0 and 1")

    def delay(self, round_no: int, rng: Optional[random.Random] = None) -> float:
        """Seconds to wait before round `round_no` (1 = first retry)."""
        base = min(self.max_backoff, self.backoff * (2 ** max(0, round_no - 1)))
        rand = (rng or random).random()
        return base * (1.0 - self.jitter * rand)

    @staticmethod
    def should_retry(error: BaseException) -> bool:
        return isinstance(error, WhisperError) and error.retryable


class ClientBase:
    """Configuration and pure helpers of both clients. Not used directly."""

    def __init__(
        self,
        url: Union[str, Sequence[str], None] = None,
        protocol: str = "grpc",
        *,
        model_name: str = DEFAULT_MODEL,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.5,
        ssl: bool = False,
        root_certificates: Optional[str] = None,
        private_key: Optional[str] = None,
        certificate_chain: Optional[str] = None,
        insecure: bool = False,
    ) -> None:
        """
        url: "host:port", a comma-separated list, or a list of them (round-robin with
            failover); default localhost:8001 for grpc, localhost:8000 for http.
        timeout: seconds one request may take end to end (long audio takes long).
        connect_timeout: seconds to establish a connection (sync HTTP only; refused
            connections fail at once on every transport).
        retries, backoff: rounds of retry after the first try and the first delay in
            seconds, for unavailable/overloaded/timeout only.
        ssl, root_certificates, private_key, certificate_chain: TLS, with PEM file paths
            for the CA bundle and an optional client certificate; insecure skips
            verification (HTTP only).
        """
        if protocol not in PROTOCOLS:
            raise InvalidArgumentError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
        self.protocol = protocol
        self.urls, tls = parse_urls(url if url is not None else default_url(protocol))
        self.model_name = model_name
        if not timeout or timeout <= 0 or not connect_timeout or connect_timeout <= 0:
            raise InvalidArgumentError("timeout and connect_timeout must be positive seconds")
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retry_policy = RetryPolicy(retries=retries, backoff=backoff)
        self.ssl = bool(ssl or tls or root_certificates or certificate_chain)
        self._tls_files = (root_certificates, private_key, certificate_chain)
        self._insecure = insecure
        self._rotation = itertools.count()
        self._init_transports()

    def _init_transports(self) -> None:
        """Set up the subclass's (empty) transport cache."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(url={','.join(self.urls)!r}, protocol={self.protocol!r}, "
                f"model_name={self.model_name!r})")

    # --- addresses and retries -------------------------------------------------------

    def _url_order(self) -> List[str]:
        """Every address once, starting one further on each call (round-robin)."""
        start = next(self._rotation) % len(self.urls)  # next() on count is atomic in CPython
        return self.urls[start:] + self.urls[:start]

    def _attempts(self) -> List[Tuple[int, str]]:
        """(round, url) in the order a call tries them; round > 0 waits for backoff first."""
        order = self._url_order()
        return [(r, u) for r in range(self.retry_policy.retries + 1) for u in order]

    # --- transports ------------------------------------------------------------------

    def _ssl_context(self) -> Optional[ssl_module.SSLContext]:
        if not self.ssl:
            return None
        ca, key, chain = self._tls_files
        context = ssl_module.create_default_context(cafile=ca)
        if chain:
            context.load_cert_chain(chain, key)
        if self._insecure:
            context.check_hostname = False
            context.verify_mode = ssl_module.CERT_NONE
        return context

    def _transport_kwargs(self, aio: bool) -> Dict[str, Any]:
        """Constructor arguments of tritonclient's InferenceServerClient for this protocol."""
        ca, key, chain = self._tls_files
        if self.protocol == "grpc":
            return {"ssl": self.ssl, "root_certificates": ca, "private_key": key,
                    "certificate_chain": chain}
        if aio:
            # aiohttp has one total timeout per session; refused connections fail at once.
            return {"conn_timeout": self.timeout, "ssl": self.ssl,
                    "ssl_context": self._ssl_context()}
        kwargs: Dict[str, Any] = {"connection_timeout": self.connect_timeout,
                                  "network_timeout": self.timeout, "ssl": self.ssl,
                                  "insecure": self._insecure}
        if self.ssl:
            options = {"ca_certs": ca, "certfile": chain, "keyfile": key}
            kwargs["ssl_options"] = {k: v for k, v in options.items() if v}
        return kwargs

    def _probe_kwargs(self, as_json: bool = False) -> Dict[str, Any]:
        """Health and metadata calls: short gRPC deadline; gRPC answers protobuf unless
        as_json, HTTP answers dicts already."""
        if self.protocol != "grpc":
            return {}
        kwargs: Dict[str, Any] = {"client_timeout": self.connect_timeout}
        if as_json:
            kwargs["as_json"] = True
        return kwargs

    def _module(self) -> Any:
        # The aio modules use the same InferInput classes as the sync ones.
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    # --- requests and responses ------------------------------------------------------

    @staticmethod
    def _options(**options: Any) -> TranscribeOptions:
        """Validated options from client keywords (unknown ones refused by name)."""
        return TranscribeOptions(**validate(options))

    def _build_inputs(self, audio: bytes, options: TranscribeOptions) -> List[Any]:
        module = self._module()
        tensors = [("AUDIO", "BYTES", np.array([[audio]], dtype=np.object_))]
        result = []
        for name, dtype, array in tensors + options.tensors():
            tensor = module.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            result.append(tensor)
        return result

    # Request recipes: `call(transport)` returns the value (sync) or a coroutine (aio);
    # the subclasses run it, with retries, and hand the raw answer to `parse`.

    def _infer_request(self, inputs: List[Any]) -> Tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        outputs = [self._module().InferRequestedOutput("RESULT")]
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}

        def call(transport: Any) -> Any:
            return transport.infer(self.model_name, inputs, outputs=outputs, **kwargs)

        return call, self._parse_result

    def _server_metadata_request(self) -> Tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        kwargs = self._probe_kwargs(as_json=True)
        return (lambda t: t.get_server_metadata(**kwargs)), self._metadata

    def _model_metadata_request(self) -> Tuple[Callable[[Any], Any], Callable[[Any], Any]]:
        kwargs = self._probe_kwargs(as_json=True)
        return (lambda t: t.get_model_metadata(self.model_name, **kwargs)), self._metadata

    @staticmethod
    def _parse_result(response: Any) -> Transcription:
        """The RESULT JSON of an InferResult (either transport) as a Transcription."""
        array = response.as_numpy("RESULT")
        if array is None or array.size == 0:
            raise ServerError("the server's answer has no RESULT output")
        raw = array.reshape(-1)[0]
        try:
            return Transcription.from_json(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise ServerError(f"the server's RESULT is not valid transcription JSON: {exc}") from exc

    @staticmethod
    def _metadata(response: Any) -> Dict[str, Any]:
        """HTTP returns dicts; gRPC (as_json) returns int64 as strings: make shapes ints."""
        for key in ("inputs", "outputs"):
            for tensor in response.get(key, []) if isinstance(response, dict) else []:
                if "shape" in tensor:
                    tensor["shape"] = [int(d) for d in tensor["shape"]]
        return response

    @staticmethod
    def _map_error(exc: BaseException, url: str) -> WhisperError:
        return map_error(exc, url)
