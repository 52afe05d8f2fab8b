"""A minimal reader of an encoded output for verify: every element's tag, declared VR and value
bytes, at every nesting level, straight from the bytes (PS3.5 7.1-7.5, Explicit VR Little
Endian only).

Verify used to parse its output again with pydicom: a quarter of the engine's time for a CT
header, most of it building objects verify never needs. This reader builds nothing but the
elements. It covers the encodings the engine writes for almost every object; anything else
(implicit VR, big endian, deflate, UN, undefined lengths outside sequences and Pixel Data, a
value that runs past its container, deep nesting) raises `Unusual` and verify reads that
object with pydicom as before. It never decides that something is safe: it only hands verify
the same values pydicom would.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element

from dicom_proxy.structure import ALL_VRS, LONG_VRS, MAX_SEQUENCE_DEPTH, UNDEFINED

_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_CHARSET = 0x00080005
_TAG = struct.Struct("<HH")
_SHORT_LENGTH = struct.Struct("<H")
_LONG_LENGTH = struct.Struct("<I")


class Unusual(Exception):
    """Not an encoding this reader takes: verify reads the object with pydicom instead."""


@dataclass
class Element:
    tag: int
    VR: str  # as declared (the name pydicom's raw elements use)
    value: bytes
    items: list[Level] = field(default_factory=list)  # SQ only


@dataclass
class Level:
    """One data set: the top level, the File Meta group or a sequence item."""

    elements: list[Element] = field(default_factory=list)

    def encodings(self, inherited: list[str]) -> list[str]:
        """The Python codecs of this level's text, as pydicom's Dataset._character_set gives
        them: its own Specific Character Set, else the enclosing level's."""
        for element in self.elements:
            if element.tag == _CHARSET:
                converted = convert_raw_data_element(_raw(element))
                return convert_encodings(converted.value) if converted else inherited
        return inherited

    def creator(self, tag: int, encodings: list[str]) -> str:
        """The value of the Private Creator element `tag` as pydicom gives it ("" if none)."""
        for element in self.elements:
            if element.tag == tag:
                return str(convert_raw_data_element(_raw(element), encoding=encodings).value).strip()
        return ""


def default_encodings() -> list[str]:
    """What a data set without Specific Character Set is read with (pydicom's default)."""
    return convert_encodings(default_encoding)


