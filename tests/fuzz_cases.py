"""Hostile and broken uploads for the audio decoder, generated in memory (nothing on disk).

Shared by tests/test_fuzz_decode.py (every case, in-process) and tests/test_fuzz_server.py (a
bounded sample, against a real server). Each case is a name, the bytes, and, where the outcome
is certain, words the refusal must contain; a case without them may decode (a flipped byte in
the middle of an MP3 is just a click) or be refused, but nothing else.

The valid files all hold the same few seconds of speech (JFK from ../shared/audio, or a
synthetic stand-in where the recordings are absent), encoded with soundfile and PyAV.
"""

from __future__ import annotations

import functools
import gzip
import io
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np
import soundfile

from corpus import JFK, SAMPLE_RATE, encode

FORMATS = ("wav", "flac", "ogg", "mp3", "m4a")
SEED = 20240917
FLIPS_PER_FORMAT = 16
MEGABYTE = 1024 * 1024
# Metadata "of several MB": under the 16 MB a FLAC block can hold, far over any real tag.
HUGE_METADATA_BYTES = 4 * MEGABYTE
BASE_SECONDS = 2.0


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    refuse: Tuple[str, ...] = ()
    """If set, the case must be refused, with one of these words in the message."""

    def __repr__(self) -> str:  # pytest ids and failure messages: never megabytes of bytes
        return f"Case({self.name!r}, {len(self.data)} bytes)"


# --- the valid files ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def speech() -> np.ndarray:
    """BASE_SECONDS of 16 kHz mono speech: from jfk.flac, or a voiced synthetic stand-in."""
    count = int(BASE_SECONDS * SAMPLE_RATE)
    if JFK.path.is_file():
        with soundfile.SoundFile(io.BytesIO(JFK.read_bytes())) as f:
            f.seek(int(1.0 * f.samplerate))
            audio = f.read(int(BASE_SECONDS * f.samplerate), dtype="float32", always_2d=True)
        if f.samplerate == SAMPLE_RATE:
            return np.ascontiguousarray(audio.mean(axis=1))
    t = np.arange(count) / SAMPLE_RATE
    voice = sum(np.sin(2 * np.pi * f0 * t) / k for k, f0 in enumerate((140, 280, 420, 700), 1))
    return (0.2 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@functools.lru_cache(maxsize=None)
def valid(fmt: str) -> bytes:
    """The speech, encoded as a complete file of this format."""
    return encode(speech(), fmt)


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


# --- hand-made headers -------------------------------------------------------------------------

def chunk(tag: bytes, payload: bytes, size: Optional[int] = None) -> bytes:
    """A RIFF chunk; `size` overrides the declared size (a lie)."""
    declared = len(payload) if size is None else size
    return tag + struct.pack("<I", declared & 0xFFFFFFFF) + payload + (b"\0" if len(payload) & 1 else b"")


def wav(data: bytes, *, tag: int = 1, channels: int = 1, rate: int = SAMPLE_RATE, bits: int = 16,
        block_align: Optional[int] = None, byte_rate: Optional[int] = None,
        data_size: Optional[int] = None, fmt_size: Optional[int] = None,
        riff_size: Optional[int] = None, extra: bytes = b"") -> bytes:
    """A RIFF/WAVE file whose every header field can lie."""
    if block_align is None:
        block_align = (channels * bits // 8) & 0xFFFF
    if byte_rate is None:
        byte_rate = (rate * block_align) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", tag, channels & 0xFFFF, rate & 0xFFFFFFFF, byte_rate,
                      block_align & 0xFFFF, bits & 0xFFFF)
    body = b"WAVE" + chunk(b"fmt ", fmt, fmt_size) + extra + chunk(b"data", data, data_size)
    return b"RIFF" + struct.pack("<I", (len(body) if riff_size is None else riff_size) & 0xFFFFFFFF) + body


def rf64(data: bytes, frames: int, *, bits: int = 16, rate: int = SAMPLE_RATE) -> bytes:
    """An RF64 (64-bit WAV) file declaring `frames` frames, whatever `data` holds."""
    block_align = bits // 8
    data_size = frames * block_align
    ds64 = struct.pack("<QQQI", data_size + 100, data_size, frames, 0)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * block_align, block_align, bits)
    body = (b"WAVE" + chunk(b"ds64", ds64) + chunk(b"fmt ", fmt)
            + b"data" + struct.pack("<I", 0xFFFFFFFF) + data)
    return b"RF64" + struct.pack("<I", 0xFFFFFFFF) + body


