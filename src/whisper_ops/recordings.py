"""The real recordings in ../shared/audio with their reference transcripts, and ways to decode,
re-encode and join them in memory (nothing is written next to the project).

Used by the soak run, the benchmark and the tests (tests/corpus.py re-exports this module).
WHISPER_TEST_AUDIO names another folder holding the same files.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import av
import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[2]
AUDIO_DIR = Path(os.environ.get("WHISPER_TEST_AUDIO", ROOT.parent / "shared" / "audio"))
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Recording:
    name: str
    language: str
    transcript: str

    @property
    def path(self) -> Path:
        return AUDIO_DIR / self.name

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


JFK = Recording("jfk.flac", "en", "And so my fellow Americans, ask not what your country can do "
                "for you, ask what you can do for your country.")
HOTWORDS = Recording("hotwords.mp3", "en", "Then you go into your ComfyUI folder again in the "
                     "ComfyUI folder.")
STEREO = Recording("stereo_diarization.wav", "en", "He began a confused complaint against the "
                   "wizard, who had vanished behind the curtain on the left.")
AISHELL = Recording("aishell_BAC009S0764W0121.wav", "zh", "甚至出现交易几乎停滞的情况")
ALL = (JFK, HOTWORDS, STEREO, AISHELL)
ENGLISH = (JFK, HOTWORDS, STEREO)


def samples(recording: Recording) -> np.ndarray:
    """16 kHz mono float32 samples, decoded the way the server decodes."""
    from whisper_service.audio import decode_audio

    return decode_audio(recording.read_bytes(), max_seconds=3600)


def encode(audio: np.ndarray, fmt: str, rate: int = SAMPLE_RATE, channels: int = 1) -> bytes:
    """Encode mono float32 samples to wav/flac (soundfile) or ogg/mp3/m4a (PyAV), in memory."""
    if channels == 2:
        audio = np.stack([audio, audio * 0.5], axis=1)
    if fmt in ("wav", "flac"):
        buffer = io.BytesIO()
        soundfile.write(buffer, audio, rate, format=fmt.upper(), subtype="PCM_16")
        return buffer.getvalue()
    codec, container = {"ogg": ("libopus", "ogg"), "mp3": ("libmp3lame", "mp3"),
                        "m4a": ("aac", "ipod")}[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        planar = np.ascontiguousarray(np.atleast_2d(audio.T if channels == 2 else audio)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=stream.layout.name)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Linear resampling, enough to test that the server resamples any rate back."""
    positions = np.arange(int(audio.size * rate / SAMPLE_RATE)) * SAMPLE_RATE / rate
    return np.interp(positions, np.arange(audio.size), audio).astype(np.float32)


def joined(recordings: Sequence[Recording], min_seconds: float, gap_seconds: float = 1.5
           ) -> Tuple[np.ndarray, List[Tuple[float, Recording]]]:
    """Recordings one after another (with silent gaps) until min_seconds; with their offsets."""
    pieces, offsets, position = [], [], 0.0
    decoded = {r.name: samples(r) for r in recordings}
    gap = np.zeros(int(gap_seconds * SAMPLE_RATE), dtype=np.float32)
    while position < min_seconds:
        for recording in recordings:
            offsets.append((position, recording))
            pieces += [decoded[recording.name], gap]
            position += (decoded[recording.name].size + gap.size) / SAMPLE_RATE
    return np.concatenate(pieces), offsets
