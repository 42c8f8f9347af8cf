"""An in-process stand-in for `triton_python_backend_utils`, and a harness that loads the
repository's model.py files with it, so that a test can drive `initialize` and `execute` of
both models without a server.

Only what the two models and whisper_service use is here, with the real module's names and
signatures: Tensor, InferenceRequest (incoming, with a response sender and is_cancelled; and
BLS, with exec/async_exec), InferenceResponse, TritonError, Logger, MetricFamily,
get_input_tensor_by_name, get_output_tensor_by_name, TRITONSERVER_RESPONSE_COMPLETE_FINAL.

BLS requests are routed to models loaded with `load_model(..., serve=True)` (or to a handler
given with `route`). Like Triton, the router checks a request's inputs against the target's
config (names, data types, shapes, batch size) before the model sees it, joins requests that
arrive within a short queue delay into one `execute` call (dynamic batching), and answers an
unknown model with Triton's own error. Whatever Triton itself would refuse from a model (a
response count that differs from the request count, a second final response, outputs whose
batch size is not the request's) is recorded in `violations()`: tests assert it stays empty.

    import triton_stub as stub
    engine = stub.load_model("whisper_engine", parameters={"model": "tiny.en"})
    front = stub.load_model("whisper", parameters={"gather_uploads_ms": "0"})
    [response] = front.execute([stub.request(AUDIO=np.array([[data]], dtype=object))])
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import itertools
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

MODEL_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


# --------------------------------------------------------------------------- errors
class TritonError:
    """pb_utils.TritonError: codes as in the real module (TRITONSERVER_Error_Code)."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL):
        self._message = str(message)
        self._code = int(code)

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {code_name(self._code)})"


def code_name(code: int) -> str:
    for name in ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE",
                 "UNSUPPORTED", "ALREADY_EXISTS", "CANCELLED"):
        if getattr(TritonError, name) == code:
            return name
    return str(code)


class TritonModelException(Exception):
    """What the real stub raises when a model misuses its API (e.g. a closed sender)."""


# --------------------------------------------------------------------------- tensors
class Tensor:
    def __init__(self, name: str, array: np.ndarray):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"Tensor {name!r}: expected a numpy array, got {type(array).__name__}")
        if array.dtype == np.object_ and any(
                not isinstance(v, (bytes, str)) for v in array.reshape(-1)):
            raise TypeError(f"Tensor {name!r}: a BYTES tensor must hold bytes or str")
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def shape(self) -> List[int]:
        return list(self._array.shape)

    def is_cpu(self) -> bool:
        return True

    def copy(self) -> "Tensor":
        """What crossing a process boundary (shared memory) does to a tensor."""
        return Tensor(self._name, self._array.copy())

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, {self._array.dtype}{list(self._array.shape)})"


def get_input_tensor_by_name(inference_request, name):
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response, name):
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


# --------------------------------------------------------------------------- responses
class InferenceResponse:
    def __init__(self, output_tensors: Optional[Sequence[Tensor]] = None,
                 error: Optional[TritonError] = None):
        self._outputs = list(output_tensors or [])
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> Optional[TritonError]:
        return self._error

    def output_tensors(self) -> List[Tensor]:
        return list(self._outputs)

    def output(self, name: str) -> np.ndarray:
        """Test convenience: the named output as numpy (AssertionError when absent)."""
        tensor = get_output_tensor_by_name(self, name)
        assert tensor is not None, f"no output {name!r} in {self!r}"
        return tensor.as_numpy()

    def __repr__(self) -> str:
        if self._error is not None:
            return f"InferenceResponse(error={self._error!r})"
        return f"InferenceResponse({self._outputs!r})"


class ResponseSender:
    """request.get_response_sender(): records what is sent, refuses anything after FINAL."""

    def __init__(self, request: "InferenceRequest"):
        self._request = request
        self.sent: List[tuple] = []
        """(response or None, flags) in the order they were sent."""

    def send(self, response: Optional[InferenceResponse] = None, flags: int = 0) -> None:
        if self.is_closed():
            _violation(f"a response was sent after the final one for request "
                       f"{self._request.request_id()!r}")
            raise TritonModelException(
                "Unable to send response. Response sender has been closed.")
        if response is not None and not isinstance(response, InferenceResponse):
            raise TypeError(f"send() takes an InferenceResponse, not {type(response).__name__}")
        self.sent.append((response, flags))

    def is_closed(self) -> bool:
        return any(flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL for _, flags in self.sent)

    @property
    def responses(self) -> List[InferenceResponse]:
        return [response for response, _ in self.sent if response is not None]


