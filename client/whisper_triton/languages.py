"""The languages Whisper knows: the codes the LANGUAGE option accepts.

In Whisper's own order, which is the order of the language tokens in its vocabulary
(<|en|> first, <|yue|> last; large-v3 added "yue"). Codes are ISO 639-1 where one exists,
plus Whisper's "haw" (Hawaiian), "jw" (Javanese, Whisper's spelling of ISO "jv") and "yue"
(Cantonese). The multilingual models know all of them; the English-only ".en" models know "en".
"""

from __future__ import annotations

from typing import Tuple

LANGUAGES: Tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr",
    "pl", "ca", "nl", "ar", "sv", "it", "id", "hi", "fi", "vi",
    "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no",
    "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk",
    "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk",
    "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",
    "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc",
    "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)
