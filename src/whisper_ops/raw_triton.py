"""Calls to model `whisper` with plain tritonclient (HTTP or gRPC), as any service would.

The soak run and the benchmark use these rather than the client library, so that what they
measure is the server alone; the tests use them too (tests/raw_triton.py re-exports this).
"""

from __future__ import annotations

import json
from typing import Any, Dict, Tuple

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio

_DTYPES = {"LANGUAGE": "BYTES", "TASK": "BYTES", "INITIAL_PROMPT": "BYTES", "HOTWORDS": "BYTES",
           "BEAM_SIZE": "INT32", "WORD_TIMESTAMPS": "BOOL", "VAD_FILTER": "BOOL",
           "TEMPERATURE": "FP32"}
_NUMPY = {"BYTES": np.object_, "INT32": np.int32, "BOOL": np.bool_, "FP32": np.float32}
MODULES = {"http": httpclient, "grpc": grpcclient}
AIO = {"http": httpaio, "grpc": grpcaio}


def inputs(module, audio: bytes, **options: Any):
    tensors = [module.InferInput("AUDIO", [1, 1], "BYTES")]
    tensors[0].set_data_from_numpy(np.array([[audio]], dtype=np.object_))
    for name, value in options.items():
        name = name.upper()
        dtype = _DTYPES[name]
        if isinstance(value, str):
            value = value.encode("utf-8")
        tensor = module.InferInput(name, [1, 1], dtype)
        tensor.set_data_from_numpy(np.array([[value]], dtype=_NUMPY[dtype]))
        tensors.append(tensor)
    return tensors


def parse(response) -> Tuple[str, Dict]:
    text = response.as_numpy("TEXT").reshape(-1)[0].decode("utf-8")
    return text, json.loads(response.as_numpy("RESULT").reshape(-1)[0])


def client(protocol: str, url: str):
    module = MODULES[protocol]
    if protocol == "http":
        return module.InferenceServerClient(url, network_timeout=600, connection_timeout=600)
    return module.InferenceServerClient(url)


def transcribe(protocol: str, url: str, audio: bytes, **options: Any) -> Tuple[str, Dict]:
    with client(protocol, url) as c:
        return parse(c.infer("whisper", inputs(MODULES[protocol], audio, **options),
                             **({"client_timeout": 600} if protocol == "grpc" else {})))


async def transcribe_async(protocol: str, url: str, audio: bytes, **options: Any):
    module = AIO[protocol]
    c = module.InferenceServerClient(url, **({"conn_timeout": 600} if protocol == "http" else {}))
    try:
        return parse(await c.infer("whisper", inputs(MODULES[protocol], audio, **options)))
    finally:
        await c.close()