# --------------------------------------------------------------------------- requests
_request_ids = itertools.count(1)


class InferenceRequest:
    """Both kinds of pb_utils.InferenceRequest: one that execute() receives (see `request`),
    and one a model builds for BLS (model_name, inputs, requested_output_names)."""

    def __init__(self, model_name: str = "", inputs: Sequence[Tensor] = (),
                 requested_output_names: Sequence[str] = (), request_id: str = "",
                 cancelled: Any = False, **_ignored):
        self.model_name = model_name
        self._inputs = list(inputs)
        self._requested = list(requested_output_names)
        self._id = request_id or f"request-{next(_request_ids)}"
        self._cancelled = cancelled
        self._sender: Optional[ResponseSender] = None

    # what a model reads from a request it executes
    def inputs(self) -> List[Tensor]:
        return list(self._inputs)

    def request_id(self) -> str:
        return self._id

    def requested_output_names(self) -> List[str]:
        return list(self._requested)

    def is_cancelled(self) -> bool:
        return bool(self._cancelled()) if callable(self._cancelled) else bool(self._cancelled)

    def cancel(self) -> None:
        self._cancelled = True

    def get_response_sender(self) -> ResponseSender:
        if self._sender is None:
            self._sender = ResponseSender(self)
        return self._sender

    @property
    def sender(self) -> ResponseSender:
        return self.get_response_sender()

    # BLS
    async def async_exec(self, decoupled: bool = False) -> InferenceResponse:
        return await _bls(self)

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        return asyncio.run(_bls(self))

    def __repr__(self) -> str:
        return f"InferenceRequest({self._id!r}, {self._inputs!r})"


def request(cancelled: Any = False, request_id: str = "", **inputs: Any) -> InferenceRequest:
    """An incoming request with these inputs (numpy arrays or Tensors), by input name."""
    tensors = [value if isinstance(value, Tensor) else Tensor(name, np.asarray(value))
               for name, value in inputs.items()]
    return InferenceRequest(inputs=tensors, cancelled=cancelled, request_id=request_id)


def bytes_input(*values: Any) -> np.ndarray:
    """A BYTES input of one value per batch row: shape [rows, 1], dtype object."""
    return np.array([[v.encode("utf-8") if isinstance(v, str) else v] for v in values],
                    dtype=np.object_)


# --------------------------------------------------------------------------- logging
class LogLevel:
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


LOG: List[tuple] = []
"""(level name, message) of everything logged through Logger, in order."""


class Logger:
    @staticmethod
    def log(message: str, level: int = LogLevel.INFO) -> None:
        name = {LogLevel.INFO: "info", LogLevel.WARNING: "warn", LogLevel.ERROR: "error",
                LogLevel.VERBOSE: "verbose"}.get(level, str(level))
        LOG.append((name, str(message)))

    @staticmethod
    def log_info(message: str) -> None:
        Logger.log(message, LogLevel.INFO)

    @staticmethod
    def log_warn(message: str) -> None:
        Logger.log(message, LogLevel.WARNING)

    @staticmethod
    def log_error(message: str) -> None:
        Logger.log(message, LogLevel.ERROR)

    @staticmethod
    def log_verbose(message: str) -> None:
        Logger.log(message, LogLevel.VERBOSE)


# --------------------------------------------------------------------------- metrics
@dataclass
class _Series:
    kind: int
    value: float = 0.0
    observations: List[float] = field(default_factory=list)
    buckets: Optional[List[float]] = None


_SERIES: Dict[tuple, _Series] = {}
_FAMILY_KINDS: Dict[str, int] = {}


def _series_key(name: str, labels: Mapping[str, str]) -> tuple:
    return name, tuple(sorted((str(k), str(v)) for k, v in labels.items()))


