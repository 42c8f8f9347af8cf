"""What the front model does for one uploaded file, without Triton in the way.

sections(): decode, validate, (VAD), cut into windows, drop silent ones, a section of up to
about ten minutes at a time (one section for shorter uploads); the samples' memory is claimed
from the server's decoded-audio budget (audio_budget) and given back when the upload is done.
next_section() decodes the next section in a worker thread, so that an upload waiting for the
budget, or decoding long audio, holds up no other upload. prepare(): the whole upload as one
job (tests and in-process tools).
chunks(): the windows still to transcribe, in engine-sized groups, with their features.
finish(): stitch the engine's window results into one Transcription.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from whisper_triton.result import Transcription

from whisper_service.audio import SAMPLE_RATE, decode_blocks, decode_samples
from whisper_service.audio_budget import AudioBudget
from whisper_service.errors import InvalidAudioError
from whisper_service.features import WindowFeatures
from whisper_service.memory import give_back_freed_memory
from whisper_service.options import DecodeOptions, Limits
from whisper_service.stitch import stitch
from whisper_service.text_weight import text_weight
from whisper_service.window_result import WindowResult
from whisper_service.windows import (EVIDENCE_VAD, Window, halves, quietest_cut,
                                     region_windows, speech_regions, speech_seconds,
                                     speech_spans, speech_windows, tail,
                                     VAD_WHOLE_SECONDS)

log = logging.getLogger(__name__)

# A tail shorter than this is not worth a window of its own.
MIN_TAIL_SECONDS = 1.0
MAX_TAIL_ROUNDS = 3
END_MARGIN_SECONDS = 0.5
# Evidence of speech (VAD seconds) that makes the rest of a window worth decoding again after
# Whisper said it was done; and that makes an empty window a loss worth counting.
MIN_LEFTOVER_SPEECH_SECONDS = 1.0
MIN_AUDIO_SECONDS = 0.1
# A window with this much speech (VAD seconds) whose text weighs less than this per second of
# speech is decoded again in halves (text_weight: about 12 per second in read English, 13 in
# Mandarin). Halves win if they say this much more.
MIN_SPARSE_SPEECH_SECONDS = 8.0
MIN_TEXT_PER_SPEECH_SECOND = 3.0
MIN_SPLIT_SECONDS = 3.0
HALVES_BETTER = 1.3
MAX_SPLIT_DEPTH = 2


@dataclass
class Job:
    options: DecodeOptions
    duration: float
    windows: List[Window]
    to_send: List[int]
    """Indices of the windows that may hold speech."""
    speech_seconds: Optional[float] = None
    """Seconds left after VAD, when VAD was on."""
    results: List[Optional[WindowResult]] = field(default_factory=list)
    rounds: Dict[int, int] = field(default_factory=dict)
    """How many times a window's tail has been decoded again (its ancestry depth)."""
    evidence: List[Tuple[int, int]] = field(default_factory=list)
    """Sample ranges of the upload where the VAD hears speech."""
    parents: Dict[int, int] = field(default_factory=dict)
    """Tail window -> the window whose unfinished text it decodes again."""
    detected: Dict[int, Dict[str, float]] = field(default_factory=dict)
    """Window -> the most probable languages, as detected for it."""
    halves: Dict[int, Tuple[int, int]] = field(default_factory=dict)
    """Window -> its two halves, while both are being decoded (see split_sparse)."""
    windows_without_text: int = 0
    """Windows where the VAD heard speech but no text came back (see check_coverage)."""

    def settle(self, index: int, result: WindowResult) -> None:
        """Store the engine's result for a window. A tail that found nothing gives its parent
        back the unfinished text it was meant to replace: a retry never loses speech."""
        self.results[index] = result
        if len(result.language_probs) > 1:
            # Detected, not given: what the upload's language is voted from, also after the
            # window is decoded again in another language.
            self.detected[index] = result.language_probs
        parent = self.parents.get(index)
        if parent is None or self.results[parent] is None:
            return
        kept = self.results[parent].segments
        if result.segments:
            kept[:] = [s for s in kept if not s.unfinished]
        else:
            for segment in kept:
                segment.unfinished = False

    @property
    def vad_removed_seconds(self) -> float:
        return 0.0 if self.speech_seconds is None else max(0.0, self.duration - self.speech_seconds)


