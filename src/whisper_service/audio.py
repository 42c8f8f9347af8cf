"""Turn uploaded bytes into 16 kHz mono samples, in memory, with clear errors.

Samples are written into one float32 buffer as they are decoded (no list of chunks joined at
the end, no second full-length copy), and the buffer's bytes are claimed from the caller's
memory budget before allocation. (Kept as float, not 16-bit: one LSB of difference after
resampling changed marginal Mandarin decodes in the accuracy check.)

Uploads are hostile until decoded: every refusal is an InvalidAudioError whose message is a
sentence the caller can act on (never an FFmpeg error code, a Python class name or a path), and
what one upload may cost is bounded before the work is done: headers are checked for absurd
sample rates, channel counts and sizes first, a file that declares far more than the limit is
refused before it is decoded, and FFmpeg may not open anything but the uploaded bytes (no
playlists, concat lists or SDP files that name other files or network addresses).
"""

from __future__ import annotations

import io
import struct
from typing import Callable, Iterator, List, Optional, Tuple

import av
import numpy as np

from whisper_service.errors import InvalidAudioError, InvalidInputError, ServerBusyError

SAMPLE_RATE = 16000
# Called with the bytes the samples are about to need in all; raises to refuse.
MemoryClaim = Callable[[int], None]
# Outside this range a sample rate is a broken or hostile header, not a recording: below it,
# a few bytes would resample into hours of audio; above it nothing records.
MIN_SAMPLE_RATE = 2000
MAX_SAMPLE_RATE = 768000
# FFmpeg's resampler handles at most 64 channels.
MAX_CHANNELS = 64
# A real WAV has a handful of chunks before its samples; thousands are a way to make the
# demuxer crawl (each one a seek through the upload).
MAX_RIFF_CHUNKS = 1000
# Samples far outside -1..1 overflow the spectrogram (|x| near 1e20 gives NaN features). Integer
# PCM stored as float without scaling (up to 2^31) is still accepted.
MAX_SAMPLE_MAGNITUDE = 1e10
# Containers whose declared duration is exact (a header or the last timestamp, not an estimate
# from the bit rate as for MP3 or ADTS): one declaring more than the limit is refused unread.
EXACT_DURATION_FORMATS = ("wav", "w64", "flac", "ogg", "aiff", "caf", "matroska,webm",
                          "mov,mp4,m4a,3gp,3g2,mj2")
# FFmpeg opens nothing but the uploaded bytes: no protocol is allowed for nested inputs, so an
# HLS playlist, an ffconcat list or an SDP file can neither read server files nor open sockets.
_OPEN_OPTIONS = {"protocol_whitelist": "none"}
# What each decoder failure means for the caller, in words (FFmpeg's own are errno strings).
_FAILURES = {
    "InvalidDataError": "it is not in a format the server reads, or its data is corrupt",
    "EOFError": "it ends before any audio could be read",
    "DecoderNotFoundError": "its audio codec is not supported",
    "DemuxerNotFoundError": "its container format is not supported",
    "PatchWelcomeError": "it uses a codec feature the server does not support",
    "MemoryError": "decoding it needs more memory than the server allows",
}
_DEFAULT_FAILURE = "its headers are inconsistent or use unsupported parameters"


def decode_audio(data: bytes, max_seconds: float) -> np.ndarray:
    """16 kHz mono float32 samples of an upload (decode_samples without a memory claim)."""
    return decode_samples(data, max_seconds)


def decode_samples(data: bytes, max_seconds: float, claim: Optional[MemoryClaim] = None
                   ) -> np.ndarray:
    """Decode any container/codec PyAV reads to 16 kHz mono float32 samples; stereo is
    downmixed, any rate resampled.

    Never touches the file system or the network: the bytes are wrapped in a BytesIO and no
    nested input may be opened, so nothing in a request can name a path or an address.
    """
    return next(_decoded(data, max_seconds, claim, None))


def decode_blocks(data: bytes, max_seconds: float, block_samples: int,
                  claim: Optional[MemoryClaim] = None) -> Iterator[np.ndarray]:
    """decode_samples in consecutive blocks of `block_samples` new samples (the last one
    fewer), each decoded only when the caller asks for it: hours of audio never sit in memory
    at once.

    The caller may send samples back (generator.send) to start the next block with: what it
    left of this one, without a copy of the block to join them. It lets go of a block before
    asking for the next; the claim covers the block being filled and the one handed out.
    Refusals found late (too long, truncated) come after the blocks before them.
    """
    if block_samples <= 0:
        raise ValueError("block_samples must be positive")
    return _decoded(data, max_seconds, claim, block_samples)


