"""Which windows are decoded together, in which rounds, on which worker.

Written against `decoding.Decoder`: it never touches the model, so it is tested in
milliseconds with a fake decoder. Per batch of windows from many uploads:

1. With packing on (where windows are encoded whole: a GPU, or encode_padding "full"), short
   windows with the same options and a known language are packed side by side into one 30 s
   window (see packing); copies of one recording are kept apart. A short window
   whose language is to be detected first has it detected on its speech alone (a fraction
   of a 30 s encode), then is packed with others of that language; a window whose language
   that leaves unsure is decoded alone and detects its language there.
2. On the PER_WINDOW layout the packed windows are shared among the CPU workers, heaviest
   first onto the least loaded; each worker settles what its windows give back on its own
   (no worker waits for another between rounds). BATCHED runs them all on one worker.
3. Windows that share beam size and temperature are decoded in one call; a failing call is
   retried window by window, so a failure belongs to the window that caused it.
4. A packed window whose text is improbable, or whose words run across clips, gives its clips
   back to be decoded alone (with temperature fallback), as does a clip whose text is too
   repetitive or too sparse for its length; a clip that came back empty is packed once more
   with the other such clips, then decoded alone.
5. With `defer_fallback`, a window decoded alone gets its first temperature only; those that
   need the fallback are handed back as `DeferredWindow`s, for the caller to finish (`finish`)
   after it has answered the rest: one window sampled at five temperatures held a whole batch
   of other uploads' windows for 20-40 s.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np

from whisper_service import packing, quality
from whisper_service.decoding import BatchLayout, Decoder, DecodeWindow
from whisper_service.options import DecodeOptions
from whisper_service.window_result import WindowResult

log = logging.getLogger(__name__)

WindowOutcome = Union[WindowResult, Exception]
PACKING_ROUNDS = 3  # pack; repack what came back empty; decode the rest alone
PER_WINDOW_CALL_WINDOWS = 2  # windows per decoder call on the PER_WINDOW layout (see __init__)
# A language detected on a short window's speech alone is trusted from this probability on;
# below it the window is decoded alone, detecting its language on the whole window as
# faster-whisper does. (On the evalset's 60 short clips, the ones below: English clips at
# 0.30-0.49, and one taken for Arabic at 0.48 that the padded window called English at 0.48.)
TRUSTED_LANGUAGE_PROBABILITY = 0.5
# A packed clip whose first segment starts later than this (clip time) lost its first words,
# most likely to the clip before it: "By Allah replied the fireman, I tell thee the truth"
# came back from a pack as "I tell thee the truth,". A clip's speech starts within a second
# of its window (the front's room); kept clips of the evalset started at most 0.74 s in.
LATE_FIRST_SEGMENT_SECONDS = 1.5
# A packed clip whose text ends more than this before the clip does most likely lost its last
# words: Whisper went on to the next clip, or ended the window (the front leaves at most a
# second of room after speech). Served, on the evalset, of clips followed by another: every
# one whose text ended 1.4 s or more before its end had lost words ("if called on to do so",
# "entire without spilling its contents"); of those ending 1.0-1.3 s before, about half ("folks
# are all" for "folks are all sleeping"). Last clips: 4 of the 10 did ("was last" for "was last
# taken"). The front decodes a tail again only where the VAD hears a second of speech in it.
LOST_TAIL_SECONDS = 1.0
T = TypeVar("T")


@dataclass
class DeferredWindow:
    """A window whose first attempt needs temperature fallback, to be finished later."""
    index: int  # in the batch
    window: DecodeWindow  # its own copy of the features: the batch may be gone by then
    first_attempt: WindowResult
    detected: Optional[Dict[str, float]]  # the language detected on its speech, if used


@dataclass
class Unit:
    """One window to decode and the batch windows it answers for (several when packed)."""
    window: DecodeWindow
    fallback: bool
    members: List[int]


class Scheduler:
    def __init__(self, decoder: Decoder, layout: BatchLayout = BatchLayout.PER_WINDOW,
                 workers: int = 1, pack_windows: bool = True):
        self.decoder = decoder
        self.layout = layout
        self.workers = max(1, workers) if layout is BatchLayout.PER_WINDOW else 1
        self.pack_windows = pack_windows
        # On the CPU, generation with beam 5 holds the encoder output and the attention
        # caches of every beam of every window in the call: 16 windows per worker took an
        # engine from 345 MB to 2 GB (base): each window holds about 37 MB per beam (6 layers
        # of cross-attention keys and values over 1500 frames, float32). A few windows per
        # call cost as much per window: in-process, 15 windows took 13.6-14.0 s at 4 per call
        # (+400 MB) and 13.9-14.3 s at 2 (+190-270 MB); served, 2 per call matched 4 in
        # throughput and 1 per call lost about 10% (docs/performance.md).
        self.windows_per_call = (PER_WINDOW_CALL_WINDOWS if layout is BatchLayout.PER_WINDOW
                                 else 1 << 30)
        self._pool = (ThreadPoolExecutor(self.workers, thread_name_prefix="decode-worker")
                      if self.workers > 1 else None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def transcribe_windows(self, features: np.ndarray, num_frames: Sequence[int],
                           options: Sequence[DecodeOptions], workers: Optional[int] = None
                           ) -> List[WindowOutcome]:
        """One outcome per window: its result in window time, or the exception it raised.
        `workers` (at most the scheduler's) shares the batch among fewer workers."""
        outcomes, _ = self.transcribe_windows_deferring_fallback(
            features, num_frames, options, workers, defer_fallback=False)
        return outcomes

    def transcribe_windows_deferring_fallback(
            self, features: np.ndarray, num_frames: Sequence[int],
            options: Sequence[DecodeOptions], workers: Optional[int] = None,
            defer_fallback: bool = True) -> Tuple[List[WindowOutcome], List[DeferredWindow]]:
        """As transcribe_windows, except that windows needing temperature fallback come back
        as DeferredWindows (their outcome here is only the first attempt): `finish` each."""
        workers = self.workers if workers is None else max(1, min(workers, self.workers))
        outcomes: List[Optional[WindowOutcome]] = [self.decoder.refusal(o) for o in options]
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        batch = _Batch(features, num_frames, list(options))
        detected = self._detect_languages_to_pack(batch, todo, workers)
        units = self._packed_units(batch, todo, workers)
        first_only: List[int] = []  # windows decoded alone without their fallback
        self._on_workers(
            lambda share: self._settle(share, batch, outcomes, defer_fallback, first_only),
            units, [self._cost(u) for u in units], workers)
        for i, languages in detected.items():
            _report_detected(outcomes[i], languages)
        deferred = [DeferredWindow(i, replace(batch.alone(i).window,
                                              features=np.array(features[i])),
                                   outcomes[i], detected.get(i))  # type: ignore[arg-type]
                    for i in sorted(first_only)
                    if isinstance(outcomes[i], WindowResult)
                    and _needs_fallback(outcomes[i], batch.options[i])]  # type: ignore[arg-type]
        return outcomes, deferred  # type: ignore[return-value]

    def finish(self, deferred: DeferredWindow) -> WindowOutcome:
        """A deferred window decoded again, with its temperature fallback."""
        outcome = self._decode_one(Unit(deferred.window, True, [deferred.index]), True)
        if deferred.detected:
            _report_detected(outcome, deferred.detected)
        return outcome

    def _cost(self, unit: Unit) -> float:
        """A window's encode, which grows about as the square of what the encoder reads (a
        sixth of the frames cost a tenth to a fifth), plus generation roughly in proportion
        to its speech."""
        encoded = self.decoder.encoded_frames(unit.window) / packing.FRAMES
        return encoded * encoded + unit.window.num_frames / packing.FRAMES

    def _on_workers(self, work: Callable[[List[T]], object], items: List[T],
                    costs: List[float], workers: int) -> None:
        """work(share) for shares of the items, balanced by cost, a share per worker."""
        shares = balanced(costs, min(workers, len(items)))
        if len(shares) <= 1 or self._pool is None:
            work(items)
            return
        jobs = [self._pool.submit(work, [items[i] for i in share]) for share in shares]
        for job in jobs:
            job.result()

    def _detect_languages_to_pack(self, batch: "_Batch", todo: List[int], workers: int
                                  ) -> Dict[int, Dict[str, float]]:
        """Detect the language of short windows that did not give one, so that they can be
        packed; returns the languages detected by window, whose options now carry the
        language where it was trusted.

        Without this a window of unknown language was never packed: at 20 concurrent on the
        evalset, language detected ran at 0.63 of the throughput of language given.
        """
        if not (self.pack_windows and self.decoder.multilingual):
            return {}
        short = [i for i in todo if batch.num_frames[i] <= packing.MAX_CLIP_FRAMES]
        unknown = [i for i in short if not batch.options[i].language]
        if not unknown or len(short) < 2:
            return {}  # nothing to pack it with
        found: Dict[int, Union[Dict[str, float], Exception]] = {}

        def detect(share: List[int]) -> None:
            try:
                languages = self.decoder.detect_languages([batch.alone(i).window for i in share])
                found.update(zip(share, languages))
            except Exception as exc:  # noqa: BLE001 - these windows detect it when decoded
                log.exception("language detection of %d windows failed", len(share))
                found.update((i, exc) for i in share)

        self._on_workers(detect, unknown, [batch.num_frames[i] for i in unknown], workers)
        detected: Dict[int, Dict[str, float]] = {}
        for i in unknown:
            languages = found.get(i)
            if not isinstance(languages, dict) or not languages:
                continue  # its detection failed: decoded alone, it detects the language there
            language, probability = next(iter(languages.items()))
            if probability >= TRUSTED_LANGUAGE_PROBABILITY:
                detected[i] = languages
                batch.options[i] = replace(batch.options[i], language=language)
        return detected

    def _settle(self, units: List[Unit], batch: "_Batch",
                outcomes: List[Optional[WindowOutcome]], defer_fallback: bool = False,
                first_only: Optional[List[int]] = None) -> None:
        """Decode units in this thread, and what they give back, until every clip has its
        outcome (written at the clip's own index: threads never share an index). With
        defer_fallback, windows decoded alone get their first temperature only, and are
        listed in first_only."""
        for packing_round in range(PACKING_ROUNDS):
            to_pack: List[int] = []
            alone: List[int] = []
            for unit, outcome in zip(units, self._decode(units, not defer_fallback)):
                if len(unit.members) == 1:
                    outcomes[unit.members[0]] = outcome
                    if defer_fallback and unit.fallback and first_only is not None:
                        first_only.append(unit.members[0])  # list.append: thread-safe
                    continue
                kept, skipped = split_packed(unit, outcome, batch.num_frames, batch.options)
                for i, result in kept.items():
                    outcomes[i] = result
                alone.extend(i for i in unit.members if i not in kept and i not in skipped)
                (to_pack if packing_round == 0 else alone).extend(skipped)
            if not to_pack and not alone:
                return
            units = self._packed_units(batch, to_pack, 1) if to_pack else []
            units += [batch.alone(i) for i in sorted(alone)]

    def _packed_units(self, batch: "_Batch", indices: List[int], workers: int) -> List[Unit]:
        # Copies of one recording are kept apart; compared in place (no copy of the batch).
        alike = packing.look_alike(batch.features, batch.num_frames)
        packs = packing.plan([batch.num_frames[i] for i in indices],
                             [self._pack_key(batch.options[i]) for i in indices],
                             alike=lambda a, b: alike(indices[a], indices[b]))
        if self.layout is BatchLayout.PER_WINDOW:
            packs = packing.spread(packs, workers)
        units = []
        for pack in packs:
            # Longest clip first, shortest last (measured on the bench recordings: Whisper
            # ends a window early after a short clip cut mid-sentence less often when nothing
            # follows it).
            group = sorted((indices[j] for j in pack), key=lambda i: -batch.num_frames[i])
            units.append(batch.alone(group[0]) if len(group) == 1 else batch.packed(group))
        return units

    def _pack_key(self, opts: DecodeOptions):
        """Windows with equal keys may share one packed window (None: never packed).

        Packed clips share one language, so only windows whose language is known qualify.
        """
        if not self.pack_windows or (self.decoder.multilingual and not opts.language):
            return None
        return replace(opts, word_timestamps=False)

    def _decode(self, units: Sequence[Unit], fallback: bool = True) -> List[WindowOutcome]:
        """fallback False: every unit gets its first temperature only."""
        outcomes: List[Optional[WindowOutcome]] = [None] * len(units)
        groups: Dict[tuple, List[int]] = {}
        for index, unit in enumerate(units):
            # Packed and lone windows are never mixed in one call, deferring or not.
            key = (unit.window.options.generation_key(), unit.fallback, fallback)
            groups.setdefault(key, []).append(index)
        for indices in groups.values():
            # A call's windows are encoded to the length of its longest: alike lengths together.
            indices.sort(key=lambda i: self.decoder.encoded_frames(units[i].window))
        chunks = [(own and allowed, indices[i:i + self.windows_per_call])
                  for (_, own, allowed), indices in groups.items()
                  for i in range(0, len(indices), self.windows_per_call)]
        for fallback, indices in chunks:
            try:
                results: List[WindowOutcome] = list(self.decoder.decode(
                    [units[i].window for i in indices], fallback))
            except Exception:  # noqa: BLE001 - find which window breaks the batch
                log.exception("batch of %d windows failed; retrying them one by one", len(indices))
                results = [self._decode_one(units[i], fallback) for i in indices]
            for i, result in zip(indices, results):
                outcomes[i] = result
        return outcomes  # type: ignore[return-value]

    def _decode_one(self, unit: Unit, fallback: bool) -> WindowOutcome:
        try:
            return self.decoder.decode([unit.window], fallback)[0]
        except Exception as exc:  # noqa: BLE001 - belongs to this window only
            log.exception("window failed")
            return exc


@dataclass
class _Batch:
    """The engine batch's windows, as the scheduler's rounds read them."""
    features: np.ndarray
    num_frames: Sequence[int]
    options: List[DecodeOptions]

    def alone(self, index: int) -> Unit:
        return Unit(DecodeWindow(self.features[index], self.num_frames[index],
                                 self.options[index]), True, [index])

    def packed(self, group: List[int]) -> Unit:
        clip_frames = [self.num_frames[i] for i in group]
        features, content = packing.pack_features(self.features[group], clip_frames)
        # One temperature only: a packed window whose text looks wrong is not sampled
        # again; its clips are decoded alone instead, with the usual fallback.
        words = any(self.options[i].word_timestamps for i in group)
        options = replace(self.options[group[0]], word_timestamps=words)
        return Unit(DecodeWindow(features, content, options, clip_frames), False, group)


def split_packed(unit: Unit, outcome: WindowOutcome, num_frames: Sequence[int],
                 options: Sequence[DecodeOptions]) -> Tuple[Dict[int, WindowResult], List[int]]:
    """(results kept per clip, clips that came back empty); the rest go alone."""
    frames = [num_frames[i] for i in unit.members]
    if (isinstance(outcome, Exception)
            or quality.needs_fallback(outcome.avg_logprob, outcome.no_speech_prob)
            or packing.straddling_words(outcome, frames)):
        return {}, []
    kept, skipped, lost = {}, [], set()
    split = packing.split_result(outcome, frames,
                                 [options[i].word_timestamps for i in unit.members])
    for position, (i, result) in enumerate(zip(unit.members, split)):
        seconds = num_frames[i] / packing.FRAMES_PER_SECOND
        # Repetition is judged clip by clip: uploads of one sentence packed together make a
        # repetitive window, not a bad transcript.
        result.compression_ratio = quality.compression_ratio(result.text.strip())
        if not result.segments:
            skipped.append(i)
            lost.add(position + 1)
        elif quality.too_sparse_for_clip(result.text, seconds):
            log.info("packed decode said %r for a %.1f s clip; decoding it alone",
                     result.text.strip()[:80], seconds)
            lost.add(position + 1)
        elif position in lost and _began_in_an_earlier_clip(outcome, frames, position):
            # Whisper lost its place in the clip before and ran on into this one: what it
            # said here may hold that clip's words or a loop (a 5 s clip came back as "Then",
            # the 4 s clip after it as its own sentence said twice).
            log.info("packed decode lost its place before a %.1f s clip; decoding it alone",
                     seconds)
        elif quality.too_dense_for_clip(result.text, seconds):
            log.info("packed decode said %r for a %.1f s clip, too much; decoding it alone",
                     result.text.strip()[:80], seconds)
        elif quality.off_target(result.text, options[i].task):
            log.info("packed translation came back as %r; decoding the clip alone",
                     result.text.strip()[:80])
        elif seconds - _text_end(result) > LOST_TAIL_SECONDS:
            log.info("packed decode ended a %.1f s clip at %.1f s (%r); decoding it alone",
                     seconds, _text_end(result), result.text.strip()[-80:])
        elif position > 0 and result.segments[0].start > LATE_FIRST_SEGMENT_SECONDS:
            # Its first words went missing, perhaps into the clip before: both go alone.
            log.info("packed decode began a %.1f s clip at %.1f s (%r); decoding it and the "
                     "clip before it alone", seconds, result.segments[0].start,
                     result.text.strip()[:80])
            kept.pop(unit.members[position - 1], None)
        elif not quality.too_repetitive(result.compression_ratio):
            kept[i] = result
    return kept, skipped


def _text_end(result: WindowResult) -> float:
    return max(segment.end for segment in result.segments)


def _report_detected(outcome: Optional[WindowOutcome], languages: Dict[str, float]) -> None:
    """Decoded in the language detected for it on its speech: report that detection."""
    if isinstance(outcome, WindowResult):
        outcome.language, outcome.language_probability = next(iter(languages.items()))
        outcome.language_probs = languages


def _needs_fallback(result: WindowResult, options: DecodeOptions) -> bool:
    """What the decoder's temperature fallback asks of an attempt, asked of a result."""
    if len(quality.temperature_schedule(options.temperature)) < 2:
        return False  # no higher temperature to try
    return quality.needs_fallback(result.avg_logprob, result.no_speech_prob,
                                  result.compression_ratio,
                                  quality.off_target(result.text.strip(), options.task))


def _began_in_an_earlier_clip(outcome: WindowResult, frames: Sequence[int], position: int
                              ) -> bool:
    """Whether a segment of the packed window began before this clip's gap and ran into it."""
    start = packing.offsets(frames)[position] / packing.FRAMES_PER_SECOND
    gap = packing.GAP_FRAMES / packing.FRAMES_PER_SECOND
    return any(s.start < start - gap and s.end > start for s in outcome.segments)


def balanced(costs: Sequence[float], workers: int) -> List[List[int]]:
    """Indices per worker, the costliest first onto the least loaded worker."""
    if workers <= 1:
        return [list(range(len(costs)))]
    loads = [0.0] * workers
    shares: List[List[int]] = [[] for _ in range(workers)]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        w = loads.index(min(loads))
        shares[w].append(i)
        loads[w] += costs[i]
    return [sorted(share) for share in shares if share]