def syncsafe(size: int) -> bytes:
    return bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))


def id3(frames: bytes, declared: Optional[int] = None) -> bytes:
    """An ID3v2.3 tag (what precedes most MP3s); `declared` overrides its size."""
    return b"ID3\x03\x00\x00" + syncsafe(len(frames) if declared is None else declared) + frames


def id3_text_frame(frame_id: bytes, text: bytes) -> bytes:
    payload = b"\x00" + text
    return frame_id + struct.pack(">I", len(payload)) + b"\x00\x00" + payload


def flac_with_block(flac: bytes, block_type: int, payload: bytes,
                    declared: Optional[int] = None) -> bytes:
    """The FLAC file with one more metadata block right after STREAMINFO."""
    assert flac[:4] == b"fLaC"
    header = flac[4]
    streaminfo_end = 8 + int.from_bytes(flac[5:8], "big")
    was_last = bool(header & 0x80)
    size = len(payload) if declared is None else declared
    block = bytes([(0x80 if was_last else 0) | block_type]) + size.to_bytes(3, "big") + payload
    return b"fLaC" + bytes([header & 0x7F]) + flac[5:streaminfo_end] + block + flac[streaminfo_end:]


def vorbis_comment(value_bytes: int) -> bytes:
    vendor = b"fuzz"
    comment = b"COMMENT=" + b"x" * value_bytes
    return (struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 1)
            + struct.pack("<I", len(comment)) + comment)


def mp4_box(kind: bytes, payload: bytes, size: Optional[int] = None) -> bytes:
    return struct.pack(">I", len(payload) + 8 if size is None else size) + kind + payload


