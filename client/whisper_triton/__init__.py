"""Python client of the Whisper speech-to-text service on Triton Inference Server.

    from whisper_triton import WhisperClient
    with WhisperClient("localhost:8001") as client:
        print(client.transcribe("talk.flac", language="en").text)

`AsyncWhisperClient` is the asyncio twin; `whisper_triton.writers` renders results as
txt/json/srt/vtt/tsv; `whisper-triton` is the command-line tool. `OPTIONS` lists the decoding
options (keyword, input tensor, default, rule) and `LANGUAGES` the language codes they accept.
"""

from .aio import AsyncWhisperClient
from .client import WhisperClient
from .errors import (
    InvalidArgumentError,
    InvalidAudioError,
    OverloadedError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    WhisperError,
)
from .languages import LANGUAGES
from .options import OPTIONS, InvalidOptionError, TranscribeOptions
from .result import Segment, Transcription, Word
from .writers import FORMATS, format_result, write_result

__all__ = [
    "WhisperClient",
    "AsyncWhisperClient",
    "Transcription",
    "Segment",
    "Word",
    "WhisperError",
    "InvalidArgumentError",
    "InvalidOptionError",
    "InvalidAudioError",
    "ServerUnavailableError",
    "OverloadedError",
    "RequestTimeoutError",
    "ServerError",
    "TranscribeOptions",
    "OPTIONS",
    "LANGUAGES",
    "FORMATS",
    "format_result",
    "write_result",
]
