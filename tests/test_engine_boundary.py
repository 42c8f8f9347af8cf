"""The engine is internal: a real server refuses direct calls to `whisper_engine` that lack the
front's secret (WHISPER_ENGINE_SECRET, which scripts/serve and the container set), over both
protocols, while model `whisper` keeps working."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.utils

from corpus import JFK
from raw_triton import MODULES, transcribe
from whisper_service.accuracy import wer
from whisper_service.engine_requests import NOT_THE_FRONT, SECRET_INPUT
from whisper_service.options import DecodeOptions

pytestmark = pytest.mark.server
ENGINE = "whisper_engine"
INVALID = ("400", "StatusCode.INVALID_ARGUMENT")


def _engine_inputs(module, n_mels=80, secret=None, features=None):
    if features is None:
        features = np.zeros((1, n_mels, 3000), np.float32)
    values = {
        "FEATURES": (features, "FP32"),
        "NUM_FRAMES": (np.array([[3000]], np.int32), "INT32"),
        "OPTIONS": (np.array([[DecodeOptions().to_json().encode()]], np.object_), "BYTES"),
    }
    if secret is not None:
        values[SECRET_INPUT] = (np.array([[secret.encode()]], np.object_), "BYTES")
    tensors = []
    for name, (array, datatype) in values.items():
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _engine_error(protocol, url, **kwargs):
    module = MODULES[protocol]
    client = module.InferenceServerClient(url)
    try:
        with pytest.raises(tritonclient.utils.InferenceServerException) as info:
            client.infer(ENGINE, _engine_inputs(module, **kwargs))
    finally:
        client.close()
    return info.value


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_direct_engine_calls_without_the_secret_are_refused(triton_server, protocol):
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    for secret in (None, "a-guess", ""):
        error = _engine_error(protocol, url, secret=secret)
        assert error.status() in INVALID, (secret, error.status(), error.message())
        assert NOT_THE_FRONT in error.message(), error.message()
        assert "Traceback" not in error.message()

    text, _ = transcribe(protocol, url, JFK.read_bytes())
    assert wer(JFK.transcript, text) <= 0.15, text
    for model in ("whisper", ENGINE):
        with urllib.request.urlopen(
                f"http://{triton_server.http_url}/v2/models/{model}/ready") as response:
            assert response.status == 200


def test_with_the_secret_the_engine_checks_the_request_itself(triton_server):
    if triton_server.managed is None:
        pytest.skip("the secret of a server started elsewhere is not known here")
    secret = triton_server.managed.engine_secret
    messages = []
    for n_mels in (80, 128):  # whichever the served model has
        features = np.zeros((1, n_mels, 3000), np.float32)
        features[0, 1, 2] = np.nan
        error = _engine_error("grpc", triton_server.grpc_url, secret=secret, features=features)
        assert error.status() in INVALID, error.message()
        messages.append(error.message())
    assert not any(NOT_THE_FRONT in m for m in messages), messages
    assert any("non-finite" in m for m in messages), messages
