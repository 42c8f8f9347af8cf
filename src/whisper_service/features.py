"""Log-mel features of windows, the input the engine encodes."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

from whisper_service.windows import FRAME, WINDOW_SAMPLES, Window

FRAMES_PER_WINDOW = 3000
HOP = 160


class WindowFeatures:
    def __init__(self, n_mels: int):
        self.extractor = FeatureExtractor(feature_size=n_mels)
        self.n_mels = n_mels

    def __call__(self, windows: Sequence[Window]) -> Tuple[np.ndarray, List[int]]:
        """[len(windows), n_mels, 3000] float32 features and each window's content frames."""
        batch = np.zeros((len(windows), self.n_mels, FRAMES_PER_WINDOW), dtype=np.float32)
        num_frames = []
        for i, window in enumerate(windows):
            # Pad to exactly 30 s the way faster-whisper pads its last window, so features
            # (and so the text) match what it would compute for the same samples.
            padded = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
            padded[: window.audio.size] = window.audio
            mel = self.extractor(padded, padding=HOP)
            batch[i] = mel[:, :FRAMES_PER_WINDOW]
            num_frames.append(max(1, -(-window.audio.size // HOP)))
        return batch, num_frames


__all__ = ["WindowFeatures", "FRAME"]
