"""faster-whisper's files that a front process needs, without importing the faster_whisper package.

Importing any `faster_whisper.*` module first runs the package's `__init__`, which imports
CTranslate2, tokenizers and huggingface_hub: about 8 MB of private memory in each of the 22
front processes, which never run a model. A front needs only two files of that package: the
log-mel feature extractor (a numpy-only module, loaded here from its file under a private name)
and the Silero VAD's ONNX model (an asset, found by path).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

PACKAGE = "faster_whisper"


def package_dir() -> Path:
    """Where faster_whisper is installed; finding it does not import it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("faster-whisper is not installed")
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=None)
def feature_extractor_class() -> type:
    """faster_whisper.feature_extractor.FeatureExtractor (the same code, so the same features
    as in-process faster-whisper), loaded without the package when it is not imported yet."""
    imported = sys.modules.get(f"{PACKAGE}.feature_extractor")
    if imported is not None:
        return imported.FeatureExtractor
    spec = importlib.util.spec_from_file_location(
        f"whisper_service._{PACKAGE}_feature_extractor", package_dir() / "feature_extractor.py")
    if spec is None or spec.loader is None:
        raise ImportError("faster_whisper/feature_extractor.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FeatureExtractor


def silero_vad_model() -> Path:
    """The Silero VAD ONNX model that faster-whisper ships (and its own VAD filter uses)."""
    path = package_dir() / "assets" / "silero_vad_v6.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall faster-whisper")
    return path
