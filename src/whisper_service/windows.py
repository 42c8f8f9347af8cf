"""Cut audio into Whisper windows of at most 30 s, and map window times back to the audio.

Whisper always looks at 30 s, and windows are decoded independently (that is what lets the
engine batch them across requests), so cuts go where the signal is quietest rather than
mid-word. By default windows cover the regions where the VAD hears speech (with room around it,
long pauses left out), each region its own windows; with VAD_FILTER, non-speech is dropped and
the speech spans are packed into windows. Each window keeps a map from its own time line to the
time line of the upload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
# Where the cutter may look for a quiet point: the last seconds of a full window.
SEARCH_SECONDS = 5.0
FRAME = SAMPLE_RATE // 50  # 20 ms energy frames
# A window whose loudest 20 ms frames stay under -55 dBFS holds nothing to transcribe; sending
# it to Whisper only invites invented text.
SILENCE_RMS = 10 ** (-55 / 20)
# Kept before a window's first sound, so the onset of the first word is not clipped.
LEAD_IN_SECONDS = 0.3
# The VAD reads audio in pieces of this length, with a little on either side (speech_spans).
VAD_PIECE_SECONDS = 15
VAD_WHOLE_SECONDS = 900
VAD_LEAD_IN_SECONDS = 2.0
VAD_READ_ON_SECONDS = 3.0


@dataclass
class Window:
    audio: np.ndarray
    """Samples of this window (at most 30 s)."""
    spans: List[Tuple[int, int, int]] = field(default_factory=list)
    """(sample offset in the window, sample offset in the upload, length) pieces."""

    @property
    def duration(self) -> float:
        return self.audio.size / SAMPLE_RATE

    @property
    def start(self) -> float:
        return self.spans[0][1] / SAMPLE_RATE

    def is_silent(self) -> bool:
        return is_silent(self.audio)

    def detached(self) -> "Window":
        """This window with samples of its own, not a view that keeps the whole audio alive."""
        if self.audio.base is None:
            return self
        return Window(audio=self.audio.copy(), spans=list(self.spans))

    def to_original(self, seconds: float, is_end: bool = False) -> float:
        """Map a time of this window to the upload's time line."""
        position = seconds * SAMPLE_RATE
        chosen = self.spans[-1]
        for span in self.spans:
            window_start, _, length = span
            inside_end = position <= window_start + length if is_end else position < window_start + length
            if inside_end:
                chosen = span
                break
        window_start, original_start, length = chosen
        offset = min(max(position - window_start, 0.0), float(length))
        return round((original_start + offset) / SAMPLE_RATE, 3)


def tail(window: Window, from_seconds: float) -> Window:
    """The part of a window after `from_seconds` (window time), as a window of its own."""
    cut = min(int(round(from_seconds * SAMPLE_RATE)), window.audio.size)
    spans = []
    for window_start, original_start, length in window.spans:
        end = window_start + length
        if end <= cut:
            continue
        skip = max(0, cut - window_start)
        spans.append((window_start + skip - cut, original_start + skip, length - skip))
    return Window(audio=window.audio[cut:], spans=spans)


def head(window: Window, until_seconds: float) -> Window:
    """The part of a window before `until_seconds` (window time), as a window of its own."""
    cut = min(int(round(until_seconds * SAMPLE_RATE)), window.audio.size)
    spans = [(ws, os, min(length, cut - ws)) for ws, os, length in window.spans if ws < cut]
    return Window(audio=window.audio[:cut], spans=spans)


def halves(window: Window) -> Tuple[Window, Window]:
    """The window cut in two at its quietest point in the middle third."""
    third = window.audio.size // 3
    cut = quietest_cut(window.audio, third, 2 * third) / SAMPLE_RATE
    return head(window, cut), tail(window, cut)


def _frame_rms(audio: np.ndarray) -> np.ndarray:
    if audio.size < FRAME:
        return np.sqrt(np.mean(np.square(audio, dtype=np.float64), keepdims=True))
    frames = audio[: audio.size - audio.size % FRAME].reshape(-1, FRAME)
    return np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))


