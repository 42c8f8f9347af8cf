"""The batched Whisper engine: many windows from many requests in one encode and one generate.

It wires the two halves together: `decoder.WhisperDecoder` (the model: encode, languages,
prompts, generation with fallback, continuation, word alignment) and `scheduler.Scheduler`
(which windows are decoded together, in which rounds, on which worker). The batch layout
(`settings.batch_layout`, see decoding.BatchLayout) tells both how a batch runs.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from whisper_service.decoder import WhisperDecoder
from whisper_service.decoding import BatchLayout
from whisper_service.options import DecodeOptions
from whisper_service.scheduler import DeferredWindow, Scheduler, WindowOutcome
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

    def transcribe_windows_deferring_fallback(
            self, features: np.ndarray, num_frames: Sequence[int],
            options: Sequence[DecodeOptions], workers: Optional[int] = None
    ) -> Tuple[List[WindowOutcome], List[DeferredWindow]]:
        """As transcribe_windows, but windows that need temperature fallback come back as
        DeferredWindows, to be finished (`finish`) after the others are answered."""
        return self.scheduler.transcribe_windows_deferring_fallback(features, num_frames,
                                                                    options, workers)

    def finish(self, deferred: DeferredWindow) -> WindowOutcome:
        """A deferred window's outcome, with its temperature fallback."""
        return self.scheduler.finish(deferred)

    def warm_up(self, windows: int) -> None:
        self.decoder.warm_up(windows)

    def release(self) -> None:
        """Free the model's memory now (host and GPU), not when the GC gets to it."""
        self.scheduler.close()
        self.decoder.release()
