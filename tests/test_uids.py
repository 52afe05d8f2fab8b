"""UID pseudonyms (DESIGN.md; PS3.5 B.2) and well-known UIDs (PS3.6 Annex A)."""

from __future__ import annotations

from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_proxy.deidentify.pseudonyms import PatientIdentity, date_offset_days, patient_id, patient_name
from dicom_proxy.deidentify.uids import is_well_known, map_uid, pseudonymous_uid
from tests.dicomfactory import KEY, OTHER_KEY


def test_pseudonymous_uid_is_deterministic_and_keyed() -> None:
    uid = "1.2.3.4.5"
    assert pseudonymous_uid(KEY, uid) == pseudonymous_uid(KEY, uid)
    assert pseudonymous_uid(KEY, uid) != pseudonymous_uid(OTHER_KEY, uid)
    assert pseudonymous_uid(KEY, uid).startswith("2.25.") and len(pseudonymous_uid(KEY, uid)) <= 64


def test_known_vector() -> None:
    """Same key and input give the same output on any machine (pins the derivation)."""
    assert pseudonymous_uid(b"k", "1.2.3") == pseudonymous_uid(b"k", "1.2.3\x00")
    import hashlib
    import hmac

    digest = hmac.new(b"k", b"uid\x001.2.3", hashlib.sha256).digest()
    assert pseudonymous_uid(b"k", "1.2.3") == "2.25." + str(int.from_bytes(digest[:16], "big"))


def test_well_known_uids_are_not_remapped() -> None:
    for uid in (CTImageStorage, ExplicitVRLittleEndian, "1.2.840.10008.2.16.4"):
        assert is_well_known(uid)
        assert map_uid(KEY, uid) == uid
    assert map_uid(KEY, "1.2.826.0.1.3680043.9.1") != "1.2.826.0.1.3680043.9.1"


def test_patient_pseudonyms() -> None:
    token = patient_id(KEY, PatientIdentity("HOSP", "12345"))
    assert (
        token == patient_id(KEY, PatientIdentity("HOSP", "12345")) != patient_id(KEY, PatientIdentity("OTHER", "12345"))
    )
    assert len(token) == 16 and token.isalnum()
    assert patient_name(token).startswith("ANON^")


def test_date_offset_never_zero() -> None:
    offsets = {date_offset_days(KEY, PatientIdentity("", f"patient {i}")) for i in range(2000)}
    assert 0 not in offsets and len(offsets) > 1000
    assert all(abs(offset) <= 3650 for offset in offsets)
