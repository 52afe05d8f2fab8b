"""DIMSE status codes used by the proxy (PS3.4 Annex B.2.3, PS3.7 Annex C).

An IntEnum instead of bare integers: 0x0210 and 0xC210 are an easy slip.
"""

from __future__ import annotations

from enum import IntEnum


class StoreStatus(IntEnum):
    """C-STORE response statuses (PS3.4 Table B.2-1, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    # Failure: Refused: Out of Resources (PS3.4 B.2.3). Used when the spool is full.
    OUT_OF_RESOURCES = 0xA700
    # Failure: Data Set does not match SOP Class.
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    # Failure: Cannot understand (0xC000-0xCFFF). We use sub-codes to tell causes apart
    # in the sender's log without revealing anything about the object.
    CANNOT_UNDERSTAND = 0xC000
    # The dataset could not be parsed.
    CANNOT_PARSE = 0xC001
    # De-identification refused the object (fail closed).
    DEIDENTIFICATION_REFUSED = 0xC002
    # Burned-in text that no pixel rule cleans.
    PIXELS_NOT_CLEANABLE = 0xC003
    # Verification found original identifying data in the output.
    VERIFICATION_FAILED = 0xC004
    # A filter of the caller's profile rejects the object (action "reject"), or the caller
    # matches no profile any more (after a reload).
    REJECTED_BY_PROFILE = 0xC005
    # Unexpected internal error: still fail closed.
    PROCESSING_FAILURE = 0x0110
    SOP_CLASS_NOT_SUPPORTED = 0x0122


def is_success(status: int) -> bool:
    """True for Success (0x0000) and Warning statuses (0xB000-0xBFFF, 0x0001, 0x0107, 0x0116).

    PS3.7 Annex C: warnings mean the peer stored the object.
    """
    return status == 0x0000 or 0xB000 <= status <= 0xBFFF or status in (0x0001, 0x0107, 0x0116)


def is_transient_failure(status: int) -> bool:
    """Out of resources (0xA7xx) is worth retrying; other failures are permanent."""
    return 0xA700 <= status <= 0xA7FF
