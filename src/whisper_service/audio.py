"""Turn uploaded bytes into 16 kHz mono float32 samples, in memory, with clear errors."""

from __future__ import annotations

import io

import av
import numpy as np

from whisper_service.errors import InvalidAudioError

SAMPLE_RATE = 16000


def decode_audio(data: bytes, max_seconds: float) -> np.ndarray:
    """Decode any container/codec PyAV reads; stereo is downmixed, any rate resampled.

    Never touches the file system: the bytes are wrapped in a BytesIO, so nothing in a
    request can name a path on the server.
    """
    if not data:
        raise InvalidAudioError("AUDIO is empty: send the bytes of an audio file.", "empty_audio")
    max_samples = int(max_seconds * SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidAudioError(
                    "AUDIO has no audio stream: send an audio file (WAV, FLAC, MP3, OGG, M4A...).",
                    "no_audio_stream",
                )
            declared_seconds = (container.duration or 0) / 1_000_000
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in _frames(container):
                for out in resampler.resample(frame):
                    total += _append(chunks, out, total, max_samples, max_seconds)
            for out in resampler.resample(None):
                total += _append(chunks, out, total, max_samples, max_seconds)
    except InvalidAudioError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as exc:
        raise InvalidAudioError(
            "AUDIO could not be decoded as audio "
            f"({type(exc).__name__}: {_short(exc)}); send a complete WAV, FLAC, MP3, OGG or "
            "M4A file.",
            "undecodable_audio",
        ) from exc
    audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    _refuse_truncated(data, declared_seconds, audio.size / SAMPLE_RATE)
    if not np.all(np.isfinite(audio)):
        raise InvalidAudioError(
            "AUDIO contains non-finite samples (NaN or infinity).", "non_finite_audio"
        )
    return audio


def _refuse_truncated(data: bytes, declared_seconds: float, decoded_seconds: float) -> None:
    """A file cut short would be transcribed as if its speech simply stopped: refuse it.

    FLAC and MP3 (and most containers) declare their length; WAV declares its data size,
    which FFmpeg does not check against the bytes that actually arrived.
    """
    missing = _riff_missing_bytes(data)
    if missing > 0:
        raise InvalidAudioError(
            f"AUDIO is truncated: its WAV header declares {missing} more bytes of samples than "
            "arrived; send the complete file.",
            "truncated_audio",
        )
    if declared_seconds >= 1.0 and decoded_seconds < 0.9 * declared_seconds - 0.5:
        raise InvalidAudioError(
            f"AUDIO is truncated: the file declares {declared_seconds:.1f} s but only "
            f"{decoded_seconds:.1f} s arrived; send the complete file.",
            "truncated_audio",
        )


def _riff_missing_bytes(data: bytes) -> int:
    """Bytes a RIFF/WAVE file's `data` chunk declares beyond what was received (0 if fine)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    position = 12
    while position + 8 <= len(data):
        chunk, size = data[position:position + 4], int.from_bytes(data[position + 4:position + 8], "little")
        if chunk == b"data":
            # 0 and 0xFFFFFFFF mean "unknown length" (streamed WAV): nothing to check.
            if size in (0, 0xFFFFFFFF):
                return 0
            return max(0, position + 8 + size - len(data))
        position += 8 + size + (size & 1)
    return 0


def _frames(container):
    """Decoded frames, skipping corrupt packets in the middle the way ffmpeg does."""
    stream = container.streams.audio[0]
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


def _append(chunks, frame, total: int, max_samples: int, max_seconds: float) -> int:
    samples = frame.to_ndarray().reshape(-1)
    if total + samples.size > max_samples:
        raise InvalidAudioError(
            f"AUDIO is longer than the limit of {max_seconds:g} s: split it, or raise "
            "max_audio_seconds on the server.",
            "audio_too_long",
        )
    chunks.append(samples.astype(np.float32, copy=False))
    return samples.size


def _short(exc: Exception, limit: int = 160) -> str:
    # FFmpeg errors carry errno noise and a '<none>' file name: keep the human part.
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or "no detail"
    return text if len(text) <= limit else text[: limit - 3] + "..."
