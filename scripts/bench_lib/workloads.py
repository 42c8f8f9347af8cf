"""Request payloads for the benchmark, built in memory from the recordings in ../shared/audio.

Every request carries DISTINCT audio: the recording is shifted by a few milliseconds of
silence, scaled by a random gain and given a faint dither before it is encoded again, so no
cache on any path (bytes, features, results) can answer a request from an earlier one. The
served system and the peers get payloads made by the same recipe from the same recordings.

short  one recording per request, cycled, re-encoded as 16 kHz mono WAV
long   the English recordings joined (with 1.5 s gaps) to at least --long-seconds, as FLAC
mix    80 % short, 20 % long (every fifth request is long)
fairness corpus:detected with intruders: one long recording (--long-seconds) sent first and a few
       clips that fall back through every temperature (evalset speech played backwards) spread
       through the level; the evalset clips' latency is compared with corpus:detected's at the
       same concurrency (head-of-line blocking by long or slow windows)
corpus every file of the real evalset (../shared/evalset: 66 files, en zh de fr it pt), the
       languages interleaved (en, zh, de, fr, it, pt, en, zh, en, zh, ... : a short level still
       sees every language), cycled when a level asks for more, re-encoded as 16 kHz mono
       WAV; two
       sub-workloads: `corpus:detected` (the language detected, as clients usually send) and
       `corpus:given` (each file's evalset language sent with it, to the server and the peers)

English-only models (names ending in ".en") get only the English recordings in `short`: the
Mandarin one would only measure a model that cannot transcribe it. Multilingual models get all
four; their WER is averaged over English references only, CER over all. In `corpus`, an
English-only model gets the English files only (the skipped ones are listed in the report);
corpus rows are scored per language over the whole level (report.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from whisper_ops import recordings as corpus

SAMPLE_RATE = corpus.SAMPLE_RATE
LONG_EVERY = 5  # mix: every fifth request is long (20 %)
FALLBACK_CLIPS = 3  # fairness: clips that fall back through temperatures, besides the long one
MAX_SHIFT_SECONDS = 0.032
DITHER = 2e-4


@dataclass
class Request:
    payload: bytes
    seconds: float
    reference: str
    language: str
    kind: str  # "short", "long", "corpus" or "fallback"
    label: str  # recording name, "long", or the evalset path
    given_language: Optional[str] = None  # sent with the request (corpus:given), else detected


CORPUS_MODES = ("detected", "given")


def corpus_workloads(modes: Sequence[str]) -> List[str]:
    """The sub-workloads of `corpus` for the --language choice: corpus:detected, corpus:given."""
    return [f"corpus:{mode}" for mode in CORPUS_MODES if mode in modes]


def is_corpus(workload: str) -> bool:
    return workload.split(":")[0] == "corpus"


def interleave(files: Sequence[corpus.EvalFile]) -> List[corpus.EvalFile]:
    """Files taken one language at a time in turn (languages in order of first appearance, each
    language's files in manifest order), so any prefix covers as many languages as it can."""
    by_language: Dict[str, List[corpus.EvalFile]] = {}
    for item in files:
        by_language.setdefault(item.language, []).append(item)
    out: List[corpus.EvalFile] = []
    for rank in range(max((len(v) for v in by_language.values()), default=0)):
        out += [group[rank] for group in by_language.values() if rank < len(group)]
    return out


class WorkloadBuilder:
    def __init__(self, recordings: Sequence[corpus.Recording], long_seconds: float, seed: int,
                 evalset: Sequence[corpus.EvalFile] = (), evalset_dir=None):
        self.recordings = list(recordings)
        self.evalset = interleave(evalset)
        self.evalset_dir = evalset_dir
        self.english = [r for r in self.recordings if r.language == "en"] or self.recordings
        self.long_seconds = long_seconds
        self.rng = np.random.default_rng(seed)
        self._decoded: Dict[str, np.ndarray] = {}
        self._long = None

    def _samples(self, recording) -> np.ndarray:
        if recording.name not in self._decoded:
            self._decoded[recording.name] = (
                corpus.evalset_samples(recording, self.evalset_dir)
                if isinstance(recording, corpus.EvalFile) else corpus.samples(recording))
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

    def corpus_file(self, index: int, language_given: bool) -> Request:
        item = self.evalset[index % len(self.evalset)]
        audio = self._perturb(self._samples(item))
        return Request(corpus.encode(audio, "wav"), audio.size / SAMPLE_RATE, item.reference,
                       item.language, "corpus", item.path,
                       item.language if language_given else None)

    def fallback_clip(self, index: int) -> Request:
        """An evalset English file played backwards: speech-like sound in no language, which
        Whisper decodes with low confidence at every temperature (no reference: not scored)."""
        english = [f for f in self.evalset if f.language == "en"] or self.evalset
        item = english[index % len(english)]
        audio = self._perturb(self._samples(item)[::-1].copy())
        return Request(corpus.encode(audio, "wav"), audio.size / SAMPLE_RATE, "", "", "fallback",
                       f"{item.path} (reversed)")

    def fairness(self, count: int) -> List[Request]:
        """`count` evalset clips (language detected), the long recording first and
        FALLBACK_CLIPS reversed clips spread evenly among them."""
        requests = [self.long()] + [self.corpus_file(i, False) for i in range(count)]
        for k in range(FALLBACK_CLIPS, 0, -1):
            requests.insert(1 + k * count // (FALLBACK_CLIPS + 1), self.fallback_clip(k))
        return requests

    def build(self, workload: str, count: int) -> List[Request]:
        if workload == "fairness":
            if not self.evalset:
                raise ValueError("the fairness workload needs the evalset (../shared/evalset)")
            return self.fairness(count)
        if is_corpus(workload):
            mode = workload.partition(":")[2] or "detected"
            if mode not in CORPUS_MODES:
                raise ValueError(f"unknown workload {workload!r}")
            if not self.evalset:
                raise ValueError("the corpus workload needs the evalset (../shared/evalset)")
            return [self.corpus_file(i, mode == "given") for i in range(count)]
        requests = []
        for i in range(count):
            if workload == "long" or (workload == "mix" and i % LONG_EVERY == LONG_EVERY - 1):
                requests.append(self.long())
            elif workload in ("short", "mix"):
                requests.append(self.short(i))
            else:
                raise ValueError(f"unknown workload {workload!r}")
        return requests
