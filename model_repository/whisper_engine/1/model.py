"""Model `whisper_engine`: the one copy of the Whisper model, fed by dynamic batching.

Each request carries one or more 30 s windows (features) of one upload; Triton's dynamic
batcher joins requests from many uploads, and WhisperEngine encodes and decodes all their
windows together. A window that fails fails only the request that owns it.
"""

# Triton's Python stub ignores PYTHONPATH; scripts/serve names this environment's packages
# here (the container installs them system-wide and leaves it unset).
import os, site, sys  # noqa: E401
_before = list(sys.path)
for _entry in filter(None, os.environ.get("WHISPER_SITE_PACKAGES", "").split(os.pathsep)):
    site.addsitedir(_entry)
sys.path[:] = [p for p in sys.path if p not in _before] + _before

import json
import logging

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_service import settings as model_settings
from whisper_service.triton_log import route_to_triton
from whisper_service.engine import WhisperEngine
from whisper_service.errors import InvalidInputError
from whisper_service.metrics import EngineMetrics
from whisper_service.options import DecodeOptions

log = logging.getLogger("whisper_engine")


class TritonPythonModel:
    def initialize(self, args):
        route_to_triton(pb_utils)
        config = json.loads(args["model_config"])
        on_gpu = args.get("model_instance_kind") == "GPU"
        device_index = int(args.get("model_instance_device_id", 0)) if on_gpu else 0
        self.settings = model_settings.resolve(
            model_settings.config_parameters(config), gpu_available=on_gpu or _cuda_visible())
        pb_utils.Logger.log_info(f"whisper_engine loading: {self.settings.reason}")
        self.engine = WhisperEngine(self.settings, device_index=device_index)
        self.metrics = EngineMetrics(pb_utils, model=args["model_name"])
        pb_utils.Logger.log_info(
            f"whisper_engine ready: {self.engine.n_mels} mel bins, "
            f"{'multilingual' if self.engine.multilingual else 'English-only'}, "
            f"instance {args['model_instance_name']} on {self.settings.device}:{device_index}")

    def execute(self, requests):
        responses = [None] * len(requests)
        features, frames, options, owners = [], [], [], []
        for r, request in enumerate(requests):
            raw_options = pb_utils.get_input_tensor_by_name(request, "OPTIONS").as_numpy()
            if not any(raw_options.reshape(-1)):
                # Only model_warmup sends empty OPTIONS (with zero features of a fixed mel
                # count): warm up on silence of the model's own shape.
                self.engine.warm_up(raw_options.size)
                responses[r] = _warm_up_response(raw_options.size)
                continue
            try:
                f, n, o = self._read(request)
            except InvalidInputError as exc:
                responses[r] = _error(str(exc), pb_utils.TritonError.INVALID_ARG)
                continue
            features.append(f)
            frames.extend(n)
            options.extend(o)
            owners.extend([r] * len(o))
        if options:
            self.metrics.batch(len(options))
            outcomes = self.engine.transcribe_windows(np.concatenate(features), frames, options)
            for r in sorted(set(owners)):
                mine = [outcomes[i] for i, owner in enumerate(owners) if owner == r]
                responses[r] = _response(mine)
        return responses

    def _read(self, request):
        features = pb_utils.get_input_tensor_by_name(request, "FEATURES").as_numpy()
        frames = pb_utils.get_input_tensor_by_name(request, "NUM_FRAMES").as_numpy().reshape(-1)
        raw_options = pb_utils.get_input_tensor_by_name(request, "OPTIONS").as_numpy().reshape(-1)
        if features.shape[1] != self.engine.n_mels:
            raise InvalidInputError(
                f"FEATURES has {features.shape[1]} mel bins; the served model expects "
                f"{self.engine.n_mels}.", "invalid_features")
        options = [DecodeOptions.from_json(raw) for raw in raw_options]
        return features, [int(n) for n in frames], options

    def finalize(self):
        # Unload through the repository API is the old service's "clear GPU memory": free the
        # CTranslate2 model now rather than when the stub process happens to exit.
        self.engine.release()
        pb_utils.Logger.log_info("whisper_engine unloaded, model memory released")


def _response(outcomes):
    for outcome in outcomes:
        if isinstance(outcome, InvalidInputError):
            return _error(str(outcome), pb_utils.TritonError.INVALID_ARG)
        if isinstance(outcome, Exception):
            return _error(f"engine failure: {type(outcome).__name__}", pb_utils.TritonError.INTERNAL)
    data = np.array([[o.to_json().encode("utf-8")] for o in outcomes], dtype=np.object_)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("WINDOW_RESULT", data)])


def _warm_up_response(count):
    data = np.array([[b'{"segments": []}']] * count, dtype=np.object_)
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("WINDOW_RESULT", data)])


def _error(message, code):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def _cuda_visible():
    try:
        import ctranslate2
        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime means no GPU
        return False
