"""Encode a data set's elements quickly, byte for byte as pydicom's writer would (PS3.5 7.1).

pydicom's `write_data_element` costs tens of microseconds per element, most of an object's
encoding time. Most of a de-identified header is either kept verbatim (still a RawDataElement:
its value bytes are copied as they arrived) or short ASCII text, UIDs and binary numbers the
engine wrote. Those are encoded here with a few struct calls; every other element (sequences,
DS/IS, non-ASCII text, AT, ambiguous VRs, undefined lengths) goes to pydicom's writer, so the
output is identical to pydicom's (tests/test_fastencode.py compares them on many objects).
Verify searches the encoded bytes, whichever writer produced them.
"""

from __future__ import annotations

import struct

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

_UNDEFINED = 0xFFFFFFFF
# Explicit VR with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
_LONG = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
# Text VRs whose value this module encodes when it is ASCII (same bytes in every character set
# of PS3.3 C.12.1.1.2, ISO 2022 included: ASCII is the default G0 set).
_TEXT = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UR", "UT"})
# Binary numbers: VR -> struct format character (PS3.5 6.2).
_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}


def write_elements(
    dataset: Dataset, implicit_vr: bool, little_endian: bool, parent_encoding: str | list[str] = default_encoding
) -> bytes:
    """The encoded elements of `dataset` (no File Meta), in ascending tag order, as
    `pydicom.filewriter.write_dataset(fp, dataset, parent_encoding)` would write them."""
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit_vr, little_endian
    if not _written_as_is(dataset, implicit_vr, little_endian):
        # pydicom converts raw elements and corrects ambiguous VRs here: leave it all to it.
        write_dataset(fp, dataset, parent_encoding)
        return bytes(fp.getvalue())
    order = "<" if little_endian else ">"
    charset = dataset.get("SpecificCharacterSet", parent_encoding)
    for tag in sorted(dataset.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # retired group lengths are not written (PS3.5 7.2)
        element = dataset.get_item(tag)
        encoded = _fast(element, implicit_vr, order)
        if encoded is None and isinstance(element, DataElement) and element.VR == "SQ":
            encoded = _sequence(element, implicit_vr, little_endian, convert_encodings(charset))
        if encoded is None:
            write_data_element(fp, element, charset)
        else:
            fp.write(encoded)
    return bytes(fp.getvalue())


def _written_as_is(dataset: Dataset, implicit_vr: bool, little_endian: bool) -> bool:
    """Whether pydicom's writer would write `dataset`'s elements as they are: read in this
    encoding and character set, or built here (no raw element to convert, no ambiguous VR
    to correct: the items the engine writes, such as the de-identification method codes)."""
    if (implicit_vr, little_endian) == dataset.original_encoding and (
        dataset.original_character_set == dataset._character_set
    ):
        return True
    return _built_here(dataset)


def _built_here(dataset: Dataset) -> bool:
    """No raw element and no ambiguous VR at any level (pydicom would change nothing)."""
    for element in dataset.elements():
        if not isinstance(element, DataElement) or " or " in (element.VR or ""):
            return False
        if element.VR == "SQ" and not all(_built_here(item) for item in element.value or ()):
            return False
    return True


def _sequence(element: DataElement, implicit_vr: bool, little_endian: bool, encodings: list[str]) -> bytes:
    """A sequence and its items (PS3.5 7.5) as pydicom's write_sequence writes them: each
    item's length filled in unless the item was read with an undefined length."""
    order = "<" if little_endian else ">"
    items = []
    for item in element.value or ():
        body = write_elements(item, implicit_vr, little_endian, encodings)
        if getattr(item, "is_undefined_length_sequence_item", False):
            items.append(struct.pack(f"{order}HHI", 0xFFFE, 0xE000, _UNDEFINED) + body + _delimiter(order, 0xE00D))
        else:
            items.append(struct.pack(f"{order}HHI", 0xFFFE, 0xE000, len(body)) + body)
    value = b"".join(items)
    undefined = element.is_undefined_length
    header = struct.pack(f"{order}HH", element.tag >> 16, element.tag & 0xFFFF)
    if not implicit_vr:
        header += b"SQ\0\0"
    header += struct.pack(f"{order}I", _UNDEFINED if undefined else len(value))
    return header + value + (_delimiter(order, 0xE0DD) if undefined else b"")


def _delimiter(order: str, element: int) -> bytes:
    return struct.pack(f"{order}HHI", 0xFFFE, element, 0)


def _fast(element: DataElement | RawDataElement, implicit_vr: bool, order: str) -> bytes | None:
    """The element's bytes, or None when pydicom must write it."""
    if isinstance(element, RawDataElement):
        value = element.value
        if element.length == _UNDEFINED or not isinstance(value, bytes):
            return None
        if element.is_implicit_VR != implicit_vr:
            return None
        return _element(element.tag, element.VR, value, implicit_vr, order)
    vr = element.VR
    if element.is_undefined_length:
        return None
    if vr in _TEXT or vr == "UI" or vr == "PN":
        text = _text(element.value)
        if text is None:
            return None
        data = text.encode("ascii")
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
        return _element(element.tag, vr, data, implicit_vr, order)
    if vr in _NUMBERS:
        numbers = _numbers(element.value)
        if numbers is None:
            return None
        try:
            data = struct.pack(f"{order}{len(numbers)}{_NUMBERS[vr]}", *numbers)
        except struct.error:
            return None  # out of range for the VR: pydicom reports it its own way
        return _element(element.tag, vr, data, implicit_vr, order)
    return None


def _text(value: object) -> str | None:
    """ASCII text of a str or multi-valued str value; None for anything else."""
    if value is None:
        return ""
    if isinstance(value, (str, PersonName)):
        text = str(value)
    elif isinstance(value, (MultiValue, list, tuple)) and all(isinstance(v, (str, PersonName)) for v in value):
        text = "\\".join(str(v) for v in value)
    else:
        return None
    return text if text.isascii() else None


def _numbers(value: object) -> list[int | float] | None:
    if value is None:
        return []
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (MultiValue, list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return list(value)
    return None


def _element(tag: int, vr: str | None, value: bytes, implicit_vr: bool, order: str) -> bytes | None:
    """Tag, VR and length header (PS3.5 7.1.1-7.1.3) followed by the value."""
    header = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF)
    if implicit_vr:
        return header + struct.pack(f"{order}I", len(value)) + value
    if vr is None or len(vr) != 2:
        return None
    if vr in _LONG:
        return header + vr.encode("ascii") + struct.pack(f"{order}HI", 0, len(value)) + value
    if len(value) > 0xFFFF:
        return None  # pydicom turns it into UN (PS3.5 6.2.2): let it
    return header + vr.encode("ascii") + struct.pack(f"{order}H", len(value)) + value


def write_file_meta(file_meta: Dataset) -> bytes | None:
    """File Meta Information (PS3.10 7.1): its group length, (0002,0001) version 00\\01 and
    the given elements, Explicit VR Little Endian; None if an element needs pydicom."""
    body = [_element(0x00020001, "OB", b"\x00\x01", False, "<")]
    for tag in sorted(file_meta.keys()):
        if tag in (0x00020000, 0x00020001):
            continue
        body.append(_fast(file_meta.get_item(tag), False, "<"))
    if any(b is None for b in body):
        return None
    data = b"".join(b for b in body if b is not None)
    return _element(0x00020000, "UL", struct.pack("<I", len(data)), False, "<") + data  # type: ignore[operator]
