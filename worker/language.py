"""Which language a topic or script is in, told by the script its letters are written in.

A text written mostly in Latin letters is taken as English (the language the offline
writer writes and the bundled voice speaks); Cyrillic as Russian, Greek as Greek,
Arabic, Hebrew, Devanagari (Hindi), Thai; Han with kana as Japanese, with Hangul as
Korean, alone as Chinese. Good enough to choose a voice and a CJK font face; a writer
or voice for another Latin-script language would need the user to say so.
"""
from __future__ import annotations

import unicodedata
from collections import Counter

NAMES = {"en": "English", "ru": "Russian", "el": "Greek", "ar": "Arabic", "he": "Hebrew", "hi": "Hindi",
         "th": "Thai", "ja": "Japanese", "ko": "Korean", "zh": "Chinese", "und": "this language"}


def script_of(char: str) -> str | None:
    """The writing system of a letter (None for digits, punctuation, symbols, emoji)."""
    if not char.isalpha():
        return None
    code = ord(char)
    if 0x3040 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF:
        return "kana"
    if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return "hangul"
    try:
        name = unicodedata.name(char)
    except ValueError:
        return None
    for prefix, script in (("LATIN", "latin"), ("CYRILLIC", "cyrillic"), ("GREEK", "greek"),
                           ("ARABIC", "arabic"), ("HEBREW", "hebrew"), ("DEVANAGARI", "devanagari"),
                           ("THAI", "thai"), ("CJK", "han")):
        if name.startswith(prefix):
            return script
    return "other"


_LANGUAGE_OF_SCRIPT = {"latin": "en", "cyrillic": "ru", "greek": "el", "arabic": "ar", "hebrew": "he",
                       "devanagari": "hi", "thai": "th", "hangul": "ko", "kana": "ja", "han": "zh", "other": "und"}


def detect(text: str) -> str:
    """The language of `text` by its commonest script (kana or Hangul among Han decide
    Japanese or Korean); English when it has no letters at all."""
    counts = Counter(s for s in map(script_of, text) if s)
    if not counts:
        return "en"
    if counts["han"] and (counts["kana"] or counts["hangul"]):
        cjk = "kana" if counts["kana"] >= counts["hangul"] else "hangul"
        counts[cjk] += counts.pop("han")
    return _LANGUAGE_OF_SCRIPT[counts.most_common(1)[0][0]]


def speakable(word: str, language: str) -> bool:
    """Whether a voice for `language` can say `word`: it has letters or digits of that
    language's script (a Japanese word in an English sentence is shown, not spoken)."""
    return any(ch.isdigit() or _LANGUAGE_OF_SCRIPT.get(script_of(ch) or "", None) == language
               or (language == "ja" and script_of(ch) == "han") for ch in word)


def spaced(language: str) -> bool:
    """Whether the language separates words with spaces (CJK and Thai do not)."""
    return language not in ("ja", "zh", "th")
