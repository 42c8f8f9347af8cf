"""The served pipeline without Triton: the front's upload loop calling a WhisperEngine in this
process, with the same JSON round trip as BLS. For model-level tests and accuracy experiments;
serving itself is tested against a real server."""

from __future__ import annotations

import asyncio
from typing import List, Optional

import numpy as np

from whisper_service import settings as model_settings
from whisper_service.engine import WhisperEngine
from whisper_service.options import DecodeOptions, Limits
from whisper_service.pipeline import Pipeline
from whisper_service.upload import transcribe
from whisper_service.window_result import WindowResult


class LocalStack:
    def __init__(self, model: Optional[str] = None, limits: Limits = Limits()):
        params = {"model": model} if model else {}
        self.settings = model_settings.resolve(params, gpu_available=False)
        self.engine = WhisperEngine(self.settings)
        self.pipeline = Pipeline(limits, self.engine.n_mels)
        self.engine_calls = 0

    async def _call(self, indices: List[int], features: np.ndarray, frames: List[int],
                    options: DecodeOptions) -> List[dict]:
        self.engine_calls += 1
        wire = DecodeOptions.from_json(options.to_json())
        outcomes = await asyncio.to_thread(self.engine.transcribe_windows, features, frames,
                                           [wire] * len(indices))
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        # The same JSON round trip as BLS.
        return [WindowResult.from_json(o.to_json()) for o in outcomes]

    def transcribe(self, data: bytes, options: DecodeOptions = DecodeOptions()):
        self.last_job = job = self.pipeline.prepare(data, options)
        return asyncio.run(transcribe(self.pipeline, job, self._call))

    def close(self) -> None:
        self.engine.release()
