"""Pack several short windows into one 30 s window, and split the result back.

Whisper always encodes 30 s, so a 4 s clip pays for 30 s of encoder work. Short windows that
share their decoding options are laid side by side in one window (their log-mel frames, with
a second of their own silence between them), decoded once, and each segment goes back to the
clip it was said in (word by word, from word timings, when its timing runs across clips).
Pure functions: no model needed to test them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

from whisper_service.window_result import WindowResult, WindowSegment, WordTiming

FRAMES = 3000            # log-mel frames in a window (100 per second)
FRAMES_PER_SECOND = 100
GAP_FRAMES = 100         # silence kept between packed clips
MAX_CLIP_FRAMES = 1400   # only clips up to 14 s are worth packing


def plan(frames: Sequence[int], keys: Sequence[Optional[Hashable]],
         capacity: int = FRAMES, gap: int = GAP_FRAMES, max_clip: int = MAX_CLIP_FRAMES,
         alike: Optional[Callable[[int, int], bool]] = None) -> List[List[int]]:
    """Groups of window indices to decode as one window, in order of first member.

    A None key means "decode alone". Clips are packed first-fit among windows with the same
    key, each clip followed by `gap` frames of silence except the last; `alike(i, j)` true
    keeps two clips apart (copies of one recording: Whisper skips one of them).
    """
    packs: List[List[int]] = []
    open_packs: Dict[Hashable, List[list]] = {}  # key -> [[members, frames used], ...]
    for index, (length, key) in enumerate(zip(frames, keys)):
        if key is None or length > max_clip:
            packs.append([index])
            continue
        candidates = open_packs.setdefault(key, [])
        target = next((c for c in candidates if c[1] + gap + length <= capacity
                       and not (alike and any(alike(index, j) for j in c[0]))), None)
        if target is None:
            target = [[], -gap]
            candidates.append(target)
            packs.append(target[0])
        target[0].append(index)
        target[1] += gap + length
    return packs


def spread(packs: List[List[int]], workers: int) -> List[List[int]]:
    """Split the fullest packs until there are `workers` windows, where possible.

    Each window goes to one CPU worker: with fewer windows than workers, a worker would idle
    while another decodes several clips in a row (one more encode costs less than that).
    """
    packs = [list(p) for p in packs]
    while 0 < len(packs) < workers:
        largest = max(range(len(packs)), key=lambda i: len(packs[i]))
        if len(packs[largest]) < 2:
            break
        pack = packs.pop(largest)
        half = (len(pack) + 1) // 2
        packs[largest:largest] = [pack[:half], pack[half:]]
    return packs


def look_alike(features: np.ndarray, frames: Sequence[int], threshold: float = 0.7
               ) -> Callable[[int, int], bool]:
    """alike(i, j): clips of (nearly) one length whose log-mel features correlate above the
    threshold, i.e. copies of one recording, perhaps re-encoded or re-scaled.

    Measured on the test recordings: copies 0.82-1.00 (after shifts of up to 32 ms, gain and
    dither), different recordings at most 0.46.
    """
    def alike(i: int, j: int) -> bool:
        if abs(frames[i] - frames[j]) > 5 + 0.02 * max(frames[i], frames[j]):
            return False
        n = min(frames[i], frames[j])
        a = features[i][:, :n].ravel() - features[i][:, :n].mean()
        b = features[j][:, :n].ravel() - features[j][:, :n].mean()
        norm = float(np.sqrt((a @ a) * (b @ b)))
        return norm > 0 and float(a @ b) / norm > threshold
    return alike


def offsets(frames: Sequence[int], gap: int = GAP_FRAMES) -> List[int]:
    """Frame offset of each clip inside the packed window."""
    result, position = [], 0
    for length in frames:
        result.append(position)
        position += length + gap
    return result


def pack_features(features: np.ndarray, frames: Sequence[int], gap: int = GAP_FRAMES
                  ) -> Tuple[np.ndarray, int]:
    """One [n_mels, 3000] window from clips' features; also its content frames.

    Each clip brings its own `gap` frames of padding (silence as that clip's features
    normalise it); what is left of the window is the last clip's padding.
    """
    packed = np.empty_like(features[0])
    position = 0
    for clip, length in zip(features, frames):
        take = min(length + gap, FRAMES - position)
        packed[:, position:position + take] = clip[:, :take]
        position += take
    if position < FRAMES:
        last = features[len(frames) - 1]
        packed[:, position:] = last[:, frames[-1]:frames[-1] + FRAMES - position]
    content = offsets(frames, gap)[-1] + frames[-1]
    return packed, content


def _owner(frames: Sequence[int], gap: int):
    """seconds -> the clip whose span, extended to the middle of the gaps, holds that time."""
    starts = [o / FRAMES_PER_SECOND for o in offsets(frames, gap)]
    bounds = [starts[i + 1] - gap / FRAMES_PER_SECOND / 2 for i in range(len(frames) - 1)]
    return lambda seconds: int(np.searchsorted(bounds, seconds, side="right"))


def straddling_words(result: WindowResult, frames: Sequence[int], gap: int = GAP_FRAMES,
                     slack: float = 0.3) -> int:
    """Words of the packed result said across two clips: overlapping the speech of two clips
    by more than `slack` seconds each.

    Nobody says a word across the silence between two uploads: when the timing claims so,
    the decode lost its place (seen with copies of one clip packed together, where Whisper
    skips a copy) and the split cannot be trusted. A last word whose timing runs on into
    the silence after its clip, as DTW timings often do, is not counted.
    """
    spans = _clip_spans(frames, gap)
    return sum(1 for segment in result.segments for word in segment.words or []
               if _clips_touched(spans, word.start, word.end, slack) > 1)


def _clip_spans(frames: Sequence[int], gap: int) -> List[Tuple[float, float]]:
    """(start, end) in seconds of each clip's speech inside the packed window."""
    return [(o / FRAMES_PER_SECOND, (o + f) / FRAMES_PER_SECOND)
            for o, f in zip(offsets(frames, gap), frames)]