class Metric:
    def __init__(self, family: "MetricFamily", labels: Mapping[str, str],
                 buckets: Optional[Sequence[float]] = None):
        kind = family.kind
        if kind == MetricFamily.HISTOGRAM and not buckets:
            raise TritonModelException("a histogram metric needs buckets")
        if kind != MetricFamily.HISTOGRAM and buckets:
            raise TritonModelException("only a histogram metric takes buckets")
        self._family = family  # a family must outlive its metrics (as in Triton)
        key = _series_key(family.name, labels)
        self._series = _SERIES.setdefault(key, _Series(kind, buckets=list(buckets or []) or None))

    def increment(self, value: float) -> None:
        if self._series.kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("increment() is not supported by a histogram")
        if self._series.kind == MetricFamily.COUNTER and value < 0:
            raise TritonModelException("a counter cannot be decremented")
        self._series.value += value

    def set(self, value: float) -> None:
        if self._series.kind != MetricFamily.GAUGE:
            raise TritonModelException("set() is only supported by a gauge")
        self._series.value = value

    def observe(self, value: float) -> None:
        if self._series.kind != MetricFamily.HISTOGRAM:
            raise TritonModelException("observe() is only supported by a histogram")
        self._series.observations.append(value)

    def value(self) -> float:
        if self._series.kind == MetricFamily.HISTOGRAM:
            raise TritonModelException("value() is not supported by a histogram")
        return self._series.value


class MetricFamily:
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2

    def __init__(self, name: str, description: str, kind: int):
        if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name):
            raise TritonModelException(f"invalid metric name {name!r}")
        known = _FAMILY_KINDS.setdefault(name, kind)
        if known != kind:
            raise TritonModelException(f"metric family {name!r} exists with another kind")
        self.name, self.description, self.kind = name, description, kind

    def Metric(self, labels: Optional[Mapping[str, str]] = None,  # noqa: N802 - Triton's name
               buckets: Optional[Sequence[float]] = None) -> Metric:
        return Metric(self, labels or {}, buckets)


def metric_value(name: str, **labels: str) -> float:
    """Current value of a counter or gauge series (0 when it was never created)."""
    series = _SERIES.get(_series_key(name, labels))
    return 0.0 if series is None else series.value


def metric_observations(name: str, **labels: str) -> List[float]:
    series = _SERIES.get(_series_key(name, labels))
    return [] if series is None else list(series.observations)


def metric_series(name: str) -> Dict[tuple, _Series]:
    """Every series of a family, by its sorted label pairs."""
    return {key[1]: series for key, series in _SERIES.items() if key[0] == name}


# --------------------------------------------------------------------------- contract checks
_VIOLATIONS: List[str] = []


def _violation(message: str) -> None:
    _VIOLATIONS.append(message)


def violations() -> List[str]:
    """What Triton itself would have refused from a model since the last clear."""
    return list(_VIOLATIONS)


def clear_violations() -> None:
    _VIOLATIONS.clear()


_NUMPY_TYPES = {
    "TYPE_BOOL": np.bool_, "TYPE_UINT8": np.uint8, "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32, "TYPE_UINT64": np.uint64, "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16, "TYPE_FP32": np.float32, "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def check_inputs(config: Mapping, tensors: Sequence[Tensor]) -> Optional[str]:
    """Triton's own checks of a request against the model config (None when it passes)."""
    model = config.get("name", "?")
    declared = {spec["name"]: spec for spec in config.get("input", [])}
    given = {t.name(): t for t in tensors}
    for name in given:
        if name not in declared:
            return f"unexpected inference input '{name}' for model '{model}'"
    required = [n for n, spec in declared.items() if not spec.get("optional")]
    missing = [n for n in required if n not in given]
    if missing:
        return (f"expected {len(required)} inputs but got {len(given)} inputs for model "
                f"'{model}'. Got input(s) {sorted(given)}, but missing required input(s) "
                f"{missing}.")
    max_batch = int(config.get("max_batch_size", 0))
    batch = None
    for name, tensor in given.items():
        spec, array = declared[name], tensor.as_numpy()
        wanted = _NUMPY_TYPES.get(spec.get("data_type", ""), None)
        if wanted is not None and array.dtype.type is not wanted and not (
                wanted is np.object_ and array.dtype.kind in "SU"):
            return (f"inference input '{name}' data-type is '{array.dtype}', but model "
                    f"'{model}' expects '{spec['data_type']}'")
        dims = [int(d) for d in spec.get("dims", [])]
        shape = list(array.shape)
        if max_batch > 0:
            if not shape:
                return f"input '{name}' has no batch dimension for model '{model}'"
            if batch is None:
                batch = shape[0]
            elif shape[0] != batch:
                return (f"input '{name}' batch size does not match other inputs for "
                        f"'{model}'")
            if shape[0] < 1 or shape[0] > max_batch:
                return (f"inference request batch-size must be <= {max_batch} for "
                        f"'{model}'")
            shape = shape[1:]
        if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape)):
            expected = ([-1] if max_batch > 0 else []) + dims
            return (f"unexpected shape for input '{name}' for model '{model}'. Expected "
                    f"{_shape_text(expected)}, got {_shape_text(array.shape)}")
    return None


