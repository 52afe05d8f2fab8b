"""Keyed UID pseudonyms (DESIGN.md): `2.25.` + a 128-bit integer from HMAC-SHA256(key, UID).

PS3.5 B.2: a UUID-derived UID under the 2.25 root. 128 bits make collisions between distinct
inputs practically impossible; the longest result is 5 + 39 = 44 characters (<= 64).
"""

from __future__ import annotations

import hashlib
import hmac


def pseudonymous_uid(key: bytes, original: str) -> str:
    digest = hmac.new(key, b"uid\x00" + original.strip("\x00 ").encode("ascii", "replace"), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))