def _decoded(data: bytes, max_seconds: float, claim: Optional[MemoryClaim],
             block_samples: Optional[int]) -> Iterator[np.ndarray]:
    if not data:
        raise InvalidAudioError("AUDIO is empty: send the bytes of an audio file.", "empty_audio")
    _check_headers(data)
    max_samples = int(max_seconds * SAMPLE_RATE)
    declared_seconds = 0.0
    decoder: Optional[_Decoder] = None
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore",
                     options=dict(_OPEN_OPTIONS)) as container:
            if not container.streams.audio:
                raise InvalidAudioError(
                    "AUDIO has no audio stream: send an audio file (WAV, FLAC, MP3, OGG, M4A...).",
                    "no_audio_stream",
                )
            stream = container.streams.audio[0]
            declared_seconds = _declared_seconds(container, stream)
            _check_stream(stream)
            if (container.format.name in EXACT_DURATION_FORMATS
                    and declared_seconds > max_seconds + 1.0):
                raise _too_long(max_seconds, declared_seconds)
            decoder = _Decoder(max_samples, max_seconds, declared_seconds, claim, block_samples)
            for frame in _frames(container, stream):
                decoder.add(frame)
                while decoder.full:
                    decoder.start_with((yield decoder.full.pop(0)))
            decoder.flush()
            while decoder.full:
                decoder.start_with((yield decoder.full.pop(0)))
    except (InvalidAudioError, ServerBusyError):
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError, ArithmeticError,
            MemoryError) as exc:
        if isinstance(exc, InvalidInputError):  # e.g. the upload is over the whole budget
            raise
        raise InvalidAudioError(
            f"AUDIO could not be decoded as audio: {_failure(exc)}; send a complete WAV, FLAC, "
            "MP3, OGG or M4A file.",
            "undecodable_audio",
        ) from exc
    _refuse_truncated(declared_seconds, decoder.total / SAMPLE_RATE)
    if block_samples is None or decoder.filled or not decoder.handed_out:
        yield decoder.samples()