def read_output(parts: list[bytes | memoryview]) -> tuple[Level, Level]:
    """File Meta and data set of a Part 10 output given as its consecutive parts without the
    untouched Pixel Data value (the header part, then any parts after Pixel Data)."""
    head = memoryview(parts[0])
    if len(head) < 132 or bytes(head[128:132]) != b"DICM":
        raise Unusual("no Part 10 preamble")
    meta, dataset = Level(), Level()
    for element in _elements(head, 132, len(head), 0, top=True)[0]:
        (meta if element.tag >> 16 == 2 else dataset).elements.append(element)
    syntax = next((e.value for e in meta.elements if e.tag == 0x00020010), b"").rstrip(b"\x00 ")
    if syntax in (b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.1.99", b""):
        raise Unusual("not an Explicit VR Little Endian data set")  # implicit, big endian, deflated
    for part in parts[1:]:
        view = memoryview(part)
        dataset.elements.extend(_elements(view, 0, len(view), 0, top=True)[0])
    return meta, dataset


def _elements(
    data: memoryview, start: int, end: int | None, depth: int, top: bool = False
) -> tuple[list[Element], int]:
    """The elements from `start` to `end` (None: up to and past an Item Delimitation Item),
    and where they end."""
    if depth > MAX_SEQUENCE_DEPTH:
        raise Unusual("nested too deep")
    found: list[Element] = []
    position = start
    limit = len(data) if end is None else end
    while position < limit:
        element, position = _element(data, position, limit, depth, top)
        if element is None:
            if end is not None:
                raise Unusual("item delimiter in a defined-length item")
            return found, position
        found.append(element)
    if end is None or position != end:
        raise Unusual("item or data set not closed where its length says")
    return found, position


def _element(data: memoryview, position: int, limit: int, depth: int, top: bool) -> tuple[Element | None, int]:
    if position + 8 > limit:
        raise Unusual("element header cut short")
    group, number = _TAG.unpack_from(data, position)
    tag = group << 16 | number
    if tag == _ITEM_END:
        return None, position + 8
    if group == 0xFFFE:
        raise Unusual("item outside a sequence")
    code = bytes(data[position + 4 : position + 6])
    if code == b"UN" or code not in ALL_VRS:
        raise Unusual("VR UN or unknown")
    if code in LONG_VRS:
        if position + 12 > limit:
            raise Unusual("element header cut short")
        (length,) = _LONG_LENGTH.unpack_from(data, position + 8)
        value_start = position + 12
    else:
        (length,) = _SHORT_LENGTH.unpack_from(data, position + 6)
        value_start = position + 8
    vr = code.decode("ascii")
    if length == UNDEFINED:
        if vr == "SQ":
            items, after = _undefined_sequence(data, value_start, limit, depth)
            return Element(tag, vr, b"", items), after
        if top and tag == _PIXEL_DATA:
            return Element(tag, vr, b""), _skip_fragments(data, value_start, limit)
        raise Unusual("undefined length outside a sequence")
    value_end = value_start + length
    if value_end > limit:
        raise Unusual("value runs past its container")
    if vr == "SQ":
        return Element(tag, vr, b"", _defined_sequence(data, value_start, value_end, depth)), value_end
    if top and tag == _PIXEL_DATA:
        return Element(tag, vr, b""), value_end  # the pixel stage's part: not read
    return Element(tag, vr, bytes(data[value_start:value_end])), value_end


def _defined_sequence(data: memoryview, start: int, end: int, depth: int) -> list[Level]:
    items: list[Level] = []
    position = start
    while position < end:
        level, position = _item(data, position, end, depth)
        items.append(level)
    if position != end:
        raise Unusual("sequence not closed where its length says")
    return items


def _undefined_sequence(data: memoryview, start: int, limit: int, depth: int) -> tuple[list[Level], int]:
    items: list[Level] = []
    position = start
    while True:
        if position + 8 > limit:
            raise Unusual("sequence not delimited")
        group, number = _TAG.unpack_from(data, position)
        if group << 16 | number == _SEQUENCE_END:
            return items, position + 8
        level, position = _item(data, position, limit, depth)
        items.append(level)


def _item(data: memoryview, position: int, limit: int, depth: int) -> tuple[Level, int]:
    if position + 8 > limit:
        raise Unusual("item header cut short")
    group, number = _TAG.unpack_from(data, position)
    (length,) = _LONG_LENGTH.unpack_from(data, position + 4)
    if group << 16 | number != _ITEM:
        raise Unusual("not an item")
    start = position + 8
    if length == UNDEFINED:
        elements, after = _elements(data[:limit], start, None, depth + 1)
        return Level(elements), after
    if start + length > limit:
        raise Unusual("item runs past its sequence")
    return Level(_elements(data, start, start + length, depth + 1)[0]), start + length


def _skip_fragments(data: memoryview, position: int, limit: int) -> int:
    """Past the items of encapsulated Pixel Data (PS3.5 A.4) and its Sequence Delimitation Item."""
    while position + 8 <= limit:
        group, number = _TAG.unpack_from(data, position)
        (length,) = _LONG_LENGTH.unpack_from(data, position + 4)
        tag = group << 16 | number
        if tag == _SEQUENCE_END:
            return position + 8
        if tag != _ITEM or length == UNDEFINED:
            raise Unusual("encapsulated Pixel Data not made of items")
        position += 8 + length
    raise Unusual("encapsulated Pixel Data not delimited")


def _raw(element: Element) -> RawDataElement:
    return RawDataElement(element.tag, element.VR, len(element.value), element.value, 0, False, True)  # type: ignore[arg-type]
