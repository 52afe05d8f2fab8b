"""Date shifting for Retain Longitudinal Temporal Information with Modified Dates (PS3.15 E.3.6).

Every DA and DT of a patient moves by the same whole number of days, so intervals survive.
Times of day are unchanged (a whole-day shift does not move them).
"""

from __future__ import annotations

from datetime import date, timedelta


def shift_da(value: str, days: int) -> str | None:
    """Shift a DA value (YYYYMMDD, PS3.5 6.2); None when it is not a full date."""
    value = value.strip()
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        shifted = date(int(value[:4]), int(value[4:6]), int(value[6:8])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return shifted.strftime("%Y%m%d")


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of a DT value (YYYYMMDD[HHMMSS[.F]][&ZZXX]); None without a full date."""
    value = value.strip()
    head = shift_da(value[:8], days)
    if head is None:
        return None
    return head + value[8:]
