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
    if not np.all(np.isfinite(audio)):
        raise InvalidAudioError(
            "AUDIO contains non-finite samples (NaN or infinity).", "non_finite_audio"
        )
    return audio


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
    text = str(exc).strip() or "no detail"
    return text if len(text) <= limit else text[: limit - 3] + "..."
