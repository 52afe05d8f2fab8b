"""Structural check of encoded data sets (PS3.5 7.1, 7.5): complete objects pass, damaged fail."""

from __future__ import annotations

import struct

import pytest
from pydicom.data import get_testdata_file
from pydicom.filereader import _read_file_meta_info
from pydicom.uid import UID

from dicom_proxy.structure import MAX_SEQUENCE_DEPTH, StructureError, check_structure

SQ_OPEN = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
SQ_CLOSE = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _body(name: str) -> tuple[bytes, UID]:
    with open(get_testdata_file(name), "rb") as handle:  # type: ignore[arg-type]
        handle.read(132)
        meta = _read_file_meta_info(handle)
        return handle.read(), UID(meta.TransferSyntaxUID)


def _check(body: bytes, syntax: UID) -> None:
    check_structure(body, syntax.is_implicit_VR, syntax.is_little_endian)


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "JPEG2000.dcm", "SC_rgb_jpeg.dcm", "MR_small_RLE.dcm"],
)
def test_complete_objects_pass(name: str) -> None:
    _check(*_body(name))


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtplan.dcm", "JPEG2000.dcm"])
def test_every_truncation_is_detected(name: str) -> None:
    body, syntax = _body(name)
    for cut in sorted({1, 7, 8, 13, len(body) // 3, len(body) // 2, len(body) - 1}):
        with pytest.raises(StructureError):
            _check(body[:cut], syntax)


def test_overlong_value_and_bad_delimiters_are_detected() -> None:
    overlong = b"\x10\x00\x10\x00PN\x40\x00" + b"DOE^JOHN"
    with pytest.raises(StructureError, match="past the end"):
        check_structure(overlong, False, True)
    with pytest.raises(StructureError, match="delimiter"):
        check_structure(SQ_OPEN + b"\x10\x00\x10\x00PN\x04\x00DOE^", False, True)
    with pytest.raises(StructureError):
        check_structure(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00", False, True)


def test_nesting_is_bounded() -> None:
    check_structure(SQ_OPEN * MAX_SEQUENCE_DEPTH + SQ_CLOSE * MAX_SEQUENCE_DEPTH, False, True)
    deep = MAX_SEQUENCE_DEPTH + 1
    with pytest.raises(StructureError, match="nested too deeply"):
        check_structure(SQ_OPEN * deep + SQ_CLOSE * deep, False, True)


def test_un_of_undefined_length_is_walked_as_implicit_sequence() -> None:
    item = b"\x10\x00\x10\x00" + struct.pack("<I", 4) + b"DOE^"
    un = b"\x09\x00\x10\x10UN\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + item + SQ_CLOSE
    check_structure(un, False, True)
    with pytest.raises(StructureError):
        check_structure(un[:-8], False, True)


def test_trailing_nul_padding_ends_the_data_set() -> None:
    body = b"\x10\x00\x10\x00PN\x04\x00DOE^"
    span, end = check_structure(body + bytes(7), False, True)
    assert span is None and end == len(body)
    with pytest.raises(StructureError):
        check_structure(body + b"\x00\x00\x00\x00\x01", False, True)  # not only NUL bytes
