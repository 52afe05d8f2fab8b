"""Undeclared UTF-8 (PS3.5 6.1.2.3): a data set without Specific Character Set, or declaring
Latin-1, whose text bytes are in fact UTF-8 (a common sender bug). Read as Latin-1, a UTF-8
name becomes mojibake that matches nothing; so when every non-ASCII text value at the top
level decodes as UTF-8 (which Latin-1 text practically never does), the data set is read, and
written, as ISO_IR 192."""

from __future__ import annotations

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dicom_proxy.dictionary import definition_vr

_TEXT_VRS = frozenset({b"LO", b"LT", b"PN", b"SH", b"ST", b"UC", b"UT", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_SINGLE_BYTE = ("", "ISO_IR 6", "ISO_IR 100")


def declare_undeclared_utf8(dataset: Dataset) -> None:
    """Set Specific Character Set to ISO_IR 192 when the text bytes say UTF-8 (see above).

    Must run before any value (or sequence) is converted: converted values keep the
    character set they were decoded with."""
    charset = dataset.get_item(0x00080005)
    declared = charset.value if charset is not None else b""
    if isinstance(declared, bytes):
        declared = declared.decode("ascii", "replace")
    if str(declared or "").strip(" \x00") not in _SINGLE_BYTE:
        return
    seen_utf8 = False
    for element in dataset.elements():
        vr = element.VR if element.VR is not None else (definition_vr(int(element.tag)) or "")
        if not isinstance(element, RawDataElement) or vr not in _TEXT_VRS or not element.value:
            continue
        value = bytes(element.value)
        if value.isascii():
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return  # genuinely single-byte text
        seen_utf8 = True
    if seen_utf8:
        dataset.SpecificCharacterSet = "ISO_IR 192"

