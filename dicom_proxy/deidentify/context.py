"""Per-object state shared by the stages (never shared between objects or threads)."""

from __future__ import annotations

from dataclasses import dataclass

from dicom_proxy.deidentify.pseudonyms import PatientIdentity
from dicom_proxy.deidentify.text import Matcher, TextCleaner
from dicom_proxy.policy import Policy
from dicom_proxy.subjects import Subject


@dataclass
class Context:
    """What `plan` learns from the original header, used by `tags` and `verify`."""

    policy: Policy
    key: bytes
    patient: PatientIdentity
    # The identifying values of the original header (names, IDs, dates, UIDs...) with the
    # attribute paths where each was found: what clean removes and verify searches for.
    matcher: Matcher
    cleaner: TextCleaner
    date_offset: int = 0
    dates_shifted: bool = False
    # The profile's name, recorded in (0012,0063); empty for the implicit profile.
    profile: str = ""
    # The study's subject for this patient (profile subject table), instead of the pseudonym.
    subject: Subject | None = None
