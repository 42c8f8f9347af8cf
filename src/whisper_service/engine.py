"""The batched Whisper engine: many windows from many requests in one encode and one generate.

It wires the two halves together: `decoder.WhisperDecoder` (the model: encode, languages,
prompts, generation with fallback, continuation, word alignment) and `scheduler.Scheduler`
(which windows are decoded together, in which rounds, on which worker). The batch layout
(`settings.batch_layout`, see decoding.BatchLayout) tells both how a batch runs.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from whisper_service.decoder import WhisperDecoder
from whisper_service.decoding import BatchLayout
from whisper_service.options import DecodeOptions
from whisper_service.scheduler import Scheduler, WindowOutcome
from whisper_service.settings import ModelSettings


class WhisperEngine:
    def __init__(self, settings: ModelSettings, device_index: int = 0,
                 layout: Optional[BatchLayout] = None, pack_windows: Optional[bool] = None):
        self.settings = settings
        self.layout = layout or BatchLayout(settings.batch_layout)
        self.decoder = WhisperDecoder(settings, device_index, self.layout)
        self.scheduler = Scheduler(
            self.decoder, self.layout, workers=settings.cpu_workers,
            pack_windows=settings.pack_windows if pack_windows is None else pack_windows)

    @property
    def n_mels(self) -> int:
        return self.decoder.n_mels

    @property
    def multilingual(self) -> bool:
        return self.decoder.multilingual

    def transcribe_windows(self, features: np.ndarray, num_frames: Sequence[int],
                           options: Sequence[DecodeOptions], workers: Optional[int] = None
                           ) -> List[WindowOutcome]:
        """One outcome per window: its WindowResult in window time, or the exception it raised."""
        return self.scheduler.transcribe_windows(features, num_frames, options, workers)

    def warm_up(self, windows: int) -> None:
        self.decoder.warm_up(windows)

    def release(self) -> None:
        """Free the model's memory now (host and GPU), not when the GC gets to it."""
        self.scheduler.close()
        self.decoder.release()
