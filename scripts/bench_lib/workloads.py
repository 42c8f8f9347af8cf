"""Request payloads for the benchmark, built in memory from the recordings in ../shared/audio.

Every request carries DISTINCT audio: the recording is shifted by a few milliseconds of
silence, scaled by a random gain and given a faint dither before it is encoded again, so no
cache on any path (bytes, features, results) can answer a request from an earlier one. The
served system and the peers get payloads made by the same recipe from the same recordings.

short  one recording per request, cycled, re-encoded as 16 kHz mono WAV
long   the English recordings joined (with 1.5 s gaps) to at least --long-seconds, as FLAC
mix    80 % short, 20 % long (every fifth request is long)

English-only models (names ending in ".en") get only the English recordings in `short`: the
Mandarin one would only measure a model that cannot transcribe it. Multilingual models get all
four; their WER is averaged over English references only, CER over all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from whisper_ops import recordings as corpus

SAMPLE_RATE = corpus.SAMPLE_RATE
LONG_EVERY = 5  # mix: every fifth request is long (20 %)
MAX_SHIFT_SECONDS = 0.032
DITHER = 2e-4


@dataclass
class Request:
    payload: bytes
    seconds: float
    reference: str
    language: str
    kind: str  # "short" or "long"
    label: str  # recording name, or "long"


class WorkloadBuilder:
    def __init__(self, recordings: Sequence[corpus.Recording], long_seconds: float, seed: int):
        self.recordings = list(recordings)
        self.english = [r for r in self.recordings if r.language == "en"] or self.recordings
        self.long_seconds = long_seconds
        self.rng = np.random.default_rng(seed)
        self._decoded: Dict[str, np.ndarray] = {}
        self._long = None

    def _samples(self, recording: corpus.Recording) -> np.ndarray:
        if recording.name not in self._decoded:
            self._decoded[recording.name] = corpus.samples(recording)
        return self._decoded[recording.name]

    def _long_audio(self):
        if self._long is None:
            audio, offsets = corpus.joined(self.english, self.long_seconds)
            reference = " ".join(recording.transcript for _, recording in offsets)
            self._long = (audio, reference)
        return self._long

    def _perturb(self, audio: np.ndarray) -> np.ndarray:
        shift = int(self.rng.integers(1, int(MAX_SHIFT_SECONDS * SAMPLE_RATE)))
        gain = float(self.rng.uniform(0.8, 1.0))
        out = np.concatenate([np.zeros(shift, dtype=np.float32), audio * gain])
        out += self.rng.normal(0.0, DITHER, out.size).astype(np.float32)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def short(self, index: int) -> Request:
        recording = self.recordings[index % len(self.recordings)]
        audio = self._perturb(self._samples(recording))
        return Request(corpus.encode(audio, "wav"), audio.size / SAMPLE_RATE, recording.transcript,
                       recording.language, "short", recording.name)

    def long(self) -> Request:
        base, reference = self._long_audio()
        audio = self._perturb(base)
        return Request(corpus.encode(audio, "flac"), audio.size / SAMPLE_RATE, reference, "en",
                       "long", "long")

    def build(self, workload: str, count: int) -> List[Request]:
        requests = []
        for i in range(count):
            if workload == "long" or (workload == "mix" and i % LONG_EVERY == LONG_EVERY - 1):
                requests.append(self.long())
            elif workload in ("short", "mix"):
                requests.append(self.short(i))
            else:
                raise ValueError(f"unknown workload {workload!r}")
        return requests