def png(width: int = 16, height: int = 16) -> bytes:
    def part(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    rows = b"".join(b"\x00" + bytes((x * 7) % 256 for x in range(width * 3)) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + part(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + part(b"IDAT", zlib.compress(rows)) + part(b"IEND", b""))


def noise(size: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


# --- containers written with PyAV --------------------------------------------------------------

def _mux(container: str, streams: Sequence[Tuple[str, Dict]], metadata: Optional[Dict] = None,
         options: Optional[Dict] = None) -> bytes:
    """A file of `container` format with the given streams: ("audio", {codec, audio, rate,
    layout}) or ("video", {codec, frames}). Every stream is encoded completely."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container, options=options or {}) as out:
        if metadata:
            out.metadata.update(metadata)
        made = []
        for kind, spec in streams:
            if kind == "audio":
                stream = out.add_stream(spec["codec"], rate=spec.get("rate", SAMPLE_RATE),
                                        layout=spec.get("layout", "mono"))
                frame_format = spec.get("format", "fltp")
                audio = np.atleast_2d(spec["audio"]).astype(
                    np.int16 if frame_format == "s16" else np.float32)
                if frame_format == "s16":
                    audio = np.ascontiguousarray(audio.T.reshape(1, -1))
                frames = []
                step = 1024
                for start in range(0, audio.shape[-1], step):
                    piece = np.ascontiguousarray(audio[..., start:start + step])
                    frame = av.AudioFrame.from_ndarray(piece, format=frame_format,
                                                       layout=stream.layout.name)
                    frame.sample_rate = stream.rate
                    frame.pts = start if frame_format != "s16" else start // len(audio)
                    frames.append(frame)
                made.append((stream, frames))
            else:
                stream = out.add_stream(spec["codec"], rate=spec.get("fps", 10))
                stream.width, stream.height = 64, 48
                stream.pix_fmt = spec.get("pix_fmt", "yuv420p")
                frames = []
                for index in range(spec.get("frames", 10)):
                    image = np.full((48, 64, 3), (index * 20) % 256, dtype=np.uint8)
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    frame.pts = index
                    frames.append(frame)
                made.append((stream, frames))
        for stream, frames in made:
            for frame in frames:
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    return buffer.getvalue()


def _audio(codec: str, audio: Optional[np.ndarray] = None, **spec) -> Tuple[str, Dict]:
    audio = speech() if audio is None else audio
    if codec.startswith("pcm_"):
        spec.setdefault("format", "s16")
        audio = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    return "audio", dict(codec=codec, audio=audio, **spec)


def _video(codec: str = "mpeg4", **spec) -> Tuple[str, Dict]:
    return "video", dict(codec=codec, **spec)


# --- the cases ---------------------------------------------------------------------------------

def plain_junk() -> Iterator[Case]:
    yield Case("empty", b"", ("empty",))
    yield Case("one-byte", b"\x00")
    yield Case("text", b"hello, this is not audio at all", ("could not be decoded",))
    yield Case("text-long", b"Lorem ipsum dolor sit amet. " * 4000, ("could not be decoded",))
    yield Case("html", b"<!DOCTYPE html><html><body><audio src='a.wav'></audio></body></html>")
    yield Case("json", b'{"audio": "UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA="}')
    yield Case("path", b"/etc/passwd", ("could not be decoded",))
    yield Case("file-url", b"file:///etc/passwd", ("could not be decoded",))
    yield Case("concat-protocol", b"concat:/etc/passwd|/etc/hosts")
    yield Case("hls-playlist", b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n"
               b"#EXT-X-ENDLIST\n")
    yield Case("ffconcat", b"ffconcat version 1.0\nfile '/etc/passwd'\n")
    # Inputs that name other inputs: FFmpeg would open them (a relative name is "safe" to its
    # concat demuxer; an SDP file opens RTP sockets and waits 20 s for packets). The decode
    # test runs in the recordings folder, where jfk.flac would be found.
    yield Case("ffconcat-relative", b"ffconcat version 1.0\nfile 'jfk.flac'\n",
               ("could not be decoded",))
    yield Case("hls-relative", b"#EXTM3U\n#EXT-X-TARGETDURATION:20\n#EXTINF:11,\njfk.flac\n"
               b"#EXT-X-ENDLIST\n", ("could not be decoded",))
    yield Case("sdp-rtp-sockets", b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
               b"m=audio 5004 RTP/AVP 0\n", ("could not be decoded",))
    yield Case("zeros-1MB", bytes(MEGABYTE))
    yield Case("ff-1MB", b"\xff" * MEGABYTE)
    yield Case("random-64KB", noise(65536, SEED))
    yield Case("utf16-text", "not audio, in UTF-16".encode("utf-16"))


def malformed_headers() -> Iterator[Case]:
    garbage = noise(4096, SEED + 1)
    yield Case("wav-magic-garbage", b"RIFF" + struct.pack("<I", 4100) + b"WAVE" + garbage)
    yield Case("wav-riff-only", b"RIFF\x00\x00\x00\x00WAVE")
    yield Case("flac-magic-garbage", b"fLaC" + garbage)
    yield Case("ogg-magic-garbage", b"OggS\x00\x02" + garbage)
    yield Case("mp3-id3-garbage", b"ID3\x03\x00\x00\x00\x00\x00\x10" + garbage)
    yield Case("mp3-sync-garbage", b"\xff\xfb\x90\x64" + garbage)
    yield Case("m4a-ftyp-garbage", mp4_box(b"ftyp", b"M4A \x00\x00\x00\x00M4A mp42isom") + garbage)
    yield Case("caf-magic-garbage", b"caff\x00\x01\x00\x00" + garbage)
    yield Case("aiff-magic-garbage", b"FORM\x00\x00\x10\x04AIFF" + garbage)

    audio = pcm16(speech())
    yield Case("wav-fmt-size-0", wav(audio, fmt_size=0))
    yield Case("wav-fmt-size-2", wav(audio, fmt_size=2))
    yield Case("wav-fmt-size-huge", wav(audio, fmt_size=0xFFFFFFF0))
    yield Case("wav-riff-size-0", wav(audio, riff_size=0))
    yield Case("wav-riff-size-huge", wav(audio, riff_size=0xFFFFFFF0))
    yield Case("wav-data-size-odd", wav(audio, data_size=len(audio) - 1))
    yield Case("wav-data-size-short", wav(audio, data_size=len(audio) // 2))
    yield Case("wav-data-size-over", wav(audio, data_size=len(audio) + 1000), ("truncated",))
    yield Case("wav-no-fmt", b"RIFF" + struct.pack("<I", len(audio) + 12) + b"WAVE" + chunk(b"data", audio))
    yield Case("wav-no-data", b"RIFF" + struct.pack("<I", 28) + b"WAVE"
               + chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)))
    yield Case("wav-chunk-size-loops", wav(audio, extra=chunk(b"LIST", b"", size=0xFFFFFFF8)))
    yield Case("wav-many-empty-chunks", wav(audio, extra=b"JUNK\x00\x00\x00\x00" * 50000))

    flac = valid("flac")
    yield Case("flac-streaminfo-size-huge", flac[:5] + b"\xff\xff\xff" + flac[8:])
    yield Case("flac-streaminfo-size-0", flac[:5] + b"\x00\x00\x00" + flac[8:])
    yield Case("flac-block-size-lies", flac_with_block(flac, 4, vorbis_comment(100), declared=0xFFFFFF))
    yield Case("flac-zero-sample-rate", flac[:18] + bytes([0, 0, flac[20] & 0x0F]) + flac[21:])
    yield Case("flac-streaminfo-only", flac[:42])

    m4a = valid("m4a")
    yield Case("m4a-box-size-huge", struct.pack(">I", 0x7FFFFFFF) + m4a[4:])
    yield Case("m4a-largesize", struct.pack(">I", 1) + b"moov" + struct.pack(">Q", 1 << 62) + garbage)
    yield Case("m4a-box-size-1", struct.pack(">I", 1) + m4a[4:])


def truncations() -> Iterator[Case]:
    for fmt in FORMATS:
        data = valid(fmt)
        cuts = sorted({1, 2, 4, 8, 12, 16, 44, 100, 1000, len(data) // 10, len(data) // 4,
                       len(data) // 2, 3 * len(data) // 4, 9 * len(data) // 10, len(data) - 100,
                       len(data) - 1})
        for cut in cuts:
            if 0 < cut < len(data):
                yield Case(f"{fmt}-cut-{cut}-of-{len(data)}", data[:cut])


def byte_flips(per_format: int = FLIPS_PER_FORMAT, seed: int = SEED) -> Iterator[Case]:
    """Valid files with a few bytes changed: half of them in the first 512 bytes (headers)."""
    rng = np.random.default_rng(seed)
    for fmt in FORMATS:
        data = valid(fmt)
        for index in range(per_format):
            mutated = bytearray(data)
            count = int(rng.choice([1, 2, 4, 8, 32]))
            for _ in range(count):
                limit = min(512, len(data)) if rng.random() < 0.5 else len(data)
                position = int(rng.integers(0, limit))
                mode = rng.random()
                if mode < 0.6:
                    mutated[position] ^= int(rng.integers(1, 256))
                else:
                    mutated[position] = 0xFF if mode < 0.8 else 0x00
            yield Case(f"{fmt}-flip-{index}-{count}-bytes", bytes(mutated))


def absurd_wav_headers() -> Iterator[Case]:
    second = pcm16(speech()[:SAMPLE_RATE])
    one_byte_second = (np.clip(speech()[:SAMPLE_RATE], -1, 1) * 127 + 128).astype(np.uint8).tobytes()
    # 2^31 frames of 8-bit mono (the largest a 32-bit RIFF size can declare), 1 s of data.
    yield Case("wav-2^31-frames-1s-data", wav(one_byte_second, bits=8, data_size=1 << 31),
               ("truncated", "longer than the limit"))
    yield Case("wav-4GB-data-1s", wav(second, data_size=0xFFFFFFFE), ("truncated", "longer than the limit"))
    yield Case("rf64-2^31-frames-1s-data", rf64(second, 1 << 31), ("truncated", "longer than the limit"))
    yield Case("rf64-2^40-frames-1s-data", rf64(second, 1 << 40), ("truncated", "longer than the limit"))
    for rate in (0, 1, 100, 4_000_000_000, 0xFFFFFFFF):
        yield Case(f"wav-rate-{rate}", wav(second, rate=rate), ("sample rate",))
    yield Case("wav-rate-1-byte-rate-ok", wav(second, rate=1, byte_rate=32000),
               ("sample rate",))
    for channels in (0, 255, 65535):
        yield Case(f"wav-channels-{channels}", wav(second, channels=channels), ("channels",))
    yield Case("wav-channels-65535-block-2", wav(second, channels=65535, block_align=2),
               ("channels",))
    for bits in (0, 1, 7, 64, 65535):
        yield Case(f"wav-bits-{bits}", wav(second, bits=bits))
    yield Case("wav-block-align-0", wav(second, block_align=0))
    yield Case("wav-block-align-65535", wav(second, block_align=65535))
    yield Case("wav-byte-rate-0", wav(second, byte_rate=0))
    yield Case("wav-unknown-codec-tag", wav(second, tag=0x1234))
    yield Case("wav-float-tag-16-bits", wav(second, tag=3))
    yield Case("wav-extensible-garbage", wav(second, tag=0xFFFE, fmt_size=16))
    huge = np.full(SAMPLE_RATE, 3e38, dtype=np.float32).tobytes()
    yield Case("wav-float-3e38", wav(huge, tag=3, bits=32))
    yield Case("wav-double-1e300", wav(np.full(SAMPLE_RATE, 1e300, dtype="<f8").tobytes(), tag=3, bits=64))
    yield Case("wav-double-nan", wav(np.full(SAMPLE_RATE, np.nan, dtype="<f8").tobytes(), tag=3, bits=64),
               ("non-finite",))
    flac = bytearray(valid("flac"))
    total = int.from_bytes(flac[18:26], "big")
    flac[18:26] = (total | ((1 << 36) - 1)).to_bytes(8, "big")  # 2^36 - 1 samples: 49 days
    yield Case("flac-declares-2^36-samples", bytes(flac), ("longer than the limit", "truncated"))
    # The fact chunk of a compressed WAV declares a sample count: declare 2^32 - 1.
    yield Case("wav-fact-huge", wav(second, extra=chunk(b"fact", struct.pack("<I", 0xFFFFFFFF))))


def huge_metadata() -> Iterator[Case]:
    big = HUGE_METADATA_BYTES
    yield Case("mp3-id3-4MB", id3(id3_text_frame(b"TXXX", b"\x00" + b"x" * big)) + valid("mp3"))
    yield Case("mp3-id3-declares-256MB", id3(b"", declared=(1 << 28) - 1) + valid("mp3"))
    yield Case("mp3-id3-4MB-picture", id3(id3_text_frame(b"APIC", b"image/png\x00\x03\x00" + png()
                                                          + b"\x00" * big)) + valid("mp3"))
    yield Case("flac-vorbis-comment-4MB", flac_with_block(valid("flac"), 4, vorbis_comment(big)))
    yield Case("flac-picture-block-4MB", flac_with_block(valid("flac"), 6, struct.pack(
        ">II", 3, 9) + b"image/png" + struct.pack(">I", 0) + struct.pack(">IIIII", 16, 16, 24, 0, big)
        + b"\x00" * big))
    yield Case("wav-list-chunk-4MB", wav(pcm16(speech()), extra=chunk(b"LIST", b"INFO" + chunk(b"ICMT", b"x" * big))))
    for fmt, container, codec in (("ogg", "ogg", "libopus"), ("m4a", "ipod", "aac"),
                                  ("mkv", "matroska", "flac")):
        try:
            data = _mux(container, [_audio(codec)], metadata={"comment": "x" * big})
        except (av.error.FFmpegError, ValueError):
            continue
        yield Case(f"{fmt}-comment-4MB", data)


def nested_and_foreign() -> Iterator[Case]:
    wav_bytes = valid("wav")
    yield Case("wav-in-matroska", _mux("matroska", [_audio("pcm_s16le")]))
    yield Case("wav-in-mov", _mux("mov", [_audio("pcm_s16le")]))
    yield Case("flac-in-mp4", _mux("mp4", [_audio("flac")]))
    yield Case("video-only-mp4", _mux("mp4", [_video()]), ("audio stream",))
    yield Case("video-only-matroska", _mux("matroska", [_video("ffv1", pix_fmt="yuv420p")]),
               ("audio stream",))
    yield Case("video-and-audio-mp4", _mux("mp4", [_video(), _audio("aac")]))
    yield Case("two-audio-streams-mkv", _mux("matroska", [
        _audio("flac", np.zeros_like(speech())), _audio("libopus", rate=48000, layout="stereo",
                                                        audio=np.stack([speech(), speech()]))]))
    yield Case("stereo-and-mono-ogg", _mux("ogg", [_audio("libopus", layout="stereo",
                                                          audio=np.stack([speech(), -speech()]),
                                                          rate=48000)]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("speech.wav", wav_bytes)
    yield Case("zip-of-wav", buffer.getvalue())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("speech.wav", wav_bytes)
    yield Case("zip-stored-wav", buffer.getvalue())
    yield Case("gzip-of-wav", gzip.compress(wav_bytes, mtime=0))
    yield Case("png-image", png(), ("audio stream", "could not be decoded"))
    yield Case("png-magic-noise", b"\x89PNG\r\n\x1a\n" + noise(2000, SEED + 2), ("audio stream",))
    yield Case("jpeg-image", _mux("mjpeg", [_video("mjpeg", pix_fmt="yuvj420p", frames=1)]),
               ("audio stream", "could not be decoded"))
    yield Case("wav-inside-wav-data", wav(wav_bytes))
    yield Case("flac-after-garbage", noise(3000, SEED + 3) + valid("flac"))


GENERATORS = (plain_junk, malformed_headers, truncations, byte_flips, absurd_wav_headers,
              huge_metadata, nested_and_foreign)


@functools.lru_cache(maxsize=1)
def all_cases() -> Tuple[Case, ...]:
    cases = tuple(case for generate in GENERATORS for case in generate())
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def sample(count: int, seed: int = SEED) -> List[Case]:
    """A bounded, reproducible sample across all categories: every case with a required
    refusal first among equals, the rest drawn with a seeded generator."""
    cases = list(all_cases())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cases))
    certain = [cases[i] for i in order if cases[i].refuse]
    other = [cases[i] for i in order if not cases[i].refuse]
    half = min(len(certain), count // 2)
    return certain[:half] + other[:count - half]


# --- what a refusal must look like -------------------------------------------------------------

_NOT_FOR_CALLERS = (
    (re.compile(r"Traceback|File \"|line \d+, in "), "traceback text"),
    (re.compile(r"\[Errno\s*-?\d+\]|\berrno\b|AVERROR|-\d{7,}"), "a raw error code"),
    (re.compile(r"(?<![A-Za-z0-9])/(?:[\w.-]+/)+[\w.-]*|[A-Za-z]:\\\\"), "a file path"),
    (re.compile(r"<none>|\bNone\b|nan\b"), "a placeholder"),
    (re.compile(r"\b(?:InvalidDataError|FFmpegError|ValueError|IndexError|OSError|MemoryError|"
                r"OverflowError|ZeroDivisionError|KeyError|TypeError)\b"), "a Python class name"),
)


def sentence_problems(message: str) -> List[str]:
    """Why `message` is not a sentence a person can act on (empty when it is)."""
    problems = []
    if not message or len(message) > 400:
        problems.append(f"length {len(message)} (want 1..400)")
    if message and not (message[0].isupper() or message.startswith("AUDIO")):
        problems.append("does not start like a sentence")
    if not message.rstrip().endswith((".", "!")):
        problems.append("does not end with a full stop")
    if "\n" in message:
        problems.append("spans several lines")
    for pattern, what in _NOT_FOR_CALLERS:
        found = pattern.search(message)
        if found:
            problems.append(f"contains {what}: {found.group(0)!r}")
    return problems
