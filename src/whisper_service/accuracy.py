"""Word and character error rates, for tests and benchmarks (speed never bought with accuracy)."""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

_PUNCT = re.compile(r"[^\w\s']|_", re.UNICODE)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text).replace("'", "")
    return " ".join(text.split())


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    return edit_distance(ref, hyp) / max(1, len(ref))


def cer(reference: str, hypothesis: str) -> float:
    ref = normalize(reference).replace(" ", "")
    hyp = normalize(hypothesis).replace(" ", "")
    return edit_distance(ref, hyp) / max(1, len(ref))
