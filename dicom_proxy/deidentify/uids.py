"""Keyed UID pseudonyms (DESIGN.md): `2.25.` + a 128-bit integer from HMAC-SHA256(key, UID).

PS3.5 B.2: a UUID-derived UID under the 2.25 root. 128 bits make collisions between distinct
inputs practically impossible; the longest result is 5 + 39 = 44 characters (<= 64).
Well-known UIDs (PS3.6 Annex A: SOP classes, transfer syntaxes, coding schemes... in pydicom's
UID dictionary) identify nothing and are never remapped. A UID under the DICOM root
1.2.840.10008. that is not registered counts as well-known only when it is shaped like one
(components of at most 4 digits: a class UID newer than pydicom's dictionary); anything else
under that root (e.g. with an embedded timestamp) is an instance UID in disguise and remapped.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from pydicom._uid_dict import UID_dictionary

_WELL_KNOWN = frozenset(UID_dictionary)
_DICOM_ROOT = "1.2.840.10008."


@lru_cache(maxsize=16384)
def pseudonymous_uid(key: bytes, original: str) -> str:
    """The keyed pseudonym of `original` (same key and UID: same result, anywhere).
    Remembered (memory only, bounded): the audit trace and the tag stage map the same UIDs,
    and a study's UIDs recur in every object of it."""
    digest = hmac.new(key, b"uid\x00" + original.strip("\x00 ").encode("ascii", "replace"), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def is_well_known(uid: str) -> bool:
    """True for UIDs defined by the standard (PS3.6 Annex A), which must not be remapped."""
    uid = uid.strip("\x00 ")
    if uid in _WELL_KNOWN:
        return True
    if not uid.startswith(_DICOM_ROOT):
        return False
    return all(part.isdigit() and len(part) <= 4 for part in uid[len(_DICOM_ROOT) :].split("."))


def normalise_legacy_uid(uid: str) -> str:
    """A kept legacy UID with leading zeros in a component ("1.2.840.0113619") written
    validly ("1.2.840.113619", PS3.5 9.1); other values unchanged (checked elsewhere)."""
    stripped = uid.strip("\x00 ")
    parts = stripped.split(".")
    if not all(part.isdigit() for part in parts) or not any(len(p) > 1 and p[0] == "0" for p in parts):
        return uid
    return ".".join(part.lstrip("0") or "0" for part in parts)


def map_uid(key: bytes, original: str) -> str:
    """`original` remapped (PS3.15 E.1.1 action U), or unchanged when well-known or empty."""
    stripped = original.strip("\x00 ")
    if not stripped or is_well_known(stripped):
        return stripped
    return pseudonymous_uid(key, stripped)
