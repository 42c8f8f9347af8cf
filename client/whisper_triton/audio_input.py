"""Turn what a caller has (path, bytes, file object, numpy samples) into encoded file bytes.

The server only accepts encoded audio files, so samples are encoded here, in memory and
losslessly, and then take the same server path as any upload.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, Any, Optional, Union

import numpy as np

from .errors import InvalidArgumentError, InvalidAudioError

AudioInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], np.ndarray]

# What `whisper-triton` looks for when it walks a directory; the server takes anything
# PyAV decodes, so this list only filters directory walks, never explicit files.
AUDIO_EXTENSIONS = frozenset({
    ".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".wma",
    ".webm", ".mkv", ".aiff", ".aif", ".amr", ".3gp", ".mov", ".caf",
})

_MAX_CHANNELS = 16


def audio_to_bytes(audio: AudioInput, sample_rate: Optional[int] = None) -> bytes:
    """Encoded audio file bytes for the AUDIO input.

    Raises OSError (FileNotFoundError...) for paths that cannot be read, InvalidAudioError
    for empty input or unusable samples, InvalidArgumentError for a wrong kind of argument.
    """
    if isinstance(audio, np.ndarray):
        if sample_rate is None:
            raise InvalidArgumentError(
                "a numpy array needs sample_rate= (samples per second, e.g. 16000)")
        return encode_array(audio, sample_rate)
    if sample_rate is not None:
        raise InvalidArgumentError(
            "sample_rate= only applies to numpy arrays; encoded files carry their own rate")
    if isinstance(audio, (str, os.PathLike)):
        path = Path(audio)
        if str(audio) == "":
            raise InvalidArgumentError("audio path is empty")
        data = path.read_bytes()
        where = f" ({path})"
    elif isinstance(audio, (bytes, bytearray, memoryview)):
        data = bytes(audio)
        where = ""
    elif hasattr(audio, "read"):
        data = audio.read()
        if isinstance(data, str):
            raise InvalidArgumentError("the file object is in text mode; open it with 'rb'")
        data = bytes(data)
        where = ""
    else:
        raise InvalidArgumentError(
            f"audio must be a path, bytes, a binary file object or a numpy array, "
            f"not {type(audio).__name__}")
    if not data:
        raise InvalidAudioError(f"audio is empty{where}")
    return data


def encode_array(samples: Any, sample_rate: int) -> bytes:
    """Encode samples shaped (frames,) or (frames, channels) without loss.

    8/16-bit integers become 16-bit FLAC (compact, exact); wider integers 32-bit PCM WAV;
    floats 32-bit float WAV, the precision the server decodes to anyway.
    """
    import soundfile  # imported here: only numpy callers need libsndfile

    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise InvalidArgumentError(f"sample_rate must be an integer, not {sample_rate!r}")
    if not 1000 <= int(sample_rate) <= 384000:
        raise InvalidArgumentError(f"sample_rate {sample_rate} is not a plausible audio rate")
    array = np.asarray(samples)
    if array.ndim not in (1, 2):
        raise InvalidAudioError(
            f"samples must be shaped (frames,) or (frames, channels), not {array.shape}")
    if array.ndim == 2 and array.shape[1] > _MAX_CHANNELS:
        raise InvalidAudioError(
            f"samples shaped {array.shape} look like (channels, frames); pass array.T")
    if array.size == 0:
        raise InvalidAudioError("samples are empty")
    buffer = io.BytesIO()
    kind = array.dtype.kind
    if array.dtype in (np.int8, np.uint8, np.int16):
        # 8-bit PCM is scaled into int16 (uint8 is offset binary); both are exact.
        if array.dtype == np.uint8:
            array = (array.astype(np.int16) - 128) * 256
        elif array.dtype == np.int8:
            array = array.astype(np.int16) * 256
        soundfile.write(buffer, array, int(sample_rate), format="FLAC", subtype="PCM_16")
    elif kind == "u":
        raise InvalidAudioError(f"unsigned {array.dtype} samples are ambiguous; convert to int16/int32/float32")
    elif kind == "i":
        info = np.iinfo(np.int32)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidAudioError("integer samples exceed the 32-bit PCM range")
        soundfile.write(buffer, array.astype(np.int32), int(sample_rate), format="WAV",
                        subtype="PCM_32")
    elif kind == "f":
        array = array.astype(np.float32)
        if not np.all(np.isfinite(array)):
            raise InvalidAudioError("samples contain NaN or infinity")
        soundfile.write(buffer, array, int(sample_rate), format="WAV", subtype="FLOAT")
    else:
        raise InvalidAudioError(f"samples of dtype {array.dtype} are not audio")
    return buffer.getvalue()