def is_silent(audio: np.ndarray) -> bool:
    if audio.size == 0:
        return True
    return float(np.percentile(_frame_rms(audio), 99)) < SILENCE_RMS


def quietest_cut(audio: np.ndarray, lo: int, hi: int) -> int:
    """Sample index in [lo, hi) at the centre of the quietest 20 ms frame."""
    segment = audio[lo:hi]
    usable = segment.size - segment.size % FRAME
    if usable < FRAME:
        return hi
    energy = np.square(segment[:usable].reshape(-1, FRAME), dtype=np.float64).sum(axis=1)
    # Prefer the latest of equally quiet frames: fuller windows mean fewer windows.
    best = usable // FRAME - 1 - int(np.argmin(energy[::-1]))
    return lo + best * FRAME + FRAME // 2


def first_sound(audio: np.ndarray, start: int, end: int) -> int:
    """Index of the first 20 ms frame in [start, end) above the silence level (end if none)."""
    loud = np.flatnonzero(_frame_rms(audio[start:end]) >= SILENCE_RMS)
    return end if loud.size == 0 else start + int(loud[0]) * FRAME


def cut_span(audio: np.ndarray, start: int, end: int) -> List[Tuple[int, int]]:
    """Split [start, end) into pieces of at most 30 s, cutting at quiet points.

    Each piece starts shortly before its first sound: Whisper's first timestamp of a window
    may not exceed 1 s, so a window that opens on silence would date its speech too early.
    Silence between pieces is never sent.
    """
    pieces = []
    search = int(SEARCH_SECONDS * SAMPLE_RATE)
    margin = int(LEAD_IN_SECONDS * SAMPLE_RATE)
    while start < end:
        start = max(start, first_sound(audio, start, end) - margin)
        if end - start <= WINDOW_SAMPLES:
            if first_sound(audio, start, end) < end:
                pieces.append((start, end))
            break
        cut = quietest_cut(audio, start + WINDOW_SAMPLES - search, start + WINDOW_SAMPLES)
        pieces.append((start, cut))
        start = cut
    return pieces


def fixed_windows(audio: np.ndarray) -> List[Window]:
    """Windows covering the whole audio, whatever it holds."""
    return region_windows(audio, [(0, audio.size)])


def region_windows(audio: np.ndarray, regions: Sequence[Tuple[int, int]]) -> List[Window]:
    """Windows of at most 30 s inside each region; regions are never joined into one window.

    Measured on Common Voice sentences 8-16 s apart: in windows joined from several regions
    (as VAD_FILTER does) Whisper skipped whole short sentences, in windows of their own it
    did not.
    """
    return [Window(audio=audio[a:b], spans=[(0, a, b - a)])
            for start, end in regions for a, b in cut_span(audio, start, end)]


def speech_windows(audio: np.ndarray, speech: Sequence[Tuple[int, int]]) -> List[Window]:
    """Pack speech spans (sample ranges, in order) into windows of at most 30 s."""
    pieces: List[Tuple[int, int]] = []
    for start, end in speech:
        pieces.extend(cut_span(audio, start, end))
    windows: List[Window] = []
    current: List[Tuple[int, int]] = []
    filled = 0
    for start, end in pieces:
        length = end - start
        if current and filled + length > WINDOW_SAMPLES:
            windows.append(_packed(audio, current))
            current, filled = [], 0
        current.append((start, end))
        filled += length
    if current:
        windows.append(_packed(audio, current))
    return windows


def _packed(audio: np.ndarray, pieces: List[Tuple[int, int]]) -> Window:
    spans, offset = [], 0
    for start, end in pieces:
        spans.append((offset, start, end - start))
        offset += end - start
    return Window(audio=np.concatenate([audio[a:b] for a, b in pieces]), spans=spans)


