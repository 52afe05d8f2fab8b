"""Patient identity (derived once in plan) and the pseudonyms derived from it (issue 9 class 7)."""

from __future__ import annotations

from dicom_proxy.deidentify.pseudonyms import PatientIdentity, date_offset_days, patient_id
from tests.dicomfactory import KEY, ct_dataset, engine, read


def _identity(**values: str) -> PatientIdentity:
    ds = ct_dataset()
    del ds.PatientID
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return PatientIdentity.of(ds)


def test_with_an_id_only_issuer_and_id_count() -> None:
    ds = ct_dataset()
    ds.IssuerOfPatientID = "HOSP"
    identity = PatientIdentity.of(ds)
    assert identity == PatientIdentity("HOSP", ds.PatientID)


def test_without_an_id_name_birth_date_and_sex_count() -> None:
    first = _identity(PatientName="DOE^JANE")
    assert first == _identity(PatientName="Doe^Jane ")  # spellings of one name agree
    others = [_identity(PatientName="ROE^JANE"), _identity(PatientName="DOE^JANE", PatientBirthDate="19610101"),
              _identity(PatientName="DOE^JANE", PatientSex="M")]
    for other in others:
        assert patient_id(KEY, other) != patient_id(KEY, first)
        assert date_offset_days(KEY, other) != date_offset_days(KEY, first) or other == first


def test_pseudonyms_stay_stable_for_patients_with_an_id() -> None:
    # Same derivation as before patient identity was introduced: issuer + ID.
    assert patient_id(KEY, PatientIdentity("HOSP", "12345")) == patient_id(KEY, PatientIdentity("HOSP", " 12345"[1:]))


def test_engine_uses_one_identity_for_name_id_and_dates() -> None:
    outputs = []
    for name in ("DOE^JANE", "ROE^RICHARD"):
        ds = ct_dataset()
        del ds.PatientID
        ds.PatientName = name
        outputs.append(read(engine("retain_longitudinal_modified_dates").deidentify(ds).encoded))
    assert outputs[0].PatientName != outputs[1].PatientName
    assert outputs[0].StudyDate != outputs[1].StudyDate
