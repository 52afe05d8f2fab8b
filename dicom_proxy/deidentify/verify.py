"""Stage 4, verify: search the encoded output for every original identifying string.

Any hit refuses the object (fail closed); the reason names the attribute path, never the
value. Searched: the whole encoded header (File Meta and data set), case-insensitively; the
Pixel Data value is the pixel stage's responsibility and is not searched as text. Not searched:
values too short to be told apart from ordinary content (under 3 characters, or under 6
digits), values the policy keeps, and values the engine generated (pseudonyms, dummies,
shifted dates). Short values must stand alone (no letter or digit next to them) to count.
"""

from __future__ import annotations

from pydicom.charset import encode_string
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_proxy.deidentify.context import Context
from dicom_proxy.models import Refused

_PIXEL_DATA = 0x7FE00010
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyz")
_DIGITS = frozenset(b"0123456789")
MIN_TEXT = 3
MIN_DIGITS = 6
LONG = 8


def verify(encoded: bytes, dataset: Dataset, context: Context) -> None:
    """Raise Refused if any original identifying value of `context` occurs in `encoded`."""
    haystack = _header(encoded, dataset).lower()
    # Text the engine wrote (pseudonyms, dummies, the record of what was done): a needle
    # found inside it (e.g. an original "ANON") is not a leak.
    ours = "\x00".join(context.generated).lower()
    for needle, path in context.needles.items():
        if not _searchable(needle) or needle.lower() in ours:
            continue
        for pattern in _encodings(needle, context.encodings):
            if _found(haystack, pattern):
                raise Refused(f"verify: an original value of {path} is still in the output")


def _searchable(needle: str) -> bool:
    if needle.isdigit():
        return len(needle) >= MIN_DIGITS
    return len(needle) >= MIN_TEXT


def _header(encoded: bytes, dataset: Dataset) -> bytes:
    element = dataset.get(_PIXEL_DATA)
    pixels = element.value if element is not None else None
    if isinstance(pixels, (bytes, bytearray)) and len(pixels) > 64:
        little = UID(dataset.file_meta.TransferSyntaxUID).is_little_endian
        start = encoded.rfind(b"\xe0\x7f\x10\x00" if little else b"\x7f\xe0\x00\x10")
        value = encoded.find(pixels[:64], start) if start > 0 else -1
        if value != -1 and encoded[value : value + len(pixels)] == pixels:
            return encoded[:start] + encoded[value + len(pixels) :]
    return encoded


def _encodings(needle: str, encodings: list[str]) -> set[bytes]:
    patterns = {needle.lower().encode("utf-8", "replace")}
    try:
        patterns.add(encode_string(needle, encodings).lower())
    except Exception:
        pass
    return patterns


def _found(haystack: bytes, needle: bytes) -> bool:
    digits_only = all(b in _DIGITS for b in needle)
    bounded = digits_only or len(needle) < LONG
    neighbours = _DIGITS if digits_only else _ALNUM
    start = haystack.find(needle)
    while start != -1:
        if not bounded:
            return True
        end = start + len(needle)
        before = haystack[start - 1] if start > 0 else 0
        after = haystack[end] if end < len(haystack) else 0
        if before not in neighbours and after not in neighbours:
            return True
        start = haystack.find(needle, start + 1)
    return False