class _Decoder:
    """Resamples frames to 16 kHz mono and writes them into one float32 buffer, within the
    sample limit; the buffer is sized from the declared duration and grows (claiming its
    bytes first) when the file holds more.

    A stream may change rate or layout in the middle (a spliced MP3, a corrupt header that
    still decodes): the resampler is then rebuilt, rather than the upload refused.
    """

    def __init__(self, max_samples: int, max_seconds: float, declared_seconds: float,
                 claim: Optional[MemoryClaim], block_samples: Optional[int] = None):
        self.max_samples, self.max_seconds = max_samples, max_seconds
        self.claim = claim or (lambda nbytes: None)
        self.block = block_samples or max_samples
        self.cap = self.block
        """Samples the buffer being filled holds when full: a block, and what started it."""
        self.expected = min(max_samples, int(declared_seconds * 1.01 * SAMPLE_RATE) + SAMPLE_RATE)
        self.buffer = np.empty(0, dtype=np.float32)
        self.filled = 0
        """Samples in the buffer being filled."""
        self.total = 0
        """Samples decoded in all."""
        self.full: List[np.ndarray] = []
        """Blocks filled up and not yet handed out."""
        self.handed_out = 0
        """Bytes of the largest block handed out: still held by the caller while the next fills."""
        self.resampler = None
        self.setup: Optional[Tuple[str, str, int]] = None

    def add(self, frame) -> None:
        _check_rate(frame.sample_rate)
        _check_channels(len(frame.layout.channels))
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        if setup != self.setup:
            self.flush()
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            self.setup = setup
        for out in self.resampler.resample(frame):
            self._append(out)

    def flush(self) -> None:
        if self.resampler is not None:
            for out in self.resampler.resample(None):
                self._append(out)
        self.resampler = None

    def _append(self, frame) -> None:
        samples = frame.to_ndarray().reshape(-1)
        if self.total + samples.size > self.max_samples:
            raise _too_long(self.max_seconds)
        _checked_peak(samples)
        self.total += samples.size
        while samples.size:
            if self.filled == self.cap:
                self._hand_out()
            end = min(self.cap, self.filled + samples.size)
            if end > self.buffer.size:
                self._grow(end)
            taken = end - self.filled
            self.buffer[self.filled:end] = samples[:taken]
            self.filled, samples = end, samples[taken:]
        if self.filled == self.cap and self.block < self.max_samples:
            self._hand_out()

    def _hand_out(self) -> None:
        """A block is full: it goes to the caller, and the next one starts empty."""
        self.full.append(self.buffer)
        self.handed_out = max(self.handed_out, 4 * self.buffer.size)
        self.buffer, self.filled, self.cap = np.empty(0, dtype=np.float32), 0, self.block

    def start_with(self, prefix: Optional[np.ndarray]) -> None:
        """Start the next block with these samples (already counted), then a block's worth."""
        if prefix is None or not prefix.size:
            return
        # What the frame that filled the last block had left is already here: it goes after.
        rest = self.buffer[:self.filled].copy()
        self.buffer, self.filled = np.empty(0, dtype=np.float32), 0
        self.cap = self.block + prefix.size
        self._grow(prefix.size + rest.size)
        self.buffer[:prefix.size] = prefix
        self.buffer[prefix.size:prefix.size + rest.size] = rest
        self.filled = prefix.size + rest.size

    def _grow(self, needed: int) -> None:
        if not self.buffer.size and self.expected >= needed:
            capacity = self.expected
        else:
            capacity = max(needed, int(self.buffer.size * 1.25) + 60 * SAMPLE_RATE)
        capacity = min(capacity, self.cap, self.max_samples)
        # Old and new buffer exist together while the samples are copied.
        self.claim(self.handed_out + 4 * (self.buffer.size + capacity))
        grown = np.empty(capacity, dtype=np.float32)
        grown[:self.filled] = self.buffer[:self.filled]
        self.buffer = grown
        self.claim(self.handed_out + 4 * capacity)

    def samples(self) -> np.ndarray:
        """The samples of the buffer being filled (the whole upload, without blocks)."""
        if self.buffer.size - self.filled > SAMPLE_RATE * 30:
            # Declared far longer than it was (or grown past the end): keep only the samples.
            self.buffer = self.buffer[:self.filled].copy()
            self.claim(self.handed_out + 4 * self.buffer.size)
        return self.buffer[:self.filled]


def _checked_peak(samples: np.ndarray) -> float:
    if not np.all(np.isfinite(samples)):
        raise InvalidAudioError(
            "AUDIO contains non-finite samples (NaN or infinity).", "non_finite_audio"
        )
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak > MAX_SAMPLE_MAGNITUDE:
        raise InvalidAudioError(
            f"AUDIO has samples of magnitude {peak:.3g}, far outside the range of audio: send "
            "float samples between -1 and 1, or integer PCM.",
            "out_of_range_audio",
        )
    return peak


def _too_long(max_seconds: float, declared: Optional[float] = None) -> InvalidAudioError:
    said = f" (the file declares {declared:.0f} s)" if declared is not None else ""
    return InvalidAudioError(
        f"AUDIO is longer than the limit of {max_seconds:g} s{said}: split it, or raise "
        "max_audio_seconds on the server.",
        "audio_too_long",
    )


def _check_rate(rate: int) -> None:
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(
            f"AUDIO declares a sample rate of {rate} Hz, which no recording has: send audio "
            f"sampled at {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz (16000 Hz is best).",
            "bad_sample_rate",
        )


def _check_channels(channels: int) -> None:
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudioError(
            f"AUDIO declares {channels} channels: send audio with 1 to {MAX_CHANNELS} channels "
            "(mono is best).",
            "bad_channel_count",
        )


def _check_stream(stream) -> None:
    """What the container says about the stream, before a byte of it is decoded (a rate of 0
    means unknown until the first frame: some codecs only say it there)."""
    context = stream.codec_context
    if context is None:  # FFmpeg has no decoder for this codec
        raise av.error.DecoderNotFoundError(0, "no decoder")
    if context.sample_rate:
        _check_rate(context.sample_rate)
    channels = context.channels
    if channels == 0 and stream.layout is not None:
        channels = len(stream.layout.channels)
    if channels > MAX_CHANNELS or (channels == 0 and context.codec.name.startswith("pcm_")):
        _check_channels(channels)


