"""Dummy values consistent with each VR (PS3.15 E.1.1 action D, PS3.5 6.2)."""

from __future__ import annotations

from typing import Any

_DUMMY: dict[str, Any] = {
    "AE": "ANONYMIZED",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000.000000",
    "TM": "000000.00",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UR": "urn:anonymized",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OW": b"\x00\x00",
    "OF": b"\x00\x00\x00\x00",
    "OD": b"\x00" * 8,
    "OL": b"\x00\x00\x00\x00",
    "OV": b"\x00" * 8,
    "UN": b"\x00\x00",
}

DUMMY_STRINGS = frozenset(v for v in _DUMMY.values() if isinstance(v, str))


def dummy_value(vr: str) -> Any:
    """A fixed, non-identifying, non-empty value valid for `vr`."""
    return _DUMMY.get(vr, _DUMMY["UN"])
