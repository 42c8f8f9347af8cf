"""The RESULT schema of model `whisper`, defined once for the server and the client.

The server builds a `Transcription` and sends `to_json()` in its RESULT output; the client
parses it back with `Transcription.from_json()`. Times are seconds on the timeline of the
uploaded audio (absolute, not per window).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class Word:
    start: float
    """Start of the word in seconds."""
    end: float
    """End of the word in seconds."""
    word: str
    """The word as decoded, with its leading space or punctuation."""
    probability: float
    """Mean token probability of the word, 0 to 1."""


@dataclass
class Segment:
    id: int
    """Position of the segment in the transcript, from 0."""
    start: float
    """Start of the segment in seconds."""
    end: float
    """End of the segment in seconds."""
    text: str
    """Text of the segment."""
    avg_logprob: float = 0.0
    """Average log probability of the decoded tokens of its window."""
    no_speech_prob: float = 0.0
    """Probability that its window holds no speech."""
    compression_ratio: float = 0.0
    """gzip compression ratio of the text; high values mean repetition."""
    temperature: float = 0.0
    """Sampling temperature the window was finally decoded with."""
    language: Optional[str] = None
    """Language the segment's window was decoded in (differs in mixed-language audio)."""
    words: Optional[List[Word]] = None
    """Word timings, when word timestamps were asked for."""


@dataclass
class Transcription:
    text: str
    """The whole transcript."""
    language: Optional[str]
    """Language of the audio: the one asked for, or the one detected for most of the speech."""
    language_probability: float
    """Confidence of the detected language (1.0 when the language was given)."""
    duration: float
    """Length of the decoded audio in seconds."""
    task: str = "transcribe"
    """transcribe or translate."""
    segments: List[Segment] = field(default_factory=list)
    """Segments in time order."""
    duration_after_vad: Optional[float] = None
    """Seconds of audio left after voice activity detection, when VAD was on."""

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        for segment in data["segments"]:
            if segment["words"] is None:
                del segment["words"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Transcription":
        segments = []
        for raw in data.get("segments", []):
            raw = dict(raw)
            words = raw.pop("words", None)
            known = {k: v for k, v in raw.items() if k in Segment.__dataclass_fields__}
            segments.append(
                Segment(**known, words=[Word(**w) for w in words] if words is not None else None)
            )
        known = {
            k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "segments"
        }
        return cls(**known, segments=segments)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Transcription":
        return cls.from_dict(json.loads(text))

    @property
    def words(self) -> List[Word]:
        """All words of all segments, in order (empty without word timestamps)."""
        return [w for s in self.segments for w in (s.words or [])]