def _batch_size(tensors: Sequence[Tensor]) -> int:
    return int(tensors[0].as_numpy().shape[0]) if tensors else 0


def _check_response(config: Mapping, req: InferenceRequest, response: Any) -> None:
    model = config.get("name", "?")
    if not isinstance(response, InferenceResponse):
        _violation(f"model '{model}' answered {req.request_id()} with "
                   f"{type(response).__name__}, not an InferenceResponse")
        return
    if response.has_error():
        return
    declared = {spec["name"]: spec for spec in config.get("output", [])}
    rows = _batch_size(req.inputs()) if int(config.get("max_batch_size", 0)) > 0 else None
    for tensor in response.output_tensors():
        if tensor.name() not in declared:
            _violation(f"model '{model}' returned undeclared output '{tensor.name()}'")
        elif rows is not None and tensor.as_numpy().shape[:1] != (rows,):
            _violation(f"model '{model}' returned {tensor.name()} of shape "
                       f"{list(tensor.as_numpy().shape)} for a request of batch size {rows}")


# --------------------------------------------------------------------------- models
@dataclass
class LoadedModel:
    name: str
    module: Any
    model: Any
    config: Dict[str, Any]
    args: Dict[str, str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Triton runs one execute() at a time per instance."""
    executions: List[int] = field(default_factory=list)
    """Requests per execute() call, in order (what dynamic batching gave the model)."""

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.model.execute)

    def execute(self, requests: Sequence[InferenceRequest], validate: bool = True
                ) -> List[InferenceResponse]:
        """One execute() call, as Triton makes it: the final response of each request.

        With validate, a request Triton would refuse never reaches the model: it gets
        Triton's INVALID_ARG error instead."""
        return asyncio.run(self.execute_async(requests, validate))

    async def execute_async(self, requests: Sequence[InferenceRequest], validate: bool = True
                            ) -> List[InferenceResponse]:
        passed, refused = [], {}
        for req in requests:
            problem = check_inputs(self.config, req.inputs()) if validate else None
            if problem is None:
                passed.append(req)
            else:
                refused[id(req)] = InferenceResponse(error=TritonError(
                    f"[request id: {req.request_id()}] {problem}", TritonError.INVALID_ARG))
        returned = await self._run(passed) if passed else []
        answers = dict(zip(map(id, passed), returned or []))
        responses = []
        for req in requests:
            if id(req) in refused:
                responses.append(refused[id(req)])
            elif id(req) in answers:
                responses.append(answers[id(req)])
            else:
                # Sent through the response sender: perhaps from another thread, after
                # execute returned (Triton's default mode allows that since 24.06).
                await self._until_final(req)
                responses.append(self._final_sent(req))
        for req, response in zip(requests, responses):
            if id(req) not in refused:
                _check_response(self.config, req, response)
        return responses

    async def _run(self, requests: List[InferenceRequest]) -> Optional[list]:
        self.executions.append(len(requests))
        if self.is_async:
            returned = await self.model.execute(requests)
        else:
            loop = asyncio.get_running_loop()
            returned = await loop.run_in_executor(None, self._execute_locked, requests)
        if returned is None:
            return None
        if len(returned) != len(requests):
            _violation(f"model '{self.name}' returned {len(returned)} responses for "
                       f"{len(requests)} requests")
            error = InferenceResponse(error=TritonError(
                "Number of InferenceResponse objects do not match the number of "
                "InferenceRequest objects.", TritonError.INTERNAL))
            return [error] * len(requests)
        return list(returned)

    def _execute_locked(self, requests):
        with self.lock:
            return self.model.execute(requests)

    FINAL_RESPONSE_TIMEOUT_S = 300.0

    async def _until_final(self, req: InferenceRequest) -> None:
        deadline = time.monotonic() + self.FINAL_RESPONSE_TIMEOUT_S
        while not req.sender.is_closed() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _final_sent(self, req: InferenceRequest) -> InferenceResponse:
        sent = req.sender.sent
        finals = [r for r, flags in sent if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL]
        if not finals:
            _violation(f"model '{self.name}' returned None and never sent a final response "
                       f"for {req.request_id()}")
            return InferenceResponse(error=TritonError("no response", TritonError.INTERNAL))
        responses = [r for r, _ in sent if r is not None]
        if len(responses) != 1:
            _violation(f"model '{self.name}' sent {len(responses)} responses for "
                       f"{req.request_id()} (not decoupled: exactly one is expected)")
        return responses[-1] if responses else finals[-1]

    def finalize(self) -> None:
        finalize = getattr(self.model, "finalize", None)
        if finalize is not None:
            finalize()


def read_config(model_dir: Path, parameters: Optional[Mapping[str, str]] = None) -> dict:
    """A model's config.pbtxt as the JSON dict Triton hands to initialize, with these
    parameters added or replaced."""
    text = (Path(model_dir) / "config.pbtxt").read_text()
    try:
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2

        message = text_format.Parse(text, model_config_pb2.ModelConfig())
        config = json_format.MessageToDict(message, preserving_proto_field_name=True)
    except ImportError:  # no protobuf: the fields the models read, by hand
        params = re.findall(r'key:\s*"(\w+)"\s*value:\s*{\s*string_value:\s*"([^"]*)"\s*}', text)
        batch = re.search(r"max_batch_size:\s*(\d+)", text)
        config = {"name": re.search(r'name:\s*"([^"]+)"', text).group(1),
                  "max_batch_size": int(batch.group(1)) if batch else 0,
                  "parameters": {k: {"string_value": v} for k, v in params}}
    config.setdefault("name", Path(model_dir).name)
    config.setdefault("parameters", {})
    for key, value in (parameters or {}).items():
        config["parameters"][key] = {"string_value": str(value)}
    return config


def model_args(model_dir: Path, config: Mapping, instance_name: Optional[str] = None,
               kind: str = "CPU", device_id: int = 0) -> Dict[str, str]:
    """The `args` of initialize(), as Triton's Python backend fills them."""
    name = config.get("name", Path(model_dir).name)
    return {
        "model_config": json.dumps(config),
        "model_instance_kind": kind,
        "model_instance_name": instance_name or f"{name}_0_0",
        "model_instance_device_id": str(device_id),
        "model_repository": str(Path(model_dir)),
        "model_version": "1",
        "model_name": name,
    }


_module_ids = itertools.count()


def import_model(path: Path) -> Any:
    """A model.py file as a fresh module, importing this stand-in as triton_python_backend_utils."""
    path = Path(path)
    module_name = f"_triton_model_{path.parent.parent.name}_{next(_module_ids)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = sys.modules[__name__]
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        if previous is None:
            sys.modules.pop("triton_python_backend_utils", None)
        else:
            sys.modules["triton_python_backend_utils"] = previous
    return module


def load_model(name: str, repository: Path = MODEL_REPOSITORY,
               parameters: Optional[Mapping[str, str]] = None, serve: bool = True,
               queue_delay_s: Optional[float] = None, **instance: Any) -> LoadedModel:
    """Import and initialize model `name` of the repository; with serve, BLS requests for
    `name` reach it (through a dynamic batcher when its config has dynamic_batching)."""
    model_dir = Path(repository) / name
    config = read_config(model_dir, parameters)
    args = model_args(model_dir, config, **instance)
    module = import_model(model_dir / "1" / "model.py")
    model = module.TritonPythonModel()
    model.initialize(args)
    loaded = LoadedModel(name, module, model, config, args)
    if serve:
        if queue_delay_s is None:
            delay_us = config.get("dynamic_batching", {}).get("max_queue_delay_microseconds", 0)
            queue_delay_s = int(delay_us) / 1e6
        _ROUTES[name] = _Batcher(loaded, queue_delay_s)
    return loaded


# --------------------------------------------------------------------------- BLS routing
Handler = Callable[[InferenceRequest], Any]
_ROUTES: Dict[str, Any] = {}


class _Batcher:
    """Dynamic batching: BLS requests that arrive within the queue delay share one execute(),
    up to max_batch_size rows."""

    def __init__(self, loaded: LoadedModel, queue_delay_s: float):
        self.loaded = loaded
        self.queue_delay_s = queue_delay_s
        self.max_rows = int(loaded.config.get("max_batch_size", 0)) or 1
        self._pending: List[tuple] = []
        self._flusher: Optional[asyncio.Task] = None

    async def __call__(self, req: InferenceRequest) -> InferenceResponse:
        problem = check_inputs(self.loaded.config, req.inputs())
        if problem is not None:
            return InferenceResponse(error=TritonError(
                f"[request id: {req.request_id()}] {problem}", TritonError.INVALID_ARG))
        loop = asyncio.get_running_loop()
        if self._flusher is not None and self._flusher.get_loop() is not loop:
            # Left over from an event loop that has ended (a test that failed mid-way).
            self._pending, self._flusher = [], None
        future = loop.create_future()
        self._pending.append((req, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_after_delay())
        return await future

    async def _flush_after_delay(self) -> None:
        await asyncio.sleep(self.queue_delay_s)
        while self._pending:
            batch, rows = [], 0
            while self._pending:
                size = _batch_size(self._pending[0][0].inputs()) or 1
                if batch and rows + size > self.max_rows:
                    break
                batch.append(self._pending.pop(0))
                rows += size
            requests = [req for req, _ in batch]
            try:
                responses = await self.loaded.execute_async(requests, validate=False)
            except Exception as exc:  # noqa: BLE001 - as Triton reports a failed execute
                error = InferenceResponse(error=TritonError(
                    f"Failed to process the request(s) for model instance "
                    f"'{self.loaded.args['model_instance_name']}', message: "
                    f"{type(exc).__name__}: {exc}", TritonError.INTERNAL))
                responses = [error] * len(requests)
            for (_, future), response in zip(batch, responses):
                if not future.done():
                    future.set_result(response)


async def _bls(req: InferenceRequest) -> InferenceResponse:
    handler = _ROUTES.get(req.model_name)
    if handler is None:
        return InferenceResponse(error=TritonError(
            f"Request for unknown model: '{req.model_name}' is not found",
            TritonError.NOT_FOUND))
    # Inputs cross a process boundary in Triton: the target gets copies.
    sent = InferenceRequest(model_name=req.model_name,
                            inputs=[t.copy() for t in req.inputs()],
                            requested_output_names=req.requested_output_names())
    response = handler(sent)
    if inspect.isawaitable(response):
        response = await response
    if response.has_error() or not req.requested_output_names():
        return response
    wanted = set(req.requested_output_names())
    return InferenceResponse(output_tensors=[
        t for t in response.output_tensors() if t.name() in wanted])


@contextlib.contextmanager
def route(model_name: str, handler: Optional[Handler]):
    """BLS requests for model_name go to handler (request -> response, may be async) while
    the block runs; None makes the model unknown. The previous route comes back after."""
    previous = _ROUTES.get(model_name)
    if handler is None:
        _ROUTES.pop(model_name, None)
    else:
        _ROUTES[model_name] = handler
    try:
        yield
    finally:
        if previous is None:
            _ROUTES.pop(model_name, None)
        else:
            _ROUTES[model_name] = previous


def unserve(model_name: str) -> None:
    _ROUTES.pop(model_name, None)
