"""Keyed UID pseudonyms (DESIGN.md): `2.25.` + a 128-bit integer from HMAC-SHA256(key, UID).

PS3.5 B.2: a UUID-derived UID under the 2.25 root. 128 bits make collisions between distinct
inputs practically impossible; the longest result is 5 + 39 = 44 characters (<= 64).
Well-known UIDs (PS3.6 Annex A: SOP classes, transfer syntaxes, coding schemes...; everything
in pydicom's UID dictionary or under the DICOM root 1.2.840.10008.) identify nothing and are
never remapped.
"""

from __future__ import annotations

import hashlib
import hmac

from pydicom._uid_dict import UID_dictionary

_WELL_KNOWN = frozenset(UID_dictionary)
_DICOM_ROOT = "1.2.840.10008."


def pseudonymous_uid(key: bytes, original: str) -> str:
    """The keyed pseudonym of `original` (same key and UID: same result, anywhere)."""
    digest = hmac.new(key, b"uid\x00" + original.strip("\x00 ").encode("ascii", "replace"), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def is_well_known(uid: str) -> bool:
    """True for UIDs defined by the standard (PS3.6 Annex A), which must not be remapped."""
    uid = uid.strip("\x00 ")
    return uid in _WELL_KNOWN or uid.startswith(_DICOM_ROOT)


def map_uid(key: bytes, original: str) -> str:
    """`original` remapped (PS3.15 E.1.1 action U), or unchanged when well-known or empty."""
    stripped = original.strip("\x00 ")
    if not stripped or is_well_known(stripped):
        return stripped
    return pseudonymous_uid(key, stripped)
