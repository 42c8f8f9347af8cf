"""The front's loop for one upload: send its windows to the engine, settle, stitch.

Everything here is transport-free: `call_engine` is how windows reach the engine (BLS in
`model_repository/whisper/1/model.py`, a local engine in tests), so the loop is tested
without a server.

Rounds, in order:
1. every window that may hold speech, in engine-sized calls (a few in flight at once);
2. language: when the language was detected, windows that disagree with the upload's language
   without being confident about their own are decoded again in the upload's language;
3. sparse windows: a window whose text is far too short for the speech the VAD hears in it
   (Whisper skipped a language, or a sentence) is decoded again in halves, up to twice;
   whichever says more stays;
4. tails: what Whisper left undecoded at the end of a window is decoded again on its own
   (see `Pipeline.retry_tails`), then its language checked as in 2, up to a few rounds; a
   retry that finds nothing gives the unfinished text back, so speech is never lost to it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Awaitable, Callable, List, Optional, Sequence, Union

import numpy as np

from whisper_triton.result import Transcription

from whisper_service.languages import disagreeing_windows, upload_language
from whisper_service.options import DecodeOptions
from whisper_service.pipeline import MAX_SPLIT_DEPTH, Job, Pipeline
from whisper_service.window_result import WindowResult

log = logging.getLogger(__name__)

# (window indices, features [k, n_mels, 3000], content frames, options) -> one result each.
EngineCall = Callable[[List[int], np.ndarray, List[int], DecodeOptions],
                      Awaitable[List[WindowResult]]]


class Cancelled(Exception):
    """The caller went away: stop sending windows."""


async def transcribe(
    pipeline: Pipeline,
    job: Job,
    call_engine: EngineCall,
    *,
    windows_per_call: Union[int, Callable[[], int]] = 8,
    calls_in_flight: int = 2,
    cancelled: Callable[[], bool] = lambda: False,
    before_first_call: Optional[Callable[[], Awaitable[None]]] = None,
) -> Transcription:
    first = [True]
    # A callable is asked before every call: the share of the engine this upload may take now.
    per_call = windows_per_call if callable(windows_per_call) else lambda: windows_per_call

    async def send(indices: Sequence[int], options: DecodeOptions) -> None:
        pending = []
        todo = list(indices)
        while todo:
            size = max(1, per_call())
            chunk, features, frames = next(pipeline.chunks(job, size, todo[:size]))
            todo = todo[size:]
            if cancelled():
                raise Cancelled()
            if first[0]:
                first[0] = False
                if before_first_call is not None:
                    await before_first_call()
            pending.append(_store(job, chunk, call_engine(chunk, features, frames, options)))
            if len(pending) >= calls_in_flight:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)

    async def reconcile(indices: Sequence[int]) -> None:
        if job.options.language:
            return
        again = disagreeing_windows(job.results, indices, language)
        if again:
            log.info("decoding %d window(s) again in the upload's language %r", len(again),
                     language)
            await send(again, replace(job.options, language=language))

    await send(job.to_send, job.options)
    language = job.options.language or upload_language(job.windows, job.detected, job.to_send,
                                                       job.evidence)
    await reconcile(job.to_send)
    todo = candidates = list(job.to_send)
    for _ in range(MAX_SPLIT_DEPTH):
        halves = pipeline.split_sparse(job, candidates)
        if not halves:
            break
        await send(halves, job.options)
        candidates = [i for i in pipeline.keep_better_halves(job) if i not in todo]
        todo = [i for i in todo if job.results[i] is not None] + candidates
        if not job.options.language:
            # The halves' languages count instead of the window's.
            language = upload_language(job.windows, job.detected, todo, job.evidence)
        await reconcile(candidates)
    while todo:
        todo = pipeline.retry_tails(job, todo)
        await send(todo, job.options)
        await reconcile(todo)
    pipeline.check_coverage(job)
    return pipeline.finish(job)


async def _store(job: Job, indices: List[int], call: Awaitable[List[WindowResult]]) -> None:
    results = await call
    for index, result in zip(indices, results):
        job.settle(index, result)
