"""Pseudonymous identities for tracing a study without a lookup table (issue 15, item 8).

The secret key derives every pseudonym, so the pseudonyms of an original study, patient or
accession number can be computed again at any time: `dicom-proxy pseudonym` prints them and the
audit records carry them, so one grep answers "did it arrive, when, where". The derivations are
those of the engine (`deidentify/pseudonyms.py`, `deidentify/uids.py`), never re-implemented.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.dataset import Dataset

from dicom_proxy.deidentify import pseudonyms
from dicom_proxy.deidentify.uids import map_uid
from dicom_proxy.models import ObjectIdentity, is_valid_uid


def derive(
    key: bytes,
    *,
    patient_id: str | None = None,
    issuer: str = "",
    study_instance_uid: str = "",
    series_instance_uid: str = "",
    sop_instance_uid: str = "",
    accession: str = "",
    retain_uids: bool = False,
    patient: pseudonyms.PatientIdentity | None = None,
) -> ObjectIdentity:
    """The pseudonyms of the given original values (empty where nothing was given).

    `patient`: the identity the engine derives from a data set (pseudonyms.PatientIdentity),
    used instead of `patient_id` and `issuer` when given (patients without an ID)."""
    if patient is None and patient_id is not None:
        patient = pseudonyms.PatientIdentity(issuer.strip(" \x00"), patient_id.strip(" \x00"))

    def uid(original: str) -> str:
        original = original.strip("\x00 ")
        if retain_uids:
            return original if is_valid_uid(original) else ""
        return map_uid(key, original) if original else ""

    return ObjectIdentity(
        patient_id=pseudonyms.patient_id(key, patient) if patient is not None else "",
        study_instance_uid=uid(study_instance_uid),
        series_instance_uid=uid(series_instance_uid),
        sop_instance_uid=uid(sop_instance_uid),
        accession=pseudonyms.accession_token(key, accession) if accession.strip() else "",
    )


def of_dataset(key: bytes, dataset: Dataset, retain_uids: bool = False) -> ObjectIdentity:
    """The pseudonymous identity of an original data set; whatever cannot be read stays empty
    (this is for the audit only: it never decides what is sent)."""
    values: dict[str, str] = {}
    for keyword in (
        "PatientID", "IssuerOfPatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber",
    ):
        try:
            values[keyword] = str(dataset.get(keyword, "") or "")
        except Exception:
            values[keyword] = ""
    try:
        return derive(
            key,
            patient_id=values["PatientID"],
            issuer=values["IssuerOfPatientID"],
            study_instance_uid=values["StudyInstanceUID"],
            series_instance_uid=values["SeriesInstanceUID"],
            sop_instance_uid=values["SOPInstanceUID"],
            accession=values["AccessionNumber"],
            retain_uids=retain_uids,
            patient=pseudonyms.PatientIdentity.of(dataset),
        )
    except Exception:
        return ObjectIdentity()


def describe(identity: ObjectIdentity, audit_file: Path | None, as_json: bool = False) -> list[str]:
    """What `dicom-proxy pseudonym` prints: each derived pseudonym, where it appears, and the
    grep that finds the audit records carrying them."""
    rows = [
        ("patient_id", identity.patient_id, "Patient ID in the output and in audit records"),
        ("patient_name", pseudonyms.patient_name(identity.patient_id) if identity.patient_id else "",
         "Patient's Name in the output"),
        ("study_instance_uid", identity.study_instance_uid, "Study Instance UID in the output and audit records"),
        ("series_instance_uid", identity.series_instance_uid, "Series Instance UID in the output and audit records"),
        ("sop_instance_uid", identity.sop_instance_uid, "SOP Instance UID in the output and audit records"),
        ("accession", identity.accession, "audit records only (the output carries no Accession Number)"),
    ]
    rows = [row for row in rows if row[1]]
    if as_json:
        return [json.dumps({name: value for name, value, _ in rows}, indent=1)]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{name.ljust(width)}  {value}  ({where})" for name, value, where in rows]
    needles = [value for name, value, _ in rows if name != "patient_name"]
    lines.append(f"find them: grep -E '{'|'.join(needles)}' {audit_file or 'AUDIT_FILE'}")
    return lines
