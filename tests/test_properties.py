"""Property tests: planted identifying strings never leave; UID mapping invariants."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_proxy.deidentify.uids import pseudonymous_uid
from dicom_proxy.models import Refused
from tests.dicomfactory import KEY, OTHER_KEY, ct_dataset, engine

ENGINES = {
    "basic": engine(),
    "all": engine(
        "retain_safe_private", "retain_longitudinal_modified_dates", "clean_descriptors",
        "clean_structured_content", "clean_graphics",
    ),
}

# Identifying strings: 6-12 letters (a name or an ID-like token), at least one letter.
identifying = st.text(string.ascii_uppercase, min_size=6, max_size=12)
uid_part = st.integers(min_value=1, max_value=10**12).map(str)
uids = st.lists(uid_part, min_size=2, max_size=8).map(lambda parts: "1.2.826.0.1." + ".".join(parts))

# Fixed text the engine writes itself (dummies, the record of what was done): a "secret" that
# is part of it (e.g. "ANONYM") is found in every output and proves nothing.
from dicom_proxy.deidentify.values import DUMMY_STRINGS
from dicom_proxy.policy import BASIC_PROFILE, CLEAN_PIXEL_DATA, Option

VOCABULARY = " ".join(
    [*DUMMY_STRINGS, "MODIFIED", "ANON", "YES", "dicom-proxy PS3.15 2026d E.1-1", "ISO_IR 100",
     BASIC_PROFILE.meaning, CLEAN_PIXEL_DATA.meaning, *(o.code.meaning for o in Option)]
).upper()

# Where to plant: (how, attribute).
PLACES = [
    ("pn", 0x00100010),  # Patient's Name (as family name)
    ("pn", 0x00080090),  # Referring Physician's Name
    ("id", 0x00100020),  # Patient ID
    ("id", 0x00080050),  # Accession Number
    ("text_with_name", 0x00081030),  # Study Description mentioning the patient
    ("text_with_name", 0x0008103E),  # Series Description
    ("text_with_name", 0x00204000),  # Image Comments
    ("nested_pn", 0x00081110),  # Referenced Study Sequence > Person Name
    ("nested_pn", 0x0040A730),  # Content Sequence > Person Name
    ("private", 0x00090010),  # a private block
    ("private_safe_slot", 0x20010010),  # a private element listed as safe, text value
    ("unlisted_text", 0x00181400),  # (Acquisition Device Processing Description) in table
    ("unlisted_text", 0x00181016),  # Secondary Capture Device Manufacturer (unlisted)
]


def _plant(ds: Dataset, how: str, tag: int, secret: str) -> None:
    name = f"{secret}^JANE"
    ds.PatientName = name  # the patient's name is always the secret, so text can mention it
    if how == "pn":
        ds.add_new(tag, "PN", name)
    elif how == "id":
        ds.add_new(tag, "LO" if tag == 0x00100020 else "SH", secret)
    elif how == "text_with_name":
        ds.add_new(tag, "LT" if tag == 0x00204000 else "LO", f"CT HEAD {secret} JANE")
    elif how == "nested_pn":
        inner = Dataset()
        inner.PersonName = name
        inner.TextValue = f"seen by {secret}"
        item = Dataset()
        item.ContentSequence = Sequence([inner])
        item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.9.1"
        ds.add_new(tag, "SQ", Sequence([item]))
    elif how == "private":
        ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x10, "LO", secret)
    elif how == "private_safe_slot":
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x02, "LO", f"x {secret}")
    else:
        ds.add_new(tag, "LO", secret)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=identifying, place=st.sampled_from(PLACES), which=st.sampled_from(sorted(ENGINES)))
def test_planted_identifiers_never_leave(secret: str, place: tuple[str, int], which: str) -> None:
    assume(secret not in VOCABULARY)
    ds = ct_dataset()
    _plant(ds, place[0], place[1], secret)
    try:
        encoded = ENGINES[which].deidentify(ds).encoded
    except Refused as refused:
        assert secret not in refused.reason.upper()
        return
    assert secret.encode() not in encoded.upper()


@settings(max_examples=30, deadline=None)
@given(secret=identifying, extra=identifying)
def test_secret_in_several_places_at_once(secret: str, extra: str) -> None:
    assume(secret not in VOCABULARY and extra not in VOCABULARY)
    ds = ct_dataset()
    for how, tag in PLACES:
        _plant(ds, how, tag, secret)
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = extra
    try:
        encoded = ENGINES["all"].deidentify(ds).encoded
    except Refused:
        return
    assert secret.encode() not in encoded.upper() and extra.encode() not in encoded.upper()


@given(st.lists(uids, min_size=2, max_size=30, unique=True))
def test_uid_mapping_deterministic_valid_collision_free(originals: list[str]) -> None:
    mapped = [pseudonymous_uid(KEY, uid) for uid in originals]
    assert mapped == [pseudonymous_uid(KEY, uid) for uid in originals]
    assert len(set(mapped)) == len(originals)
    for uid in mapped:
        assert len(uid) <= 64 and uid.startswith("2.25.")
        assert all(part.isdigit() and (part == "0" or not part.startswith("0")) for part in uid.split("."))
    assert all(pseudonymous_uid(OTHER_KEY, uid) != m for uid, m in zip(originals, mapped))
