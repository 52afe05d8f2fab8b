"""The descriptor vocabulary of text = "allowlist" (and of Basic Profile text): words known
not to identify anyone. Shipped: descriptors.txt (English body parts, views, sequences,
contrast, modalities, units, plus common German, French, Spanish, Chinese, Japanese and Korean
descriptor terms); a site adds its own languages with `[deidentify] vocabulary_file`.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

from dicom_proxy.deidentify.text.normalise import fold, has_unspaced

_WORD = re.compile(r"[^\W_]+")


class Vocabulary:
    """Folded descriptor words; unspaced-script terms are matched as substrings."""

    def __init__(self, lines: list[str]) -> None:
        words: set[str] = set()
        for line in lines:
            line = line.split("#", 1)[0]
            words.update(_WORD.findall(fold(line)))
        self.words = frozenset(words)
        self._unspaced = sorted((w for w in words if has_unspaced(w)), key=len, reverse=True)

    def is_code(self, value: str) -> bool:
        """True when every word of `value` is a vocabulary word (a CS defined term such as
        TEXT or CT is a code, even when a name of the object is spelled the same)."""
        words = _WORD.findall(fold(value))
        return bool(words) and all(word in self.words for word in words)

    def unknown_parts(self, word: str) -> list[tuple[int, int]]:
        """Spans of `word` (unspaced script) not covered by vocabulary terms (longest first)."""
        spans: list[tuple[int, int]] = []
        index = 0
        while index < len(word):
            term = next((t for t in self._unspaced if word.startswith(t, index)), None)
            if term is not None:
                index += len(term)
                continue
            if word[index].isascii():
                end = index
                while end < len(word) and word[end].isascii():
                    end += 1
                if word[index:end] not in self.words and not word[index:end].isdigit():
                    spans.append((index, end))
                index = end
                continue
            spans.append((index, index + 1))
            index += 1
        return spans

    def extended(self, path: Path) -> Vocabulary:
        return Vocabulary([*self._lines(), *path.read_text(encoding="utf-8").splitlines()])

    def _lines(self) -> list[str]:
        return sorted(self.words)


@cache
def shipped() -> Vocabulary:
    text = resources.files("dicom_proxy.deidentify.text").joinpath("descriptors.txt").read_text(encoding="utf-8")
    return Vocabulary(text.splitlines())


def load(extra: Path | None) -> Vocabulary:
    """The shipped vocabulary plus the site's file (one or more words per line, # comments)."""
    return shipped() if extra is None else shipped().extended(extra)
