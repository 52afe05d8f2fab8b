"""Patient identity and every keyed pseudonym (DESIGN.md "Pseudonyms"; PS3.15 E.3.6).

The patient's identity is derived once, in plan, from the original header (`PatientIdentity`)
and carried in the Context; the Patient ID, the Patient's Name and the date offset all derive
from it. UIDs derive from the original UID (uids.py). All values are HMAC-SHA256(key, ...) of
the original, so every node with the same secret produces the same pseudonyms without shared
state; another key gives unrelated ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from pydicom.dataset import Dataset

from dicom_proxy.deidentify.text.normalise import fold
from dicom_proxy.subjects import Subject

# PS3.15 E.3.6 leaves the size of the shift to the implementation; up to ~10 years either way.
MAX_SHIFT_DAYS = 3650


@dataclass(frozen=True)
class PatientIdentity:
    """Who the patient is, for pseudonyms: issuer + Patient ID; without an ID, the name
    (folded, so spellings of one name agree), birth date and sex."""

    issuer: str
    patient_id: str
    name: str = ""
    birth_date: str = ""
    sex: str = ""

    @classmethod
    def of(cls, dataset: Dataset) -> PatientIdentity:
        issuer = _text(dataset, "IssuerOfPatientID")
        patient_id = _text(dataset, "PatientID")
        if patient_id:
            return cls(issuer, patient_id)
        name = " ".join(fold(_text(dataset, "PatientName")).replace("^", " ").replace("=", " ").split())
        return cls(issuer, "", name, _text(dataset, "PatientBirthDate"), _text(dataset, "PatientSex").upper())

    def parts(self) -> tuple[str, ...]:
        if self.patient_id:
            return (self.issuer, self.patient_id)
        return (self.issuer, "", self.name, self.birth_date, self.sex)


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return str(value).strip(" \x00") if value is not None else ""


@lru_cache(maxsize=16384)
def _digest(key: bytes, purpose: str, *parts: str) -> bytes:
    # Remembered (memory only, bounded): the audit trace, the tag stage and verify derive the
    # same patient's pseudonyms for every object of a study.
    message = purpose.encode() + b"\x00" + b"\x00".join(p.encode("utf-8", "replace") for p in parts)
    return hmac.new(key, message, hashlib.sha256).digest()


def patient_id(key: bytes, identity: PatientIdentity) -> str:
    """A short stable token (16 characters, fits LO) for the patient."""
    return base64.b32encode(_digest(key, "patient-id", *identity.parts())[:10]).decode()


def patient_name(pseudonymous_id: str) -> str:
    """Patient's Name derived from the pseudonymous ID, so viewers can tell patients apart."""
    return f"ANON^{pseudonymous_id[:8]}"


def patient_pseudonyms(key: bytes, identity: PatientIdentity, subject: Subject | None) -> tuple[str, str]:
    """Patient ID and Patient's Name for the output: the study's subject ID and name when the
    profile's subject table maps this patient, otherwise the keyed pseudonyms."""
    if subject is not None:
        return subject.subject_id, subject.subject_name or subject.subject_id
    token = patient_id(key, identity)
    return token, patient_name(token)


def date_offset_days(key: bytes, identity: PatientIdentity) -> int:
    """The per-patient date shift in days: never zero, within +-MAX_SHIFT_DAYS (PS3.15 E.3.6)."""
    value = int.from_bytes(_digest(key, "date-offset", *identity.parts())[:8], "big")
    magnitude = 1 + value % MAX_SHIFT_DAYS
    return magnitude if (value >> 63) & 1 else -magnitude


def accession_token(key: bytes, accession_number: str) -> str:
    """A keyed token of an Accession Number for audit records only (the output carries no
    accession number, PS3.15 Table E.1-1): a coordinator holding the original can find it."""
    return base64.b32encode(_digest(key, "accession", accession_number.strip())[:10]).decode()
