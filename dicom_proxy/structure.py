"""Structural check of an encoded data set before pydicom parses it (PS3.5 7.1, 7.5).

pydicom is lenient: a value cut short by a truncated transfer is returned short with a warning,
and a missing delimiter ends the data set quietly. A proxy must not forward such an object as if
it were complete, so every element's length is checked against its container here, undefined
lengths must end with their delimiters, and sequence nesting is bounded (deep nesting would
otherwise exhaust pydicom's recursion).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

UNDEFINED = 0xFFFFFFFF
ITEM = (0xFFFE, 0xE000)
ITEM_DELIMITER = (0xFFFE, 0xE00D)
SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)
PIXEL_DATA = (0x7FE0, 0x0010)
# PS3.5 Table 7.1-1: explicit VRs with a 2-byte reserved field and a 4-byte length.
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
ALL_VRS = LONG_VRS | {
    b"AE",
    b"AS",
    b"AT",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"FL",
    b"FD",
    b"IS",
    b"LO",
    b"LT",
    b"PN",
    b"SH",
    b"SL",
    b"SS",
    b"ST",
    b"TM",
    b"UI",
    b"UL",
    b"US",
}
# Real objects nest a few levels (SR content trees rarely exceed 20).
MAX_SEQUENCE_DEPTH = 48


class StructureError(ValueError):
    """The encoding is inconsistent (truncated, overlong, unterminated or too deep)."""


@dataclass(frozen=True)
class PixelDataSpan:
    """Where the top-level Pixel Data element lies in the encoded data set."""

    start: int  # first byte of the element header
    value_start: int
    value_end: int  # end of the value (before the sequence delimiter, if undefined length)
    end: int  # first byte after the element (after its delimiter)
    vr: str | None  # None in implicit VR
    undefined_length: bool


class _Walker:
    def __init__(self, data: bytes, implicit_vr: bool, little_endian: bool) -> None:
        self.data = data
        self.implicit_vr = implicit_vr
        self.order = "<" if little_endian else ">"
        self.pixel_data: PixelDataSpan | None = None
        self.end = len(data)

    def header(self, pos: int, end: int) -> tuple[tuple[int, int], bytes | None, int, int]:
        """(tag, VR or None, value length, header size) of the element at `pos`."""
        if end - pos < 8:
            raise StructureError("element header cut short")
        group, element = struct.unpack_from(self.order + "HH", self.data, pos)
        tag = (group, element)
        if group == 0xFFFE or self.implicit_vr:
            (length,) = struct.unpack_from(self.order + "I", self.data, pos + 4)
            return tag, None, length, 8
        vr = self.data[pos + 4 : pos + 6]
        if vr in LONG_VRS:
            if end - pos < 12:
                raise StructureError("element header cut short")
            (length,) = struct.unpack_from(self.order + "I", self.data, pos + 8)
            return tag, vr, length, 12
        (length,) = struct.unpack_from(self.order + "H", self.data, pos + 6)
        return tag, vr, length, 8

    def dataset(self, pos: int, end: int, depth: int, delimited: bool) -> int:
        """Walk elements until `end` (or the item delimiter); return the position after."""
        while pos < end:
            # The count runs only where an element would start with NUL bytes (no tag of a
            # data set is (0000,0000)): counting at every element was quadratic in the size.
            if (
                depth == 0
                and not delimited
                and not any(self.data[pos : min(pos + 4, end)])
                and self.data.count(0, pos, end) == end - pos
            ):
                # Trailing NUL padding after the last element (some senders pad to an even or
                # block size): unambiguous, not an element; the data set ends here.
                self.end = pos
                return pos
            tag, vr, length, size = self.header(pos, end)
            if tag == ITEM_DELIMITER and delimited:
                return pos + size
            if tag[0] == 0xFFFE:
                raise StructureError("unexpected item or delimiter tag")
            start = pos
            pos += size
            if length == UNDEFINED:
                pos = self.undefined_length_value(tag, vr, pos, end, depth)
                if tag == PIXEL_DATA and depth == 0:
                    self._record_pixel_data(start, start + size, pos - 8, pos, vr, True)
                continue
            if pos + length > end:
                raise StructureError("value extends past the end of its container")
            if vr == b"SQ":
                self.sequence(pos, pos + length, depth + 1, fragments=False, delimited=False)
            if tag == PIXEL_DATA and depth == 0:
                self._record_pixel_data(start, pos, pos + length, pos + length, vr, False)
            pos += length
        if delimited:
            raise StructureError("item delimiter missing")
        return pos

    def _record_pixel_data(
        self, start: int, value_start: int, value_end: int, end: int, vr: bytes | None, undefined: bool
    ) -> None:
        self.pixel_data = PixelDataSpan(start, value_start, value_end, end, vr.decode() if vr else None, undefined)

    def undefined_length_value(self, tag: tuple[int, int], vr: bytes | None, pos: int, end: int, depth: int) -> int:
        if tag == PIXEL_DATA and vr in (b"OB", b"OW", None):
            return self.sequence(pos, end, depth, fragments=True, delimited=True)  # PS3.5 A.4
        if vr in (None, b"SQ"):
            return self.sequence(pos, end, depth + 1, fragments=False, delimited=True)
        if vr == b"UN":
            # PS3.5 6.2.2: UN of undefined length holds an Implicit VR Little Endian sequence.
            inner = _Walker(self.data, True, True)
            return inner.sequence(pos, end, depth + 1, fragments=False, delimited=True)
        raise StructureError("undefined length on a VR that cannot have one")

    def sequence(self, pos: int, end: int, depth: int, fragments: bool, delimited: bool) -> int:
        """Walk items until the sequence delimiter (or `end` for a defined-length sequence)."""
        if depth > MAX_SEQUENCE_DEPTH:
            raise StructureError("sequences nested too deeply")
        while pos < end:
            tag, _, length, size = self.header(pos, end)
            if tag == SEQUENCE_DELIMITER:
                return pos + size
            if tag != ITEM:
                raise StructureError("sequence holds something other than items")
            pos += size
            if length == UNDEFINED and not fragments:
                pos = self.dataset(pos, end, depth, delimited=True)
                continue
            if length == UNDEFINED or pos + length > end:
                raise StructureError("item extends past the end of its sequence")
            if not fragments:
                self.dataset(pos, pos + length, depth, delimited=False)
            pos += length
        if delimited:
            raise StructureError("sequence delimiter missing")
        return pos


def check_structure(data: bytes, implicit_vr: bool, little_endian: bool) -> tuple[PixelDataSpan | None, int]:
    """Raise StructureError unless `data` is a complete, consistently encoded data set;
    return where its top-level Pixel Data lies (None when it has none) and where the data set
    ends (before trailing NUL padding).

    Like pydicom's reader, accept a data set declared explicit VR that is in fact implicit
    (a common sender bug): pydicom then reads it as implicit, and we re-encode it correctly.
    """
    if not implicit_vr and len(data) >= 6 and bytes(data[4:6]) not in ALL_VRS:
        implicit_vr = True
    walker = _Walker(data, implicit_vr, little_endian)
    walker.dataset(0, len(data), 0, delimited=False)
    return walker.pixel_data, walker.end
