"""Hours-long, low-bitrate uploads for the memory checks: a few megabytes that decode to
hundreds of megabytes of samples, the input that once ran the server out of memory.

The audio is built and encoded one second at a time, so making a 4-hour file never holds
4 hours of samples here either.
"""

from __future__ import annotations

import io
from typing import Sequence

import av
import numpy as np

from whisper_ops.recordings import ALL, SAMPLE_RATE, Recording, samples

NOISE_LEVEL = 0.003  # about -50 dBFS: room noise, not digital silence (Opus would skip that)


def long_opus(seconds: float, speech_every: float = 1800.0, bitrate: int = 8000,
              recordings: Sequence[Recording] = ALL, seed: int = 0) -> bytes:
    """Ogg Opus of `seconds` of quiet noise, with the recordings said one after another at
    the start of every `speech_every` seconds ("speech in parts")."""
    rng = np.random.default_rng(seed)
    speech = np.concatenate([np.concatenate([samples(r), np.zeros(SAMPLE_RATE // 2, np.float32)])
                             for r in recordings])
    period = int(speech_every * SAMPLE_RATE)
    total = int(seconds * SAMPLE_RATE)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = bitrate
        stream.options = {"compression_level": "0"}  # the fastest encoder: hours take seconds
        for start in range(0, total, SAMPLE_RATE):
            size = min(SAMPLE_RATE, total - start)
            chunk = rng.normal(0.0, NOISE_LEVEL, size).astype(np.float32)
            into = start % period
            if into < speech.size:
                said = speech[into:into + size]
                chunk[:said.size] += said
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="fltp", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def speech_parts(seconds: float, speech_every: float = 1800.0) -> int:
    """How many times the recordings are said in long_opus(seconds, speech_every)."""
    return int(np.ceil(seconds / speech_every))
