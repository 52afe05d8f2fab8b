"""Clean free text (PS3.15 E.3.5 Clean Descriptors, action C).

Three strengths (policy.TextMode), all on folded text (normalise.py) mapped back to the
original characters:
- WORDS (code strings, code values): the identifying terms of the object only.
- CLEAN: also dates in any notation, ages over 89, times, phones, e-mails, UIDs, identifiers
  (runs of letters and 4+ digits) and names after a title or relation (patterns.py).
- ALLOWLIST: after CLEAN, only words of the descriptor vocabulary (vocabulary.py) and numbers
  stay; everything else goes.
"""

from __future__ import annotations

import re

from dicom_proxy.deidentify.text.names import Matcher
from dicom_proxy.deidentify.text.normalise import Folded, folded, has_unspaced, remembered_for_short_texts
from dicom_proxy.deidentify.text.patterns import (
    RELATIONS,
    SUFFIXES,
    TITLES,
    UNSPACED_TITLE,
    is_measurement,
    scrub_spans,
)
from dicom_proxy.deidentify.text.vocabulary import Vocabulary
from dicom_proxy.policy import TextMode

_TOKEN = re.compile(r"[^\W_]+")
_SPACES = re.compile(r"\s{2,}")
_ORPHAN = re.compile(r"(?<=\s)[-_/.,;:^'’]+(?=\s)")
_EDGE = " \t,;:/-_.^"
_NAME_JOIN = re.compile(r"[\s'’.-]{1,3}")


class TextCleaner:
    """Cleans the text of one object (its Matcher) with the site's vocabulary."""

    def __init__(self, matcher: Matcher, vocabulary: Vocabulary) -> None:
        self.matcher = matcher
        self.vocabulary = vocabulary

    def clean(self, value: str, mode: TextMode) -> str:
        """`value` without what `mode` removes; "" when nothing is left."""
        if not value:
            return value
        text = value
        for attempt in range(3):  # removing text can join what is left into a new match
            cleaned = self._once(text, mode, titled=attempt == 0)
            if cleaned == text:
                break
            text = cleaned
        return text

    def _once(self, value: str, mode: TextMode, titled: bool) -> str:
        fold = folded(value)
        spans = self._identifying(fold)
        if mode is not TextMode.WORDS:
            spans.extend(scrub_spans(fold.text))
            if titled:  # once: a title whose name went must not take the next word
                spans.extend(_titled(value))
        if mode is TextMode.ALLOWLIST:
            spans.extend(self._not_allowed(fold.text, spans))
        return _remove(value, fold, spans)

    def _identifying(self, fold: Folded) -> list[tuple[int, int]]:
        text = fold.text
        spans = [(hit.start, hit.end) for hit in self.matcher.hits(text)]
        tokens = list(_TOKEN.finditer(text))
        for token in tokens:
            if token.group() in self.matcher.words:
                spans.append(token.span())
        # Initials ("J. Smith", "Smith, John Q") next to a removed name.
        removed = [any(s <= t.start() and t.end() <= e for s, e in spans) for t in tokens]
        for _ in range(3):
            changed = False
            for index, token in enumerate(tokens):
                word = token.group()
                if removed[index] or len(word) != 1 or word not in self.matcher.initials:
                    continue
                if (index > 0 and removed[index - 1]) or (index + 1 < len(tokens) and removed[index + 1]):
                    removed[index] = changed = True
                    spans.append(token.span())
            if not changed:
                break
        return spans

    def _not_allowed(self, text: str, removed: list[tuple[int, int]]) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        for token in _TOKEN.finditer(text):
            word = token.group()
            if is_measurement(word) or word in self.vocabulary.words:
                continue
            if has_unspaced(word):
                spans.extend((token.start() + s, token.start() + e) for s, e in self.vocabulary.unknown_parts(word))
            else:
                spans.append(token.span())
        return spans


@remembered_for_short_texts
def _titled(original: str) -> tuple[tuple[int, int], ...]:
    """Names after a title ("Dr. X") or a relation ("wife X"), or before a suffix ("X MD")."""
    return tuple(_titled_spans(original, folded(original)))


def _titled_spans(original: str, fold: Folded) -> list[tuple[int, int]]:
    text = fold.text
    spans: list[tuple[int, int]] = []
    tokens = list(_TOKEN.finditer(text))
    for index, token in enumerate(tokens):
        word = token.group()
        following = text[token.end() : token.end() + 1]
        is_title = word in TITLES or (following == "." and f"{word}." in TITLES)
        if not is_title and word not in RELATIONS:
            continue
        taken = 0
        previous_end = token.end()
        for candidate in tokens[index + 1 : index + 4]:
            gap = text[previous_end : candidate.start()]
            if taken and not _NAME_JOIN.fullmatch(gap):
                break
            if not taken and gap.strip(" .:,") != "" and not _NAME_JOIN.fullmatch(gap):
                break
            start, _ = fold.original_span(candidate.start(), candidate.end(), original)
            capital = original[start].isupper()
            if any(c.isdigit() for c in candidate.group()) or candidate.group() in TITLES:
                if candidate.group() in TITLES:
                    previous_end = candidate.end()
                    continue
                break
            if not capital and not (is_title and taken == 0):
                break
            spans.append(candidate.span())
            taken += 1
            previous_end = candidate.end()
    for index, token in enumerate(tokens):
        if (
            token.group() in SUFFIXES
            and index > 0
            and original[fold.original_span(*token.span(), original)[0]].isupper()
        ):
            before = tokens[index - 1]
            if _NAME_JOIN.fullmatch(text[before.end() : token.start()].replace(",", " ")):
                spans.append(before.span())
    for match in UNSPACED_TITLE.finditer(text):
        spans.append(match.span(1))
    return spans


def _remove(original: str, fold: Folded, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return original
    drop = [False] * len(original)
    for start, end in spans:
        if end <= start:
            continue
        first, last = fold.original_span(start, end, original)
        for index in range(first, last):
            drop[index] = True
    kept = "".join(" " if dropped else char for char, dropped in zip(original, drop))
    # Collapse the holes (keeping the text's own line breaks readable) and tidy the edges.
    kept = _ORPHAN.sub(" ", _SPACES.sub(" ", kept))  # punctuation left between two holes
    return _SPACES.sub(" ", kept).strip(_EDGE)