def _clips_touched(spans: Sequence[Tuple[float, float]], start: float, end: float,
                   slack: float) -> int:
    return sum(1 for a, b in spans if min(end, b) - max(start, a) > slack)


def segments_cross_clips(result: WindowResult, frames: Sequence[int], gap: int = GAP_FRAMES,
                         slack: float = 0.2) -> bool:
    """Whether some segment's timing overlaps the speech of two clips by more than `slack`
    seconds each.

    When none does, every segment goes whole to the clip it was said in, and the packed
    window needs no word timings to be split back. Whisper often ends a segment where the
    next speech starts, i.e. at the next clip's start: that alone is not a crossing.
    """
    spans = _clip_spans(frames, gap)
    return any(_clips_touched(spans, segment.start, segment.end, slack) > 1
               for segment in result.segments)


def split_result(result: WindowResult, frames: Sequence[int], keep_words: Sequence[bool],
                 gap: int = GAP_FRAMES) -> List[WindowResult]:
    """The packed window's result as one result per clip, in clip time: segments with word
    timings are cut word by word, those without go whole to the clip their middle lies in."""
    starts = [o / FRAMES_PER_SECOND for o in offsets(frames, gap)]
    lengths = [f / FRAMES_PER_SECOND for f in frames]
    owner = _owner(frames, gap)
    spans = _clip_spans(frames, gap)

    clips = [replace(result, segments=[], language_probs=dict(result.language_probs))
             for _ in frames]
    for segment in result.segments:
        if not segment.words:
            clip = owner((segment.start + segment.end) / 2)
            clips[clip].segments.append(_shifted(segment, starts[clip], lengths[clip], []))
            continue
        by_clip: Dict[int, List[WordTiming]] = {}
        for word, clip in zip(segment.words, _word_owners(segment.words, spans, owner)):
            by_clip.setdefault(clip, []).append(word)
        for clip, clip_words in sorted(by_clip.items()):
            piece = replace(segment, text="".join(w.word for w in clip_words),
                            start=clip_words[0].start, end=clip_words[-1].end)
            clips[clip].segments.append(_shifted(piece, starts[clip], lengths[clip], clip_words))
    covered = starts[-1] + lengths[-1] if result.covered is None else result.covered
    for clip, (start, length) in enumerate(zip(starts, lengths)):
        clips[clip].covered = round(min(max(covered - start, 0.0), length), 3)
        if not clips[clip].segments:
            # Nothing was heard in this clip although it was loud enough to be sent: report
            # it uncovered so that it is decoded again on its own.
            clips[clip].covered = 0.0
        if not keep_words[clip]:
            for segment in clips[clip].segments:
                segment.words = None
    return clips


def _word_owners(words: Sequence[WordTiming], spans: Sequence[Tuple[float, float]],
                 owner: Callable[[float], int]) -> List[int]:
    """The clip each word of one segment was said in: the clip whose speech it overlaps
    most. A word timed in the silence between clips goes with its nearest word of the
    segment that is in a clip: DTW timed the first word of a packed clip, "Then", in the gap
    before it, and by its middle it went to the clip before, lost to its own clip."""
    found: List[Optional[int]] = []
    for word in words:
        end = max(word.end, word.start + 0.01)  # DTW gives some words no duration
        overlaps = [min(end, b) - max(word.start, a) for a, b in spans]
        best = int(np.argmax(overlaps))
        found.append(best if overlaps[best] > 0 else None)
    placed = [i for i, clip in enumerate(found) if clip is not None]
    if not placed:
        return [owner((w.start + w.end) / 2) for w in words]
    def gap(word: WordTiming, j: int) -> float:  # time between the word and word j
        return max(words[j].start - word.end, word.start - words[j].end)

    return [clip if clip is not None else found[min(placed, key=lambda j: gap(word, j))]
            for word, clip in zip(words, found)]


def _shifted(segment: WindowSegment, start: float, length: float, words: List[WordTiming]
             ) -> WindowSegment:
    def clamp(t: float) -> float:
        return round(min(max(t - start, 0.0), length), 3)

    return replace(segment, start=clamp(segment.start), end=clamp(segment.end),
                   words=[replace(w, start=clamp(w.start), end=clamp(w.end)) for w in words])
