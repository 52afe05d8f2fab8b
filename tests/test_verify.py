"""Stage 4: the encoded output is searched for every original identifying string."""

from __future__ import annotations

import pytest

from dicom_proxy.deidentify.context import Context
from dicom_proxy.deidentify.verify import verify
from dicom_proxy.models import Refused
from dicom_proxy.policy import compile_policy
from tests.dicomfactory import KEY, ct_dataset, engine


def _context(**needles: str) -> Context:
    context = Context(compile_policy(()), KEY, ["iso8859"])
    context.needles = {value: path for path, value in needles.items()}
    return context


def test_hit_refuses_naming_the_path_only() -> None:
    ds = ct_dataset()
    with pytest.raises(Refused) as info:
        verify(b"....holloway^winifred....", ds, _context(PatientName="HOLLOWAY^WINIFRED"))
    assert "PatientName" in info.value.reason and "HOLLOWAY" not in info.value.reason.upper()


def test_short_values_must_stand_alone() -> None:
    ds = ct_dataset()
    verify(b"SLEEPY", ds, _context(PatientName="LEE"))
    with pytest.raises(Refused):
        verify(b"^LEE^", ds, _context(PatientName="LEE"))


def test_digits_inside_longer_numbers_do_not_count() -> None:
    ds = ct_dataset()
    verify(b"2.25.1234520210314999", ds, _context(StudyDate="20210314"))
    with pytest.raises(Refused):
        verify(b"DA\x08\x0020210314", ds, _context(StudyDate="20210314"))


def test_very_short_values_are_not_searched() -> None:
    verify(b"M 1 F", ct_dataset(), _context(PatientSex="M", Other="1"))


def test_generated_values_are_not_hits() -> None:
    context = _context(ScheduledProcedureStepID="ANON")
    context.generated.add("ANON^X")
    verify(b"ANON^X", ct_dataset(), context)


def test_engine_refuses_kept_identifier() -> None:
    ds = ct_dataset()
    ds.add_new(0x00081010, "SH", "HOLLOWAY-CT")  # Station Name kept by retain_device_identity
    with pytest.raises(Refused, match="PatientName"):
        engine("retain_device_identity").deidentify(ds)


def test_legitimately_kept_values_are_not_collected() -> None:
    ds = ct_dataset()
    ds.PatientBirthDate = "20210314"  # same as the (kept) study date
    engine("retain_longitudinal_full_dates").deidentify(ds)
    ds = ct_dataset()
    engine("retain_uids").deidentify(ds)
