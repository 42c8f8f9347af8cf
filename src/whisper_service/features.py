"""Log-mel features of windows, the input the engine encodes."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from whisper_service.faster_whisper_files import feature_extractor_class
from whisper_service.windows import FRAME, WINDOW_SAMPLES, Window

FRAMES_PER_WINDOW = 3000
HOP = 160
# Zeros kept after the audio: more than an STFT window (400) plus a hop, so that the last frames
# computed see only zeros.
MARGIN_SAMPLES = 800


class WindowFeatures:
    def __init__(self, n_mels: int):
        # faster-whisper's own extractor, loaded without its package (see faster_whisper_files).
        self.extractor = feature_extractor_class()(feature_size=n_mels)
        self.n_mels = n_mels

    def __call__(self, windows: Sequence[Window]) -> Tuple[np.ndarray, List[int]]:
        """[len(windows), n_mels, 3000] float32 features and each window's content frames."""
        batch = np.zeros((len(windows), self.n_mels, FRAMES_PER_WINDOW), dtype=np.float32)
        num_frames = []
        for i, window in enumerate(windows):
            batch[i] = self.window(window.audio)
            num_frames.append(max(1, -(-window.audio.size // HOP)))
        return batch, num_frames

    def window(self, audio: np.ndarray) -> np.ndarray:
        """[n_mels, 3000]: exactly what faster-whisper computes for audio zero-padded to 30 s.

        Frames of pure padding all come out equal (log of the floor, clamped 8 below the
        window's maximum, which the audio sets), so the spectrogram is computed over the audio
        and a margin only, and its last frame, one of pure padding, fills the rest: a 4 s clip
        costs a seventh of a 30 s spectrogram.
        """
        keep = min(WINDOW_SAMPLES, audio.size + MARGIN_SAMPLES)
        padded = np.zeros(keep, dtype=np.float32)
        padded[: audio.size] = audio
        mel = self.extractor(padded, padding=HOP)[:, :FRAMES_PER_WINDOW]
        if mel.shape[1] == FRAMES_PER_WINDOW:
            return mel
        out = np.empty((self.n_mels, FRAMES_PER_WINDOW), dtype=np.float32)
        out[:, : mel.shape[1]] = mel
        out[:, mel.shape[1]:] = mel[:, -1:]
        return out


__all__ = ["WindowFeatures", "FRAME"]
