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
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

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


# --- the real-speech evaluation set (../shared/evalset) -------------------------------------
# 66 files in several languages with reference transcripts (manifest.tsv); see its README.
# WHISPER_TEST_EVALSET names another folder holding the same files.

EVALSET_DIR = Path(os.environ.get("WHISPER_TEST_EVALSET", ROOT.parent / "shared" / "evalset"))


@dataclass(frozen=True)
class EvalFile:
    path: str  # relative to EVALSET_DIR
    language: str  # ISO 639-1
    duration: float
    reference: str

    @property
    def name(self) -> str:
        return self.path

    def read_bytes(self, folder: Optional[Path] = None) -> bytes:
        return ((folder or EVALSET_DIR) / self.path).read_bytes()


def evalset_available(folder: Optional[Path] = None) -> bool:
    return ((folder or EVALSET_DIR) / "manifest.tsv").is_file()


def evalset_files(folder: Optional[Path] = None) -> Tuple[EvalFile, ...]:
    """Every file of the evaluation set, in manifest order."""
    import csv

    with open((folder or EVALSET_DIR) / "manifest.tsv", newline="", encoding="utf-8") as handle:
        return tuple(EvalFile(row["path"], row["language"], float(row["duration_seconds"]),
                              row["reference"])
                     for row in csv.DictReader(handle, delimiter="\t"))


def evalset_samples(item: EvalFile, folder: Optional[Path] = None) -> np.ndarray:
    """16 kHz mono float32 samples of one evalset file, decoded the way the server decodes."""
    from whisper_service.audio import decode_audio

    return decode_audio(item.read_bytes(folder), max_seconds=3600)


def corpus_rates(items: Iterable[Tuple[str, str, str]]) -> Dict[str, Tuple[float, int, int]]:
    """Corpus-level error rate per language from (language, reference, hypothesis), scored as
    the evalset README says (whisper_service.accuracy.error_count: Whisper's normalisers, CER
    for Chinese): {language: (rate, errors, reference units)}, languages sorted."""
    from whisper_service.accuracy import error_count

    errors: Dict[str, int] = {}
    units: Dict[str, int] = {}
    for language, reference, hypothesis in items:
        e, n = error_count(language, reference, hypothesis)
        errors[language] = errors.get(language, 0) + e
        units[language] = units.get(language, 0) + n
    return {lang: (errors[lang] / max(1, units[lang]), errors[lang], units[lang])
            for lang in sorted(units)}