def _declared_seconds(container, stream) -> float:
    seconds = (container.duration or 0) / 1_000_000
    if not seconds and stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    return max(0.0, seconds)


def _failure(exc: BaseException) -> str:
    return _FAILURES.get(type(exc).__name__, _DEFAULT_FAILURE)


# --- header checks on the raw bytes ------------------------------------------------------------

def _check_headers(data: bytes) -> None:
    """Checks FFmpeg does not make, or makes with a message no caller can act on."""
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        _check_riff(data)
    elif data[:4] == b"OggS":
        if _ogg_last_page_cut(data):
            raise InvalidAudioError(
                "AUDIO is truncated: its last Ogg page is cut short; send the complete file.",
                "truncated_audio",
            )


def _check_riff(data: bytes) -> None:
    """The `fmt ` chunk's rate and channels, and the `data` chunk's size against what arrived.

    A file cut short would be transcribed as if its speech simply stopped: refuse it. WAV
    declares its data size, which FFmpeg does not check against the bytes that arrived.
    """
    position, chunks = 12, 0
    while position + 8 <= len(data):
        chunks += 1
        if chunks > MAX_RIFF_CHUNKS:
            raise InvalidAudioError(
                f"AUDIO's WAV header has more than {MAX_RIFF_CHUNKS} chunks before its samples: "
                "send a plain WAV file (or FLAC, MP3, OGG, M4A).",
                "malformed_wav",
            )
        chunk, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        if chunk == b"fmt " and size >= 16 and position + 24 <= len(data):
            _tag, channels, rate = struct.unpack_from("<HHI", data, position + 8)
            _check_rate(rate)
            _check_channels(channels)
        elif chunk == b"data":
            # 0 and 0xFFFFFFFF mean "unknown length" (streamed WAV; RF64 keeps the size in ds64).
            if size in (0, 0xFFFFFFFF):
                return
            missing = position + 8 + size - len(data)
            if missing > 0:
                raise InvalidAudioError(
                    f"AUDIO is truncated: its WAV header declares {missing} more bytes of samples "
                    "than arrived; send the complete file.",
                    "truncated_audio",
                )
            return
        position += 8 + size + (size & 1)


_OGG_MAX_PAGE = 27 + 255 + 255 * 255


def _ogg_last_page_cut(data: bytes) -> bool:
    """Whether the upload ends inside an Ogg page (FFmpeg drops the partial page silently).

    Looks only at the last 64 KiB (one page at most): complete if a page ends exactly at the
    end of the data; cut if the last page header found there runs past it.
    """
    floor = max(0, len(data) - _OGG_MAX_PAGE - 4)
    position = data.rfind(b"OggS", floor)
    cut = False
    first = True
    while position >= floor and position != -1:
        end = _ogg_page_end(data, position)
        if end == len(data):
            return False
        if first and end is not None:
            cut = end > len(data)
            first = False
        position = data.rfind(b"OggS", floor, position)
    return cut


def _ogg_page_end(data: bytes, position: int) -> Optional[int]:
    """Where the Ogg page starting at `position` ends (maybe past the data); None if what is
    there is not a plausible page header. A header cut short ends past the data."""
    header = data[position:position + 27]
    if len(header) < 6:
        return len(data) + 1 if header[4:5] in (b"", b"\x00") else None
    if header[4] != 0 or header[5] & ~0x07:
        return None
    if len(header) < 27:
        return len(data) + 1
    segments = header[26]
    table = data[position + 27:position + 27 + segments]
    if len(table) < segments:
        return len(data) + 1
    return position + 27 + segments + sum(table)


def _refuse_truncated(declared_seconds: float, decoded_seconds: float) -> None:
    """FLAC and MP3 (and most containers) declare their length: refuse a file that decodes
    to much less than it declares."""
    if declared_seconds >= 1.0 and decoded_seconds < 0.9 * declared_seconds - 0.5:
        raise InvalidAudioError(
            f"AUDIO is truncated: the file declares {declared_seconds:.1f} s but only "
            f"{decoded_seconds:.1f} s arrived; send the complete file.",
            "truncated_audio",
        )


def _frames(container, stream):
    """Decoded frames, skipping corrupt packets in the middle the way ffmpeg does."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue
