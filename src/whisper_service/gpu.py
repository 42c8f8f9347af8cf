"""Whether CUDA sees a GPU here, asked once per server rather than in every stub process."""

from __future__ import annotations

import os
from typing import Mapping, Optional

# Set by the launcher for the server's processes: "1" or "0".
GPU_VISIBLE_ENV = "WHISPER_GPU_VISIBLE"


def gpu_visible(env: Optional[Mapping[str, str]] = None) -> bool:
    """What CTranslate2 sees, as the engine's device choice does.

    Asking imports CTranslate2 (about 8 MB of private memory in a process that never runs a
    model), so the launcher asks once and tells the fronts in WHISPER_GPU_VISIBLE; a process
    started without it asks itself.
    """
    told = (os.environ if env is None else env).get(GPU_VISIBLE_ENV, "")
    if told in ("0", "1"):
        return told == "1"
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except Exception:  # noqa: BLE001 - no CUDA runtime at all means no GPU
        return False