def speech_spans(audio: np.ndarray, vad_parameters: Optional[dict] = None,
                 piece_samples: int = VAD_PIECE_SECONDS * SAMPLE_RATE,
                 whole_seconds: float = VAD_WHOLE_SECONDS) -> List[Tuple[int, int]]:
    """Speech sample ranges found by the Silero VAD (as faster-whisper runs it, see vad).

    The VAD reads the audio in short pieces, each from a fresh state. Measured on speech after
    room noise (-50 dBFS, Opus): after 25 s or more of noise in one pass, Silero missed the
    first 1-5 s of the sentence that followed (after 60 s, always), so a long pause swallowed
    the next sentence's start. Each piece ends at the quietest point of its last seconds and
    is read from VAD_LEAD_IN_SECONDS before its start to VAD_READ_ON_SECONDS after its end, so
    that a span running over a cut ends where the VAD, reading on, ends it; spans that overlap
    are joined. The VAD's own copies are of one piece, not of hours.
    """
    from whisper_service.vad import speech_timestamps  # ONNX Runtime: loaded on first use

    options = vad_parameters or {}
    search = int(SEARCH_SECONDS * SAMPLE_RATE)
    lead_in = int(VAD_LEAD_IN_SECONDS * SAMPLE_RATE)
    read_on = int(VAD_READ_ON_SECONDS * SAMPLE_RATE)
    # Up to 15 minutes, one pass as before (the float copy and the VAD's own copies stay
    # under 250 MB): moving span edges by 0.2 s changed windows enough to lose sentences that
    # one pass keeps (a near tie between languages in a mixed window; Mandarin clips between
    # noisy pauses, recall 0.3). Hours go in pieces: bounded memory, and no long pause
    # swallows the next sentence's start.
    whole_up_to = int(whole_seconds * SAMPLE_RATE)
    spans: List[Tuple[int, int]] = []
    start = 0
    while start < audio.size:
        cut = audio.size
        if audio.size > whole_up_to and audio.size - start > piece_samples:
            cut = quietest_cut(audio, start + piece_samples - search, start + piece_samples)
        read_from = max(0, start - lead_in)
        piece = audio[read_from:min(audio.size, cut + read_on)]
        for piece_start, piece_end in speech_timestamps(piece, **options):
            begin, end = read_from + piece_start, read_from + piece_end
            if end <= start:
                continue  # the previous piece's
            if begin >= cut:
                break  # the next piece's
            if spans and begin <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((begin, end))
        start = cut
    return spans


# Speech evidence: Silero's own threshold, spans unpadded. Measured on ../shared/evalset and on
# a minute each of white, brown and mains-hum noise at -50 to -15 dBFS: 0.5 found speech in every
# recording (51-100% of each file) and none in any noise; 0.3 and 0.2 found 2 s in white noise.
EVIDENCE_VAD = {"threshold": 0.5, "min_silence_duration_ms": 100, "speech_pad_ms": 0}
# Without VAD_FILTER, only pauses this long that hold no speech are left out of the windows
# (Whisper invents text in long stretches of noise), and each region keeps this much audio
# around its speech: generous, since missed speech is worse than a second of room noise.
LONG_PAUSE_SECONDS = 3.0
REGION_PAD_SECONDS = 1.0


def speech_regions(audio: np.ndarray, evidence: Sequence[Tuple[int, int]]
                   ) -> List[Tuple[int, int]]:
    """Sample ranges to transcribe: the evidence padded, joined across short pauses."""
    pad = int(REGION_PAD_SECONDS * SAMPLE_RATE)
    join = int(LONG_PAUSE_SECONDS * SAMPLE_RATE)
    regions: List[Tuple[int, int]] = []
    for start, end in evidence:
        start, end = max(0, start - pad), min(audio.size, end + pad)
        if regions and start - regions[-1][1] < join:
            regions[-1] = (regions[-1][0], max(regions[-1][1], end))
        else:
            regions.append((start, end))
    return regions


def speech_seconds(window: Window, evidence: Sequence[Tuple[int, int]]) -> float:
    """Seconds of evidence of speech (upload sample ranges) inside a window."""
    total = 0
    for _, original_start, length in window.spans:
        lo, hi = original_start, original_start + length
        for start, end in evidence:
            if end > lo and start < hi:
                total += min(end, hi) - max(start, lo)
    return total / SAMPLE_RATE
