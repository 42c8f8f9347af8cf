"""One language per upload unless the speech really changes.

Windows are decoded apart (that is what lets the engine batch them), so each detects its own
language; a window of noise, or a short or unclear one, is easily taken for another language
and then transcribed into it. The upload's language is chosen from all windows, each weighted
by the speech the VAD hears in it; a window that disagrees without being confident is decoded
again in the upload's language, and a window that is confident keeps its own (a recording that
really changes language).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from whisper_service.window_result import WindowResult
from whisper_service.windows import Window, speech_seconds

# A window keeps a language other than the upload's only with at least this probability.
# Measured on ../shared/evalset joined into long recordings: windows of real German, French or
# English speech after another language scored 0.9 and more; noise windows taken for Japanese or
# English, and short Mandarin windows taken for Cantonese or Japanese, scored under 0.7.
CONFIDENT_LANGUAGE = 0.8
# ... and is decoded in the upload's language only if that one has at least this probability
# in the window too: in a recording of English, French, Italian and Portuguese sentences, an
# English window unsure between Latin (0.50) and English (0.34) was otherwise forced into
# French, the language of the upload's largest window.
PLAUSIBLE = 0.1


def upload_language(windows: Sequence[Window], detected: Mapping[int, Mapping[str, float]],
                    indices: Sequence[int], evidence: Sequence[Tuple[int, int]]
                    ) -> Optional[str]:
    """The language most of the upload's speech is in, by speech-weighted probabilities of
    the languages detected for these windows."""
    scores: Dict[str, float] = defaultdict(float)
    for i in indices:
        if i not in detected:
            continue
        weight = speech_seconds(windows[i], evidence) or 0.01 * windows[i].duration
        for language, probability in detected[i].items():
            scores[language] += weight * probability
    return max(scores, key=scores.get) if scores else None


def disagreeing_windows(results: Sequence[Optional[WindowResult]], indices: Sequence[int],
                        language: Optional[str]) -> List[int]:
    """Windows detected as another language than the upload's, without confidence, for
    which the upload's language is plausible too."""
    if language is None:
        return []
    chosen = []
    for i in indices:
        result = results[i]
        if (result and result.language != language
                and result.language_probability < CONFIDENT_LANGUAGE
                and result.language_probs.get(language, 0.0) >= PLAUSIBLE):
            chosen.append(i)
    return chosen
