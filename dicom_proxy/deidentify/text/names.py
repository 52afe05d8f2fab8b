"""The identifying values of one object, as folded search terms with where each was found.

Built once per object by plan (from the original header); used by clean (what to remove from
text) and by verify (what must not be in the output, except in the very element that the
policy keeps it in). Matching rules, on folded text (normalise.py):
- names (PN, every component group): each word; each component and each concatenation of
  components (glued "JohnSmith", "smithjohn", "SMITHJ", "JSmith"); in scripts written without
  spaces every term is found as a substring (CJK one-character family names included); in other
  scripts a term of 4+ letters is found inside a word (the whole word goes), shorter terms
  only as whole words; one-letter initials only next to a name that matched.
- identifiers, dates, UIDs (IDs, accession and order numbers, addresses, original DA/DT/UI
  values): the whole value as a token sequence not inside a longer run of letters, digits or
  a dotted number. Their words (2+ characters) are also removed from cleaned text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dicom_proxy.deidentify.text.normalise import fold, has_unspaced, name_variants

_WORD = re.compile(r"[^\W_]+")
_TOKEN = re.compile(r"[^\W_]+")


def _bounded(text: str, start: int, end: int) -> bool:
    """Not inside a longer run of letters or digits, nor a longer dotted number (a UID)."""
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or after.isalnum():
        return False
    if before == "." and start >= 2 and text[start - 2].isdigit():
        return False
    return not (after == "." and end + 1 < len(text) and text[end + 1].isdigit())


def _alternation(terms: Iterable[str]) -> str:
    return "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))


@dataclass
class Identifiers:
    """Collects the identifying values of the original header (plan), then compiles a Matcher."""

    names: dict[str, set[str]] = field(default_factory=dict)  # folded term -> origin paths
    values: dict[str, set[str]] = field(default_factory=dict)
    words: set[str] = field(default_factory=set)  # identifier words, for clean only
    initials: set[str] = field(default_factory=set)
    kept: set[str] = field(default_factory=set)  # origin paths whose element the policy keeps

    def add_name(self, value: str, path: str) -> None:
        """A person's name (PN): groups split at "=", components at "^" (PS3.5 6.2.1)."""
        for group in value.split("="):
            components = [c for c in (c.strip() for c in group.split("^")) if c]
            words = [w for c in components for w in _WORD.findall(c)]
            terms: set[str] = set()
            for word in words:
                terms.update(name_variants(word))
                self.initials.add(fold(word)[:1])
            for component in components:
                terms.update(name_variants("".join(_WORD.findall(component))))
            if len(components) >= 2:
                family, given = ("".join(_WORD.findall(c)) for c in components[:2])
                for glued in (family + given, given + family, "".join(words), family + given[:1], given[:1] + family):
                    terms.update(name_variants(glued))
            for term in terms:
                if len(term) >= 2 or has_unspaced(term):
                    self.names.setdefault(term, set()).add(path)

    def add_identifier(self, value: str, path: str, vocabulary: frozenset[str] = frozenset()) -> None:
        """An identifying value (ID, number, address, institution...): whole value and words."""
        self.add_value(value, path)
        for word in _WORD.findall(fold(value)):
            if len(word) >= 2 and word not in vocabulary:
                self.words.add(word)

    def add_value(self, value: str, path: str) -> None:
        """A value searched for as a whole only (original dates, UIDs)."""
        term = fold(value.strip(" \x00"))
        # A number of 1-3 digits (Study ID "1") cannot be told apart from any other number.
        if term and not (term.isdigit() and len(term) < 4):
            self.values.setdefault(term, set()).add(path)

    def matcher(self) -> Matcher:
        return Matcher(self)


@dataclass(frozen=True)
class Hit:
    start: int
    end: int
    origins: frozenset[str]  # attribute paths the matched original value was found at


class Matcher:
    """Finds identifying terms in folded text (compiled once per object)."""

    def __init__(self, identifiers: Identifiers) -> None:
        self.origins: dict[str, frozenset[str]] = {}
        for table in (identifiers.names, identifiers.values):
            for term, paths in table.items():
                self.origins[term] = self.origins.get(term, frozenset()) | frozenset(paths)
        names = identifiers.names
        self.whole = frozenset(t for t in names if not has_unspaced(t))
        inner = [t for t in self.whole if len(t) >= 4]
        unspaced = [t for t in names if has_unspaced(t)]
        self._inner = re.compile(_alternation(inner)) if inner else None
        self._unspaced = re.compile(_alternation(unspaced)) if unspaced else None
        # Whole values (IDs, dates, UIDs) are many and differ per object: found with str.find
        # and a boundary check, not one regex compiled per object.
        self._values = sorted(identifiers.values, key=len, reverse=True)
        self.words = frozenset(identifiers.words)
        self.kept = frozenset(identifiers.kept)
        self.initials = frozenset(identifiers.initials)
        self._found: dict[str, tuple[Hit, ...]] = {}

    def allowed_at(self, hit: Hit, path: str) -> bool:
        """A hit is no leak only in an element the value came from, when the policy keeps the
        value everywhere it came from (a value removed elsewhere must not survive here)."""
        return path in hit.origins and hit.origins <= self.kept

    @property
    def empty(self) -> bool:
        return not self.origins and not self.words

    def hits(self, text: str) -> tuple[Hit, ...]:
        """Identifying terms in folded `text` (names and whole values; not identifier words).

        Remembered per text: clean and verify search the same texts more than once (dates
        repeated over attributes, each value as cleaned then as written), and this matcher
        lives as long as its one object."""
        found = self._found.get(text)
        if found is None:
            found = self._found[text] = tuple(self._hits(text))
        return found

    def _hits(self, text: str) -> Iterator[Hit]:
        for term in self._values:
            start = text.find(term)
            while start != -1:
                end = start + len(term)
                if _bounded(text, start, end):
                    yield Hit(start, end, self.origins[term])
                start = text.find(term, start + 1)
        if self._unspaced is not None and has_unspaced(text):
            for match in self._unspaced.finditer(text):
                yield Hit(*match.span(), self.origins[match.group()])
        for token in _TOKEN.finditer(text):
            word = token.group()
            if word in self.whole:
                yield Hit(*token.span(), self.origins[word])
            elif self._inner is not None and len(word) >= 4:
                found = self._inner.search(word)
                if found is not None:
                    if has_unspaced(word):
                        start = token.start() + found.start()
                        yield Hit(start, start + len(found.group()), self.origins[found.group()])
                    else:
                        yield Hit(*token.span(), self.origins[found.group()])