# Uploads of SECTION_SECONDS or more are decoded and transcribed a section at a time
# (Pipeline.sections): about SECTION_SECONDS each, cut at a pause of at least
# MIN_SECTION_PAUSE_SECONDS (else the quietest point) in the last SECTION_SLACK_SECONDS.
# Ten minutes of float32 samples are 38 MB. Uploads up to ten minutes are untouched: one
# job, read by the VAD in one pass (windows.VAD_WHOLE_SECONDS).
SECTION_SECONDS = 600.0
SECTION_SLACK_SECONDS = 60.0
MIN_SECTION_PAUSE_SECONDS = 0.5

# Uploads one front process prepares at once (decoding, VAD, cutting) in its worker threads.
PREPARE_THREADS = 8


@dataclass
class Section:
    """One section of an upload (Pipeline.sections): its job, and where it starts."""
    offset: float
    job: Job


def section_cut(audio: np.ndarray, lo: int) -> int:
    """Where a section ends: in the middle of the longest pause the VAD finds in audio[lo:]
    (its edges count), or at the quietest point there when it hears no pause."""
    spans = speech_spans(audio[lo:], EVIDENCE_VAD)
    edges = [0] + [x for span in spans for x in span] + [audio.size - lo]
    gaps = [(edges[i + 1] - edges[i], edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
    length, start, end = max(gaps)
    if length >= MIN_SECTION_PAUSE_SECONDS * SAMPLE_RATE:
        return lo + (start + end) // 2
    return quietest_cut(audio, lo, audio.size)


class Pipeline:
    section_seconds = SECTION_SECONDS
    section_slack_seconds = SECTION_SLACK_SECONDS

    def __init__(self, limits: Limits, n_mels: int, budget: Optional[AudioBudget] = None):
        self.limits = limits
        self.features = WindowFeatures(n_mels)
        self.budget = budget
        self._threads: Optional[ThreadPoolExecutor] = None

    @classmethod
    def for_server(cls, limits: Limits, n_mels: int) -> "Pipeline":
        """The pipeline of a front process: it shares the server's decoded-audio budget
        (WHISPER_AUDIO_BUDGET_MB, else a share of the memory the server may use)."""
        budget = AudioBudget.for_server(os.environ)
        log.info("decoded-audio budget: %d MB for all uploads in flight",
                 budget.total_bytes >> 20)
        return cls(limits, n_mels, budget)

    async def next_section(self, sections: Iterator[Section]) -> Optional[Section]:
        """The next section of `sections` (see sections()), decoded in a worker thread."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="prepare")
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, next, sections, None)

    def prepare(self, data: bytes, options: DecodeOptions) -> Job:
        """The whole upload as one job, however long (sections() bounds the memory)."""
        self._check_size(data)
        claim = self.budget.claim() if self.budget is not None else None
        try:
            audio = decode_samples(data, self.limits.max_audio_seconds,
                                   claim.ensure if claim is not None else None)
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        if claim is not None:
            # Held while any window still refers to the samples.
            claim.release_with(audio if audio.base is None else audio.base)
        return self.job(audio, options)

    def sections(self, data: bytes, options: DecodeOptions) -> Iterator[Section]:
        """The upload as consecutive jobs, each decoded when the caller asks for it: a long
        upload never sits in memory whole (4 h of float32 samples are 922 MB).

        An upload shorter than SECTION_SECONDS is one job, the same one prepare() gives.
        Longer ones are decoded SECTION_SECONDS at a time; each section (what the last one left
        over, then a block) is cut at a pause in its last SECTION_SLACK_SECONDS and transcribed
        as an upload of its own (its own VAD, windows and, when not given, language). The caller lets go of each job before asking
        for the next; the budget claim is held until the last section is done.
        """
        self._check_size(data)
        claim = self.budget.claim() if self.budget is not None else None
        block = int(self.section_seconds * SAMPLE_RATE)
        slack = int(self.section_slack_seconds * SAMPLE_RATE)
        carry_bytes = 0

        def ensure(nbytes: int) -> None:
            if claim is not None:
                claim.ensure(nbytes + carry_bytes)

        blocks = decode_blocks(data, self.limits.max_audio_seconds, block, ensure)
        offset = 0
        try:
            audio = next(blocks)
            carry_size = 0
            while True:
                if audio.size < block + carry_size:  # the last section
                    job = self.job(audio, options, first=not offset, section=bool(offset))
                    del audio
                    give_back_freed_memory()
                    yield Section(offset / SAMPLE_RATE, job)
                    return
                # The carry is copied out of a section that is still alive.
                carry_bytes = 4 * slack
                cut = section_cut(audio, audio.size - slack)
                carry = audio[cut:].copy()
                job = self.job(audio[:cut], options, first=not offset, section=True)
                del audio
                # The VAD's scratch memory, before the section is transcribed for minutes.
                give_back_freed_memory()
                yield Section(offset / SAMPLE_RATE, job)
                del job
                offset += cut
                carry_size = carry.size
                try:
                    # The next section: the carry, then a block's worth of new samples.
                    audio = blocks.send(carry)
                except StopIteration:  # nothing after the cut
                    return
                del carry
        finally:
            blocks.close()
            if claim is not None:
                claim.release()

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.limits.max_audio_bytes:
            raise InvalidAudioError(
                f"AUDIO has {len(data)} bytes; the limit is {self.limits.max_audio_bytes}. "
                "Send a compressed format (FLAC, MP3, OGG) or split the file.",
                "audio_too_large",
            )

    def job(self, audio: np.ndarray, options: DecodeOptions, first: bool = True,
            section: bool = False) -> Job:
        """Decoded samples as a job: VAD, windows, silent ones left out. `first`: the samples
        start the upload (a later section may be as short as it likes). `section`: a section
        of a long upload, whose VAD reads in pieces, as it always read hours (one pass over
        ten minutes held about 100 MB more while it ran, in 10000-chunk runs)."""
        vad_whole = 0.0 if section else VAD_WHOLE_SECONDS
        duration = audio.size / SAMPLE_RATE
        if first and duration < MIN_AUDIO_SECONDS:
            raise InvalidAudioError(
                f"AUDIO is too short: {duration:.3f} s of samples; send at least "
                f"{MIN_AUDIO_SECONDS} s of audio.", "audio_too_short")
        speech_seconds = None
        if options.vad_filter:
            spans = speech_spans(audio, whole_seconds=vad_whole)
            speech_seconds = sum(end - start for start, end in spans) / SAMPLE_RATE
            evidence = spans
            windows = speech_windows(audio, spans)
        else:
            # Windows cover where the VAD hears speech, with room around it; long pauses of
            # noise or silence are never sent (Whisper invents text there).
            evidence = speech_spans(audio, EVIDENCE_VAD, whole_seconds=vad_whole)
            windows = region_windows(audio, speech_regions(audio, evidence))
        to_send = [i for i, w in enumerate(windows) if not w.is_silent()]
        if section and sum(w.audio.size for w in windows) < audio.size // 2:
            # A section that is mostly pauses: its windows keep copies of their samples, so
            # that the section's (38 MB per 600 s) are freed while they are transcribed.
            windows = [w.detached() for w in windows]
        return Job(options, duration, windows, to_send, speech_seconds,
                   results=[None] * len(windows), evidence=evidence)

    def chunks(self, job: Job, size: int, indices: Optional[Sequence[int]] = None
               ) -> Iterator[Tuple[List[int], np.ndarray, List[int]]]:
        """(window indices, features [k, n_mels, 3000], content frames) for k <= size."""
        todo = list(job.to_send if indices is None else indices)
        for first in range(0, len(todo), size):
            indices = todo[first:first + size]
            features, frames = self.features([job.windows[i] for i in indices])
            yield indices, features, frames

    def retry_tails(self, job: Job, indices: List[int]) -> List[int]:
        """New windows for what the engine left undecoded at the end of these windows.

        Windows are decoded independently, so when Whisper stops early (an unfinished last
        segment, or an end-of-text before speech that is still there), the rest of the window
        is decoded again on its own. An unfinished segment stays in the result, marked, until
        its tail is back (see Job.settle). A retry always starts at least MIN_TAIL_SECONDS into
        the window: never the identical window again. Returns the new windows' indices.
        """
        added = []
        for index in indices:
            result, window = job.results[index], job.windows[index]
            if not result or job.rounds.get(index, 0) >= MAX_TAIL_ROUNDS:
                _finalise(result)
                continue
            segments = result.segments
            unfinished = [s for s in segments if s.unfinished]
            complete_end = max([s.end for s in segments if not s.unfinished], default=0.0)
            covered = window.duration if result.covered is None else result.covered
            if unfinished or covered < window.duration - MIN_TAIL_SECONDS:
                # Decode again from where the complete text stops (never before the end of a
                # complete segment: what is complete is never dropped).
                start = max(covered, complete_end)
                needed = 0.3 if unfinished else MIN_LEFTOVER_SPEECH_SECONDS
            else:
                # Whisper said "done" early: only worth a retry if the VAD hears plenty of
                # speech after the last segment (timestamps are coarse near the end).
                start, needed = complete_end + END_MARGIN_SECONDS, MIN_LEFTOVER_SPEECH_SECONDS
            if start < MIN_TAIL_SECONDS or window.duration - start < MIN_TAIL_SECONDS:
                _finalise(result)
                continue
            rest = tail(window, start)
            if rest.is_silent() or speech_seconds(rest, job.evidence) < needed:
                _finalise(result)
                continue
            job.windows.append(rest)
            job.results.append(None)
            new = len(job.windows) - 1
            job.rounds[new] = job.rounds.get(index, 0) + 1
            added.append(new)
            # What is complete stays; the unfinished text waits for the tail (Job.settle).
            result.segments = [s for s in segments if s.unfinished or s.end <= start + 0.01]
            if any(s.unfinished for s in result.segments):
                job.parents[new] = index
        return added

    def split_sparse(self, job: Job, indices: Sequence[int]) -> List[int]:
        """Windows whose text is far too short for the speech the VAD hears in them are cut
        in two, each half to be decoded on its own; returns the halves' indices.

        Measured: a window of 24 s of English and 3.5 s of German was detected as German and
        came back as the German sentence alone; halves detect and decode each language.
        """
        added = []
        for index in indices:
            result, window = job.results[index], job.windows[index]
            if not result or window.duration < 2 * MIN_SPLIT_SECONDS:
                continue
            heard = speech_seconds(window, job.evidence)
            if heard < MIN_SPARSE_SPEECH_SECONDS:
                continue
            if text_weight(result.text) >= MIN_TEXT_PER_SPEECH_SECOND * heard:
                continue
            for half in halves(window):
                job.windows.append(half)
                job.results.append(None)
                added.append(len(job.windows) - 1)
            job.halves[index] = (added[-2], added[-1])
        return added

    def keep_better_halves(self, job: Job) -> List[int]:
        """For each window cut in two: keep the halves if they say clearly more, else the
        window. Returns the windows that stay (the halves kept, the windows kept)."""
        live = []
        for index, pair in job.halves.items():
            whole = text_weight(job.results[index].text)
            parts = sum(text_weight(job.results[i].text) for i in pair if job.results[i])
            if parts > HALVES_BETTER * whole:
                log.info("window at %.1f s said %d, its halves %d: keeping the halves",
                         job.windows[index].start, whole, parts)
                job.results[index] = None
                live.extend(pair)
            else:
                for i in pair:
                    job.results[i] = None
                live.append(index)
        job.halves.clear()
        return live

    def check_coverage(self, job: Job) -> int:
        """Windows where the VAD hears speech but no text came back: logged, and counted
        for the caller's metric (silence where there was speech is data loss)."""
        lost = 0
        for index, (window, result) in enumerate(zip(job.windows, job.results)):
            if result is None or result.segments or job.rounds.get(index):
                continue
            heard = speech_seconds(window, job.evidence)
            if heard >= MIN_LEFTOVER_SPEECH_SECONDS:
                lost += 1
                log.warning("window at %.1f s (%.1f s, %.1f s of speech by VAD) gave no text "
                            "(no_speech_prob %.2f, avg_logprob %.2f)", window.start,
                            window.duration, heard, result.no_speech_prob, result.avg_logprob)
        job.windows_without_text = lost
        return lost

    def finish(self, job: Job) -> Transcription:
        for result in job.results:
            _finalise(result)
        return stitch(job.windows, job.results, job.options, job.duration, job.speech_seconds)


def _finalise(result: Optional[WindowResult]) -> None:
    """Unfinished text that no retry replaced is kept as a segment of its own."""
    for segment in result.segments if result else []:
        segment.unfinished = False


def warm_up(pipeline: Pipeline) -> None:
    """Run the decode and feature path once on a synthetic WAV so the first request is fast.

    The VAD is left out: its ONNX session costs each front process about 15 MB (ONNX Runtime
    and the session), and is loaded on the first upload instead (in tens of milliseconds). The
    WAV is written with the standard library: soundfile would cost each front about 2 MB.
    """
    import io
    import wave

    tone = 0.1 * np.sin(2 * np.pi * 220 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes((tone * 32767).astype("<i2").tobytes())
    audio = decode_samples(buffer.getvalue(), pipeline.limits.max_audio_seconds)
    pipeline.features([Window(audio=audio, spans=[(0, 0, audio.size)])])
