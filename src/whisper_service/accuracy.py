"""Word and character error rates, for tests and benchmarks (speed never bought with accuracy)."""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af])")
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


# --- Scoring as the literature does (../shared/evalset/README.md) -------------------------
# Whisper's normalisers: English for English, the basic one for other languages; Chinese is
# scored by characters after conversion to simplified ones. The packages are test and
# benchmark dependencies, imported on first use.

def _normalizer(language: str):
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    cache = _normalizer.__dict__.setdefault("cache", {})
    kind = "en" if language == "en" else "basic"
    if kind not in cache:
        cache[kind] = EnglishTextNormalizer() if kind == "en" else BasicTextNormalizer()
    return cache[kind]


def uses_characters(language: str) -> bool:
    return language in ("zh", "ja", "ko", "th", "yue")


def scoring_units(language: str, text: str) -> list:
    """The words (or, for Chinese and other unspaced scripts, characters) that are scored.

    language "mixed" (a recording that changes language): the basic normaliser, with each
    CJK character a unit of its own and every other word one unit.
    """
    if language in ("zh", "mixed"):
        import zhconv

        text = zhconv.convert(text, "zh-cn")
    normalized = _normalizer(language)(text)
    if uses_characters(language):
        return [c for c in normalized if not c.isspace()]
    if language == "mixed":
        return _CJK.sub(r" \1 ", normalized).split()
    return normalized.split()


def error_count(language: str, reference: str, hypothesis: str) -> tuple:
    """(edit errors, reference units): add these up over a corpus, then divide."""
    ref, hyp = scoring_units(language, reference), scoring_units(language, hypothesis)
    return edit_distance(ref, hyp), len(ref)
