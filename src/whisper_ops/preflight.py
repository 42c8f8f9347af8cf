"""Before tritonserver starts: are the weights of the model the engine will load really there?

Without this check, a model that cannot be loaded (a size name with no network and no cached
weights, a mount that is missing) ends in a Hugging Face traceback deep in Triton's log and
"failed to load all models". Here the launcher, and the container entrypoint when it starts
tritonserver directly, resolve the model exactly as model `whisper_engine` will
(whisper_service.settings.resolve, with the engine's config.pbtxt parameters and the
environment), fetch the weights of a size name into the download root (so a first download of
large-v3 shows in the launcher's output, not as a silent model load), and otherwise stop with one
sentence that says what to set.

    python -m whisper_ops.preflight [--model-repository DIR]   # exit 0, or 2 and one sentence
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping, Optional, TextIO

from whisper_service import gpu
from whisper_service import settings as model_settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPOSITORY = ROOT / "model_repository"
ENGINE = "whisper_engine"
EXIT_STATUS = 2

_REMEDIES = ("mount a CTranslate2 Whisper model directory and set WHISPER_MODEL to its path, "
             "set WHISPER_DOWNLOAD_ROOT to a cache that already holds {model} (or run once with "
             "network access so that it downloads there), or set WHISPER_MODEL=base or "
             "WHISPER_MODEL=tiny.en to serve a model bundled with the installation")


class PreflightError(Exception):
    """The server cannot load its model; str() is one sentence that says what to do."""


def gpu_visible() -> bool:
    """What model.py's fallback sees when Triton gives the engine no GPU instance (asked
    here, whatever WHISPER_GPU_VISIBLE says)."""
    return gpu.gpu_visible(env={})


def engine_parameters(model_repository: Path) -> dict:
    return model_settings.read_config_parameters(Path(model_repository) / ENGINE / "config.pbtxt")


def model_setting(params: Mapping[str, str], env: Mapping[str, str], model: str, device: str) -> str:
    """Where the model name came from, in the words of the settings an operator can change.

    The order is settings.resolve's: WHISPER_MODEL, then the old service's MODEL_SIZE, then the
    engine's config parameter, then the default for the device.
    """
    for key in ("WHISPER_MODEL", "MODEL_SIZE"):
        if env.get(key):
            return f"{key}={model}"
    if params.get("model", "auto") != "auto":
        return f"the model parameter of {ENGINE}/config.pbtxt ({model})"
    return f"the default model on {device} ({model})"


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or model in (".", "..")


def _known_name(model: str) -> bool:
    """A size name faster-whisper can download, or a Hugging Face id such as org/name."""
    from faster_whisper.utils import available_models

    return model in available_models() or model.count("/") == 1


def _why_not_downloaded(exc: BaseException, env: Mapping[str, str]) -> str:
    if env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set, so nothing is downloaded"
    first_line = " ".join(str(exc).split("\n")[0].split())[:160]
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def _check_directory(path: Path, setting: str) -> str:
    if not path.is_dir():
        raise PreflightError(
            f"{setting} names a directory that does not exist here ({path}); to serve it, "
            + _REMEDIES.format(model="the model"))
    if not (path / "model.bin").is_file():
        raise PreflightError(
            f"{setting} names {path}, which holds no model.bin, so it is not a CTranslate2 "
            "Whisper model (convert one with ct2-transformers-converter or use a "
            "faster-whisper model directory); to serve a model, "
            + _REMEDIES.format(model="the model"))
    return str(path)


def check_model(model_repository: Path = DEFAULT_REPOSITORY, env: Optional[Mapping[str, str]] = None,
                gpu_available: Optional[bool] = None, out: TextIO = sys.stderr) -> str:
    """Directory of the weights the engine will load (downloading a size name's weights into
    the download root first); PreflightError with one sentence when there are none."""
    env = os.environ if env is None else env
    params = engine_parameters(model_repository)
    if gpu_available is None:
        gpu_available = gpu_visible()
    try:
        chosen = model_settings.resolve(params, gpu_available=gpu_available, env=env)
    except ValueError as exc:
        raise PreflightError(f"{exc} (set WHISPER_DEVICE to auto, cpu or cuda to match this "
                             "machine)") from None
    setting = model_setting(params, env, chosen.model, chosen.device)

    if os.path.isdir(chosen.model_path) or _looks_like_path(chosen.model_path):
        path = _check_directory(Path(chosen.model_path), setting)
        print(f"preflight: {chosen.reason}", file=out, flush=True)
        return path
    if not _known_name(chosen.model_path):
        raise PreflightError(
            f"{setting} is neither a directory here nor a Whisper model name that faster-whisper "
            "can download (tiny, base, small, medium, large-v3, turbo, ... or a Hugging Face id "
            "such as Systran/faster-whisper-large-v3); " + _REMEDIES.format(model="the model"))

    where = chosen.download_root or "the Hugging Face cache"
    print(f"preflight: {chosen.reason}; looking for the weights of {chosen.model_path} in {where} "
          "(downloading them if they are missing: large-v3 is about 3 GB)", file=out, flush=True)
    from faster_whisper.utils import download_model

    try:
        path = Path(download_model(chosen.model_path, cache_dir=chosen.download_root))
    except Exception as exc:  # noqa: BLE001 - any failure here means: no weights
        raise PreflightError(
            f"{setting} names a Whisper model whose weights are not in {where} and could not be "
            f"downloaded ({_why_not_downloaded(exc, env)}); to provide them, "
            + _REMEDIES.format(model=chosen.model_path)) from None
    if not (path / "model.bin").is_file():
        raise PreflightError(
            f"{setting} names a Whisper model whose download in {path} has no model.bin; "
            "remove that folder to download it again, or "
            + _REMEDIES.format(model=chosen.model_path))
    print(f"preflight: weights of {chosen.model_path} are in {path}", file=out, flush=True)
    return str(path)


def run(model_repository: Path = DEFAULT_REPOSITORY) -> int:
    """0 when the model can be loaded; else the sentence on stderr and EXIT_STATUS."""
    try:
        check_model(model_repository)
    except PreflightError as exc:
        print(f"cannot start the whisper server: {exc}.", file=sys.stderr, flush=True)
        return EXIT_STATUS
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisper_ops.preflight",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-repository",
                        default=os.environ.get("TRITON_MODEL_REPOSITORY", str(DEFAULT_REPOSITORY)))
    args = parser.parse_args(argv)
    return run(Path(args.model_repository))


if __name__ == "__main__":
    sys.exit(main())
