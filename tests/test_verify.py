"""Stage 4: verify parses the output again and searches every value for every original
identifying value; the only exemption is the very element the policy keeps it in."""

from __future__ import annotations

import pytest
from pydicom.sequence import Sequence

from dicom_proxy import part10
from dicom_proxy.deidentify.plan import make_plan
from dicom_proxy.deidentify.text.vocabulary import shipped
from dicom_proxy.deidentify.verify import verify
from dicom_proxy.models import Refused
from dicom_proxy.policy import compile_policy
from tests.dicomfactory import KEY, ct_dataset, engine, item_with


def _verify_unchanged(ds: object, *options: str) -> None:
    """Verify the original object itself (nothing cleaned): every identifying value is a hit."""
    from pydicom.dataset import Dataset

    assert isinstance(ds, Dataset)
    context = make_plan(ds, compile_policy(options), KEY, shipped())
    verify(part10.encode(ds), context)


def test_original_object_is_refused_naming_paths_only() -> None:
    with pytest.raises(Refused) as info:
        _verify_unchanged(ct_dataset())
    assert "HOLLOWAY" not in info.value.reason.upper()


def test_name_in_a_nested_item_is_found() -> None:
    ds = ct_dataset()
    ds.ContentSequence = Sequence([item_with(TextValue="seen by Winifred")])
    with pytest.raises(Refused, match="PatientName"):
        engine("clean_structured_content", "retain_device_identity").deidentify(_with_station(ds, "WINIFRED"))


def _with_station(ds: object, value: str) -> object:
    from pydicom.dataset import Dataset

    assert isinstance(ds, Dataset)
    ds.StationName = value  # kept by retain_device_identity: the name may not be there
    return ds


def test_engine_refuses_kept_identifier() -> None:
    ds = ct_dataset()
    ds.add_new(0x00081010, "SH", "HOLLOWAY-CT")  # Station Name kept by retain_device_identity
    with pytest.raises(Refused, match="PatientName"):
        engine("retain_device_identity").deidentify(ds)


def test_short_and_cjk_names_are_searched() -> None:
    ds = ct_dataset()
    ds.PatientName = "陈^伟"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StationName = "陈伟CT"
    with pytest.raises(Refused):
        engine("retain_device_identity").deidentify(ds)


def test_deflated_output_is_searched_inflated() -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = ct_dataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.StationName = "HOLLOWAY"
    with pytest.raises(Refused):
        engine("retain_device_identity").deidentify(ds)


def test_legitimately_kept_values_are_not_hits() -> None:
    ds = ct_dataset()
    ds.SeriesDate = ds.StudyDate  # the same value kept in two elements it came from
    engine("retain_longitudinal_full_dates").deidentify(ds)
    engine("retain_uids").deidentify(ct_dataset())


def test_kept_value_equal_to_a_removed_one_is_refused() -> None:
    ds = ct_dataset()
    ds.PatientBirthDate = "20210314"  # birth date (removed) equals the kept study date
    with pytest.raises(Refused, match="verify"):
        engine("retain_longitudinal_full_dates").deidentify(ds)
