"""The profile and options of PS3.15 E.3, with their CID 7050 codes (PS3.16).

Option names are those of ``[deidentify].options`` (DESIGN.md); each names one option column
of Table E.1-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Code:
    """A coded concept (PS3.3 Table 8.8-1) of CID 7050 "De-identification Method"."""

    value: str
    meaning: str
    scheme: str = "DCM"


BASIC_PROFILE = Code("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA = Code("113101", "Clean Pixel Data Option")


class Option(Enum):
    """An option of the Basic Application Level Confidentiality Profile (PS3.15 E.3)."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_LONGITUDINAL_FULL_DATES = "retain_longitudinal_full_dates"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "retain_longitudinal_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean_structured_content"
    CLEAN_GRAPHICS = "clean_graphics"

    @property
    def code(self) -> Code:
        """The CID 7050 code recorded in (0012,0064) when this option is applied."""
        return _CODES[self]


_CODES = {
    Option.RETAIN_SAFE_PRIVATE: Code("113111", "Retain Safe Private Option"),
    Option.RETAIN_UIDS: Code("113110", "Retain UIDs Option"),
    Option.RETAIN_DEVICE_IDENTITY: Code("113109", "Retain Device Identity Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: Code("113112", "Retain Institution Identity Option"),
    Option.RETAIN_PATIENT_CHARACTERISTICS: Code("113108", "Retain Patient Characteristics Option"),
    Option.RETAIN_LONGITUDINAL_FULL_DATES: Code(
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"
    ),
    Option.RETAIN_LONGITUDINAL_MODIFIED_DATES: Code(
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"
    ),
    Option.CLEAN_DESCRIPTORS: Code("113105", "Clean Descriptors Option"),
    Option.CLEAN_STRUCTURED_CONTENT: Code("113104", "Clean Structured Content Option"),
    Option.CLEAN_GRAPHICS: Code("113103", "Clean Graphics Option"),
}
