"""Where the scheduler and the decoder meet: what a window to decode is, what a decoder does,
and how a batch is laid out on the hardware.

The scheduler (which windows go together, in which rounds, on which worker) is written
against `Decoder`; `decoder.WhisperDecoder` is the real one, and tests use a fake.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Dict, List, Optional, Protocol, Sequence

import numpy as np

from whisper_service.errors import InvalidInputError
from whisper_service.options import DecodeOptions
from whisper_service.window_result import WindowResult


class BatchLayout(str, enum.Enum):
    """How one batch of windows runs.

    PER_WINDOW (the CPU's): one window per encode and per word alignment, the windows shared
    among the CPU workers; a batched encode costs more per window on a CPU, where one
    window's activations stay in cache. BATCHED (the GPU's): one encode and one alignment
    for the whole batch, on one worker. Generation is batched in both.
    """
    PER_WINDOW = "per_window"
    BATCHED = "batched"


@dataclass
class DecodeWindow:
    """One window to decode: a lone clip's, or several short clips packed into one."""
    features: np.ndarray  # [n_mels, 3000]
    num_frames: int
    options: DecodeOptions
    clip_frames: Optional[List[int]] = None
    """Packed: each clip's content frames (see packing)."""


class Decoder(Protocol):
    multilingual: bool

    def refusal(self, options: DecodeOptions) -> Optional[InvalidInputError]:
        """Why this model cannot decode with these options, or None."""

    def decode(self, windows: Sequence[DecodeWindow], fallback: bool) -> List[WindowResult]:
        """Decode windows that share beam size and temperature in one batch, one result each
        in window time; with `fallback`, windows whose text looks wrong are decoded again at
        higher temperatures. May raise: the whole batch failed."""

    def encoded_frames(self, window: DecodeWindow) -> int:
        """Log-mel frames of this window the encoder reads (at most 3000: the whole window)."""

    def detect_languages(self, windows: Sequence[DecodeWindow]) -> List[Dict[str, float]]:
        """Each window's most probable languages and their probabilities, most probable
        first, from an encode of its speech only (not of 30 s). May raise."""
