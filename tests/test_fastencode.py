"""fastencode writes the same bytes as pydicom's writer: on every pydicom test file as read
(raw elements, many character sets and VRs) and on engine outputs (values the engine wrote)."""

from __future__ import annotations

import warnings
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from dicom_proxy import fastencode
from dicom_proxy.models import Refused
from tests.dicomfactory import TEST_FILES, ct_dataset, engine

# pydicom's bundled test files only (get_testdata_files would try to download more)
_FILES = sorted(TEST_FILES.glob("*.dcm"))


def _readable(path: Path) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, force=True)
        return ds.original_encoding[0] is not None and len(ds) > 0
    except Exception:
        return False


@pytest.mark.parametrize("path", [p for p in _FILES if _readable(p)], ids=lambda p: p.name)
def test_elements_as_read_are_written_as_pydicom_writes_them(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = dcmread(path, force=True), dcmread(path, force=True)
        implicit, little = theirs.original_encoding
        expected = DicomBytesIO()
        expected.is_implicit_VR, expected.is_little_endian = implicit, little
        try:
            write_dataset(expected, theirs)
        except Exception:
            pytest.skip("pydicom itself cannot write this file's data set")
        assert fastencode.write_elements(ours, bool(implicit), bool(little)) == expected.getvalue()


def _engine_output(path: Path | None) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ct_dataset(16, 16) if path is None else dcmread(path, force=True)
        return engine("clean_descriptors").deidentify(ds).encoded


@pytest.mark.parametrize(
    "path", [None, *[p for p in _FILES if _readable(p)][:60]], ids=lambda p: getattr(p, "name", "ct")
)
def test_engine_output_is_the_same_with_pydicoms_writer(path: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        fast = _engine_output(path)
    except Refused:
        pytest.skip("refused by the engine (no output to compare)")
    monkeypatch.setattr(fastencode, "_fast", lambda *args: None)  # every element by pydicom
    monkeypatch.setattr(fastencode, "write_file_meta", lambda meta: None)
    assert fast == _engine_output(path)
    assert dcmread(BytesIO(fast)).SOPInstanceUID
