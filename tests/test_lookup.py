"""The VR a sender declares is not trusted on its own (text declared as a number stays text)."""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_proxy.policy.resolve import VR_MISMATCH, cheap_elements
from tests.dicomfactory import ct_dataset, engine, read

SECRET = "DOB 1957-04-02 tel 555-123-4567"


def _with(tag: int, vr: str, value: object) -> Dataset:
    ds = ct_dataset()
    ds.add_new(tag, vr, value)
    return ds


def test_declared_vr_that_contradicts_the_dictionary_is_marked() -> None:
    ds = _with(0x00081030, "US", 7)  # Study Description is LO
    vrs = {int(e.tag): vr for e, vr in cheap_elements(ds)}
    assert vrs[0x00081030] == VR_MISMATCH
    assert vrs[0x00100010] == "PN"


def test_text_declared_as_a_number_never_leaves() -> None:
    # Study Description (LO) declared OB, an unknown public tag declared US, and a listed safe
    # private attribute (table VR DS) declared OB: each carries text and must not survive.
    ds = _with(0x00081030, "OB", SECRET.encode())
    ds.add_new(0x00209999, "OB", SECRET.encode())
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531000, "OB", SECRET.encode())
    for options in ((), ("clean_descriptors",), ("retain_safe_private",)):
        encoded = engine(*options).deidentify(ds.copy()).encoded
        assert SECRET.encode() not in encoded, options
        out = read(encoded)
        assert 0x00081030 not in out and 0x00209999 not in out and 0x70531000 not in out


def test_consistent_vrs_are_unchanged() -> None:
    out = read(engine("clean_descriptors").deidentify(ct_dataset()).encoded)
    assert out.StudyDescription.startswith("CT CHEST")
    assert dcmread(BytesIO(engine().deidentify(ct_dataset()).encoded)).Rows == 4
