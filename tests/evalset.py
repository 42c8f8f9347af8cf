"""The real recordings of ../shared/evalset (66 files, references in manifest.tsv), scoring
per language, and long recordings joined from them in memory (nothing is written). Loading
and scoring are whisper_ops.recordings', which the benchmark uses too."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from whisper_ops.recordings import (EVALSET_DIR, SAMPLE_RATE, EvalFile, corpus_rates,
                                    evalset_available, evalset_files, evalset_samples)


class Utterance(EvalFile):
    """An evalset file, as the accuracy check reads it."""

    @property
    def speaker(self) -> str:
        """LibriSpeech's speaker id (file names are speaker-chapter-utterance)."""
        return Path(self.path).name.split("-")[0]


@lru_cache(maxsize=1)
def utterances() -> Tuple[Utterance, ...]:
    return tuple(Utterance(f.path, f.language, f.duration, f.reference) for f in evalset_files())


available = evalset_available
rates = corpus_rates


@lru_cache(maxsize=None)
def samples(path: str) -> np.ndarray:
    return evalset_samples(EvalFile(path, "", 0.0, ""))


# --- long recordings ------------------------------------------------------------------------

@dataclass
class LongRecording:
    name: str
    audio: np.ndarray
    pieces: List[Tuple[float, Utterance]]
    """(start second in the recording, utterance) for each utterance joined in."""

    @property
    def reference(self) -> str:
        return " ".join(u.reference for _, u in self.pieces)

    @property
    def language(self) -> str:
        return self.pieces[0][1].language


def quiet_noise(seconds: float, rng: np.random.Generator, dbfs: float = -40.0) -> np.ndarray:
    """Gaussian room noise at about `dbfs` (RMS relative to full scale)."""
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 10 ** (dbfs / 20)).astype(np.float32)


def join(name: str, chosen: Sequence[Utterance], gaps: Sequence[float], noise_dbfs=None,
         seed: int = 0) -> LongRecording:
    """Utterances one after another, gaps[i] seconds before utterance i (silence, or quiet
    noise under everything when noise_dbfs is given)."""
    rng = np.random.default_rng(seed)
    parts, pieces, position = [], [], 0.0
    for gap, utterance in zip(gaps, chosen):
        parts.append(np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32))
        position += parts[-1].size / SAMPLE_RATE
        pieces.append((position, utterance))
        parts.append(samples(utterance.path))
        position += parts[-1].size / SAMPLE_RATE
    parts.append(np.zeros(int(2.0 * SAMPLE_RATE), dtype=np.float32))
    audio = np.concatenate(parts)
    if noise_dbfs is not None:
        audio = audio + quiet_noise(audio.size / SAMPLE_RATE, rng, noise_dbfs)
    return LongRecording(name, np.clip(audio, -1, 1).astype(np.float32), pieces)


def long_recordings() -> List[LongRecording]:
    """Minutes of continuous reading (one LibriSpeech speaker's consecutive sentences), with
    and without pauses of quiet noise; Mandarin sentences between long noisy pauses; and
    recordings that change language."""
    by_speaker: Dict[str, List[Utterance]] = defaultdict(list)
    for u in utterances():
        if "librispeech" in u.path:
            by_speaker[u.speaker].append(u)
    speakers = sorted(by_speaker, key=lambda s: -sum(u.duration for u in by_speaker[s]))
    reading = by_speaker[speakers[0]]
    second = by_speaker[speakers[1]]
    mandarin = [u for u in utterances() if u.language == "zh"]
    others = [u for u in utterances() if "picovoice" in u.path and u.language != "en"]
    rng = np.random.default_rng(7)
    return [
        join("continuous_reading", reading, [0.3] * len(reading)),
        join("reading_with_noisy_pauses", second, list(rng.uniform(3, 12, len(second))),
             noise_dbfs=-40, seed=1),
        join("mandarin_with_noisy_pauses", mandarin, list(rng.uniform(8, 16, len(mandarin))),
             noise_dbfs=-40, seed=2),
        # English read to near the end of the first 30 s window, then other languages.
        join("english_then_other_languages", _fill(reading, 29.0) + others,
             [0.2] * len(_fill(reading, 29.0)) + [1.0] * len(others)),
        join("mandarin_then_english", mandarin[:5] + second[:4], [0.5] * 9),
    ]


def _fill(chosen: Sequence[Utterance], seconds: float) -> List[Utterance]:
    """Utterances (in reading order) that fill as much of `seconds` as they can, gaps of 0.2 s
    included: the first that fit, then the longest that still fits, and so on."""
    out, total = [], 0.0
    for u in sorted(chosen, key=lambda u: u.path):
        if total + u.duration + 0.2 <= seconds:
            out.append(u)
            total += u.duration + 0.2
    return sorted(out, key=lambda u: u.path)
