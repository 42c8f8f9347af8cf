"""How much a transcript says, comparable across scripts."""

from __future__ import annotations


def text_weight(text: str) -> int:
    """Letters and digits, a CJK character counting three (it carries about a word).

    Read English weighs about 12 per second of speech, Mandarin about 13: a window or clip whose
    text weighs much less than its speech lost some of it (see pipeline.split_sparse and
    quality.too_sparse_for_clip).
    """
    return sum(3 if "\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" else 1
               for ch in text if ch.isalnum())
