"""Clean free text (PS3.15 E.3.5 Clean Descriptors, action C): keep useful words, drop identifiers.

Removed: every word equal (case-insensitively) to a word of an identifying value of the same
object (person names, IDs, accession number, institution, address...), dates, times, phone
numbers, e-mail addresses and runs of 5 or more digits.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+")
_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_PATTERNS = re.compile(
    "|".join(
        (
            r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",  # e-mail
            r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b",  # 2020-01-31
            r"\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b",  # 31/01/2020, 1.2.20
            rf"\b\d{{1,2}}\s*{_MONTHS}\s*\d{{2,4}}\b",  # 31 Jan 2020
            rf"\b{_MONTHS}\s*\d{{1,2}},?\s*\d{{2,4}}\b",  # Jan 31, 2020
            r"\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[ap]\.?m\.?\b)?",  # 14:05, 2:05 pm
            r"\+?\(?\d[\d\s().-]{6,}\d",  # phone numbers
            r"\d{5,}",  # long digit runs (dates as YYYYMMDD, MRNs, ...)
        )
    ),
    re.IGNORECASE,
)
_SPACES = re.compile(r"\s{2,}")
_EDGE = " \t,;:/-"


def identifier_words(value: str) -> set[str]:
    """The case-folded words (2+ characters) of an identifying value, e.g. a Patient's Name."""
    return {word.casefold() for word in _WORD.findall(value) if len(word) >= 2}


def clean_text(value: str, identifiers: frozenset[str], patterns: bool = True) -> str:
    """`value` without identifying words, dates, times, phones, e-mails and long digit runs.

    `patterns=False` removes identifying words only (for code strings, whose digits are codes).
    """
    if not value:
        return value
    text = _PATTERNS.sub(" ", value) if patterns else value
    text = _WORD.sub(lambda m: "" if m.group().casefold() in identifiers else m.group(), text)
    return _SPACES.sub(" ", text).strip(_EDGE)
