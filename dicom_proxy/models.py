"""Typed objects handed from one stage to the next.

receive -> ReceivedObject -> deidentify -> DeidentifiedObject -> spool -> SpoolEntry -> forward
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dicom_proxy.status import StoreStatus

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: str) -> bool:
    """PS3.5 9.1: digits and dots, no leading zeros in a component, at most 64 characters."""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


@dataclass(frozen=True)
class ReceivedObject:
    """A C-STORE data set as it arrived, still encoded (nothing decoded yet)."""

    dataset_bytes: bytes
    transfer_syntax_uid: str
    # From the C-STORE request; these are original (identifying) UIDs: never log them.
    affected_sop_class_uid: str
    calling_ae_title: str
    # The sender's IP address (selects the profile together with the calling AE title).
    peer_address: str = ""


@dataclass(frozen=True)
class ObjectIdentity:
    """Who and what an object is, in pseudonyms only: what audit records carry and what
    `dicom-proxy pseudonym` prints, so one grep traces a study (issue 15, item 8).

    `patient_id` is the pseudonymous Patient ID written into the output; `accession` is a keyed
    token of the original Accession Number (the output carries none). Empty when unknown.
    """

    patient_id: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    sop_instance_uid: str = ""
    accession: str = ""


@dataclass(frozen=True)
class DeidentifiedObject:
    """The result of de-identification: a complete Part 10 file held in memory.

    All identifiers here are pseudonyms, safe to log and to use as file names.
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    # Preamble + File Meta Information + data set, in consecutive parts: Pixel Data that no
    # stage changed stays a view into the received bytes instead of being copied.
    parts: tuple[bytes | memoryview, ...]
    # The pseudonymous identity for audit records (patient and accession tokens included).
    identity: ObjectIdentity | None = None

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def encoded(self) -> bytes:
        """The whole file as one bytes object (copies: for tests and small outputs)."""
        return b"".join(self.parts)

    def __post_init__(self) -> None:
        # These name files and folders: only well-formed UIDs (PS3.5 9.1), so a kept original
        # (retain_uids) can never be "../x" or carry anything but digits and dots.
        for name in ("sop_class_uid", "sop_instance_uid", "study_instance_uid", "series_instance_uid"):
            if not is_valid_uid(getattr(self, name)):
                raise Refused(f"{name}: not a valid UID")

    @property
    def relative_path(self) -> Path:
        """`<Study>/<Series>/<SOP>.dcm`, named by the new identity (DESIGN.md)."""
        return Path(self.study_instance_uid, self.series_instance_uid, f"{self.sop_instance_uid}.dcm")


class Refused(Exception):
    """De-identification cannot be done with certainty: the object must not leave.

    `reason` must never contain an original value (attribute paths and codes only).
    """

    def __init__(self, reason: str, status: StoreStatus = StoreStatus.DEIDENTIFICATION_REFUSED):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        # Pseudonyms of the refused object, when its header could be read (for the audit).
        self.identity: ObjectIdentity | None = None


class Dropped(Exception):
    """A filter of the profile drops the object: the sender gets Success, nothing is stored.

    `filter_name` is site-authored (safe to log); `identity` (set by the engine) holds the
    pseudonyms the object would have had, for the audit record.
    """

    def __init__(self, filter_name: str):
        super().__init__(filter_name)
        self.filter_name = filter_name
        self.identity: ObjectIdentity | None = None


@dataclass(frozen=True)
class SpoolEntry:
    """One de-identified object waiting in one destination's queue."""

    destination: str
    path: Path
    size: int
