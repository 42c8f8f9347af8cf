"""What the engine answers for one window: the one schema of the BLS payload.

The engine builds these, packing splits them per clip, the front's pipeline settles and
retries them, and stitch puts them on the upload's time line. Times are in window time
(seconds from the window's first sample). On the wire each is a JSON object
(`to_json`/`from_json`); everywhere else it is read by attribute, never by key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional


@dataclass
class WordTiming:
    start: float
    end: float
    word: str
    probability: float


@dataclass
class WindowSegment:
    start: float
    end: float
    text: str
    words: Optional[List[WordTiming]] = None
    """Word timings, when they were asked for (or needed to split a packed window)."""
    unfinished: bool = False
    """Text after Whisper's last timestamp: kept only if decoding the rest finds nothing."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WindowSegment":
        words = data.get("words")
        return cls(start=float(data["start"]), end=float(data["end"]), text=str(data["text"]),
                   words=None if words is None else [WordTiming(**w) for w in words],
                   unfinished=bool(data.get("unfinished", False)))


@dataclass
class WindowResult:
    language: str
    language_probability: float
    language_probs: Dict[str, float]
    """The most probable languages when detected (the upload's language is voted from
    these); only the given language, at 1.0, when it was given."""
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    temperature: float
    segments: List[WindowSegment] = field(default_factory=list)
    covered: Optional[float] = None
    """Window time up to which the text is complete; the front decodes the rest again as a
    new window. None: the whole window."""

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        for segment in data["segments"]:
            if segment["words"] is None:
                del segment["words"]
            if not segment["unfinished"]:
                del segment["unfinished"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WindowResult":
        known = {f.name for f in fields(cls)} - {"segments"}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**values, segments=[WindowSegment.from_dict(s) for s in data["segments"]])

    @classmethod
    def from_json(cls, text: str | bytes) -> "WindowResult":
        return cls.from_dict(json.loads(text))
