"""One normaliser for clean and verify: text folded so that spellings of one name compare equal.

Folding (per character, so every folded character maps back to its original position):
Unicode compatibility decomposition (NFKD: full-width Latin, half-width katakana, ligatures),
combining marks dropped (accents, Greek tonos, Russian ё -> е, dakuten), case folding, a few
letters without a decomposition (Turkish dotless ı, ø, æ, ł...), hiragana -> katakana (names
are given in either as their phonetic form, PS3.5 6.2.1.2).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import TypeVar

_EXTRA = {"ı": "i", "ø": "o", "đ": "d", "ł": "l", "æ": "ae", "œ": "oe", "ð": "d", "þ": "th", "ħ": "h"}
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "AE", "Ö": "OE", "Ü": "UE"})


@lru_cache(maxsize=8192)
def fold_char(char: str) -> str:
    """The folded form of one character (possibly empty, possibly several characters)."""
    if char.isascii():
        return char.lower()
    if "\uac00" <= char <= "\ud7a3":
        return char  # Hangul syllables stay whole: their letters are not accents
    decomposed = unicodedata.normalize("NFKD", char)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    out = []
    for c in kept:
        c = _EXTRA.get(c, c)
        if len(c) == 1 and "\u3041" <= c <= "\u3096":
            c = chr(ord(c) + 0x60)  # hiragana -> katakana
        out.append(c)
    return "".join(out)


def fold(text: str) -> str:
    """`text` folded (see the module docstring)."""
    if text.isascii():
        return text.lower()
    return "".join(fold_char(c) for c in text)


def name_variants(text: str) -> set[str]:
    """Folded spellings of a name: as written, with German umlauts written out (Müller ->
    mueller), and with written-out umlauts contracted (Mueller -> muller)."""
    folded = fold(text)
    variants = {folded, fold(text.translate(_GERMAN))}
    contracted = {v.replace("ae", "a").replace("oe", "o").replace("ue", "u") for v in variants}
    return {v for v in variants | contracted if v}


@dataclass(frozen=True)
class Folded:
    """Folded text and, for each folded character, the index of its original character."""

    text: str
    origin: tuple[int, ...]
    length: int  # of the original

    def original_span(self, start: int, end: int, original: str) -> tuple[int, int]:
        """The original span of folded [start, end), with trailing combining marks."""
        first = self.origin[start]
        last = self.origin[end - 1] + 1
        while last < self.length and not fold_char(original[last]):
            last += 1
        return first, last


# Short texts repeat between objects (a series' description, a protocol name), and what is
# derived from a text alone (its folding; in patterns.py and clean.py, the spans the patterns
# find) is computed once per process for those. Memory only and bounded (4,096 texts each);
# nothing of one object is compared with another's this way.
CACHED_TEXT = 256

_Result = TypeVar("_Result")


def remembered_for_short_texts(derive: Callable[[str], _Result]) -> Callable[[str], _Result]:
    """`derive`, remembered for texts of at most CACHED_TEXT characters (it must depend on the
    text alone and return an immutable value)."""
    remembered = lru_cache(maxsize=4096)(derive)

    @wraps(derive)
    def lookup(text: str) -> _Result:
        return remembered(text) if len(text) <= CACHED_TEXT else derive(text)

    return lookup


@remembered_for_short_texts
def folded(text: str) -> Folded:
    if text.isascii():
        return Folded(text.lower(), tuple(range(len(text))), len(text))
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        piece = fold_char(char)
        chars.append(piece)
        origin.extend([index] * len(piece))
    return Folded("".join(chars), tuple(origin), len(text))


def is_unspaced(char: str) -> bool:
    """True for scripts written without spaces between words (CJK, kana, Hangul, Thai...):
    names in them are matched as substrings, not as whole words."""
    code = ord(char)
    return (
        0x0E00 <= code <= 0x0EFF  # Thai, Lao
        or 0x1000 <= code <= 0x109F  # Myanmar
        or 0x1100 <= code <= 0x11FF  # Hangul Jamo
        or 0x2E80 <= code <= 0x9FFF  # CJK radicals, kana, CJK ideographs
        or 0xA960 <= code <= 0xA97F
        or 0xAC00 <= code <= 0xD7FF  # Hangul syllables
        or 0xF900 <= code <= 0xFAFF
        or 0xFF66 <= code <= 0xFFDC  # half-width katakana and Hangul
        or 0x20000 <= code <= 0x3FFFF
    )


def has_unspaced(text: str) -> bool:
    return not text.isascii() and any(is_unspaced(c) for c in text)
