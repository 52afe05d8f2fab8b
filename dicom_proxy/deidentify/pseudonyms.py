"""Keyed patient pseudonyms and the per-patient date offset (DESIGN.md "Pseudonyms").

All values derive from HMAC-SHA256(key, ...) of the original identity, so every node with the
same secret produces the same pseudonyms without shared state; another key gives unrelated ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

# PS3.15 E.3.6 leaves the size of the shift to the implementation; up to ~10 years either way.
MAX_SHIFT_DAYS = 3650


def _digest(key: bytes, purpose: str, *parts: str) -> bytes:
    message = purpose.encode() + b"\x00" + b"\x00".join(p.encode("utf-8", "replace") for p in parts)
    return hmac.new(key, message, hashlib.sha256).digest()


def patient_id(key: bytes, issuer: str, original_id: str) -> str:
    """A short stable token (16 characters, fits LO) for a Patient ID within its issuer."""
    token = base64.b32encode(_digest(key, "patient-id", issuer.strip(), original_id.strip())[:10]).decode()
    return token


def patient_name(pseudonymous_id: str) -> str:
    """Patient's Name derived from the pseudonymous ID, so viewers can tell patients apart."""
    return f"ANON^{pseudonymous_id[:8]}"


def date_offset_days(key: bytes, patient: str) -> int:
    """The per-patient date shift in days: never zero, within +-MAX_SHIFT_DAYS (PS3.15 E.3.6)."""
    value = int.from_bytes(_digest(key, "date-offset", patient)[:8], "big")
    magnitude = 1 + value % MAX_SHIFT_DAYS
    return magnitude if (value >> 63) & 1 else -magnitude


def accession_token(key: bytes, accession_number: str) -> str:
    """A keyed token of an Accession Number for audit records only (the output carries no
    accession number, PS3.15 Table E.1-1): a coordinator holding the original can find it."""
    return base64.b32encode(_digest(key, "accession", accession_number.strip())[:10]).decode()
