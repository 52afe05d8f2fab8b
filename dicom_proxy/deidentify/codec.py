"""Decode what arrives and encode what leaves, without copying or decoding Pixel Data.

The header is parsed by pydicom; the top-level Pixel Data value stays a view into the received
bytes (a RawDataElement holding a memoryview) unless the pixel stage needs it. On the way out,
the header is encoded by pydicom and the untouched Pixel Data element is written around that
view, so a large object is held in memory about once, and each object is encoded exactly once.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_proxy import __version__
from dicom_proxy.deidentify import fastencode
from dicom_proxy.deidentify.structure import PixelDataSpan, check_structure
from dicom_proxy.models import Refused
from dicom_proxy.status import StoreStatus

# Our Implementation Class UID (PS3.7 D.3.3.2): a fixed 2.25 UID generated once for dicom-proxy.
IMPLEMENTATION_CLASS_UID = UID("2.25.229395738514155395347318870432585741412")
IMPLEMENTATION_VERSION_NAME = f"DICOM_PROXY_{__version__.replace('.', '')}"[:16]

# A deflated data set is inflated in memory; bound it so a small "zip bomb" cannot exhaust RAM.
MAX_INFLATED_BYTES = 2 * 1024**3

PIXEL_DATA = Tag(0x7FE00010)
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class Encoded:
    """An encoded Part 10 object as consecutive parts (written with one writev).

    `pixel_value` is the index of the untouched Pixel Data value among `parts` (None when the
    Pixel Data was encoded with the header): verify searches everything else.
    """

    parts: tuple[bytes | memoryview, ...]
    pixel_value: int | None = None

    def searchable(self) -> bytes:
        return b"".join(p for i, p in enumerate(self.parts) if i != self.pixel_value)


def decode_received(dataset_bytes: bytes, transfer_syntax_uid: str) -> Dataset:
    """Parse a C-STORE data set (no File Meta) encoded in `transfer_syntax_uid`.

    Raises Refused(CANNOT_PARSE) for anything that does not parse: fail closed.
    """
    syntax = UID(transfer_syntax_uid)
    try:
        raw = dataset_bytes
        if syntax == DeflatedExplicitVRLittleEndian:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            raw = inflater.decompress(raw, MAX_INFLATED_BYTES)
            if inflater.unconsumed_tail:
                raise ValueError("deflated data set inflates beyond the limit")
        span, end = check_structure(raw, syntax.is_implicit_VR, syntax.is_little_endian)
        if end < len(raw):
            raw = raw[:end]  # without the trailing NUL padding (a copy, for padded objects only)
        dataset = _read(raw, syntax, span)
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = syntax
        dataset.file_meta = meta
    except Refused:
        raise
    except Exception as exc:
        raise Refused(f"data set cannot be parsed ({type(exc).__name__})", StoreStatus.CANNOT_PARSE) from None
    return dataset


def _read(raw: bytes, syntax: UID, span: PixelDataSpan | None) -> Dataset:
    """pydicom parses the header (and anything after Pixel Data); Pixel Data stays a view."""
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    if span is None:
        return read_dataset(BytesIO(raw), implicit, little)
    view = memoryview(raw)
    dataset = read_dataset(BytesIO(view[: span.start]), implicit, little)
    if span.end < len(raw):
        tail = read_dataset(BytesIO(view[span.end :]), implicit, little)
        for element in tail.elements():
            dataset[element.tag] = element
    implicit_in_fact = span.vr is None
    dataset[PIXEL_DATA] = RawDataElement(
        PIXEL_DATA,
        span.vr,
        _UNDEFINED if span.undefined_length else span.value_end - span.value_start,
        view[span.value_start : span.value_end],  # type: ignore[arg-type]
        span.value_start,
        implicit or implicit_in_fact,
        little,
    )
    return dataset


def materialize_pixel_data(dataset: Dataset) -> None:
    """Give Pixel Data its own bytes (for the pixel stage, which decodes and replaces it)."""
    if PIXEL_DATA in dataset:
        element = dataset.get_item(PIXEL_DATA)
        if isinstance(element, RawDataElement) and isinstance(element.value, memoryview):
            dataset[PIXEL_DATA] = element._replace(value=bytes(element.value))
        elif isinstance(element.value, memoryview):
            element.value = bytes(element.value)


def read_file(path: Path) -> Dataset:
    """Read a Part 10 file for offline de-identification, through the same checks as a
    received data set."""
    try:
        with open(path, "rb") as handle:
            preamble = handle.read(132)
            if len(preamble) < 132 or preamble[128:] != b"DICM":
                raise ValueError("not a DICOM Part 10 file")
            meta = _read_file_meta_info(handle)
            syntax = str(meta.TransferSyntaxUID)
            body = handle.read()
    except Exception as exc:
        raise Refused(f"file cannot be parsed ({type(exc).__name__})", StoreStatus.CANNOT_PARSE) from None
    return decode_received(body, syntax)


def encode(dataset: Dataset) -> Encoded:
    """Encode `dataset` as a Part 10 file in the transfer syntax of its file_meta."""
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    dataset.file_meta = meta
    pixel = dataset.get_item(PIXEL_DATA) if PIXEL_DATA in dataset else None
    if pixel is not None and isinstance(pixel.value, memoryview) and syntax != DeflatedExplicitVRLittleEndian:
        return _encode_around_pixel_data(dataset, pixel, syntax)
    materialize_pixel_data(dataset)
    if syntax == DeflatedExplicitVRLittleEndian:
        buffer = BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        return Encoded((buffer.getvalue(),))
    return Encoded((_part10(dataset, syntax),))


def _part10(dataset: Dataset, syntax: UID) -> bytes:
    """Preamble, File Meta Information (PS3.10 7.1) and the data set: the bytes of pydicom's
    `save_as(enforce_file_format=True)`, with the data set's elements written by fastencode."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    meta = fastencode.write_file_meta(dataset.file_meta)
    if meta is None:
        write_file_meta_info(fp, dataset.file_meta, enforce_standard=True)
    else:
        fp.write(meta)
    return bytes(fp.getvalue()) + fastencode.write_elements(dataset, syntax.is_implicit_VR, syntax.is_little_endian)


def _encode_around_pixel_data(dataset: Dataset, pixel: RawDataElement | DataElement, syntax: UID) -> Encoded:
    """Header by pydicom, then the Pixel Data element around the untouched view, then the
    elements (if any) that follow Pixel Data (PS3.5 7.1: ascending tag order)."""
    tail = [dataset.get_item(tag) for tag in list(dataset.keys()) if tag > PIXEL_DATA]
    del dataset[PIXEL_DATA]
    for element in tail:
        del dataset[element.tag]
    try:
        head = _part10(dataset, syntax)
        value = pixel.value
        assert isinstance(value, memoryview)
        undefined = _is_undefined_length(pixel)
        parts: list[bytes | memoryview] = [head, _pixel_header(dataset, pixel, undefined, syntax), value]
        if undefined:
            parts.append(_sequence_delimiter(syntax.is_little_endian))
        if tail:
            parts.append(_write_elements(tail, syntax))
    finally:
        dataset[PIXEL_DATA] = pixel
        for element in tail:
            dataset[element.tag] = element
    return Encoded(tuple(parts), pixel_value=2)


def _is_undefined_length(pixel: RawDataElement | DataElement) -> bool:
    if isinstance(pixel, RawDataElement):
        return pixel.length == _UNDEFINED
    return bool(pixel.is_undefined_length)


def _pixel_header(dataset: Dataset, pixel: RawDataElement | DataElement, undefined: bool, syntax: UID) -> bytes:
    order = "<" if syntax.is_little_endian else ">"
    tag = struct.pack(order + "HH", 0x7FE0, 0x0010)
    length = _UNDEFINED if undefined else len(pixel.value or b"")
    if syntax.is_implicit_VR:
        return tag + struct.pack(order + "I", length)
    vr = pixel.VR
    if vr not in ("OB", "OW"):
        # Unknown or ambiguous ("OB or OW", implicit VR in fact): PS3.5 8.2 and A.4 decide.
        vr = "OB" if undefined or int(dataset.get("BitsAllocated", 16)) <= 8 else "OW"
    return tag + str(vr).encode("ascii") + b"\x00\x00" + struct.pack(order + "I", length)


def _sequence_delimiter(little_endian: bool) -> bytes:
    order = "<" if little_endian else ">"
    return struct.pack(order + "HHI", 0xFFFE, 0xE0DD, 0)


def _write_elements(elements: Sequence[DataElement | RawDataElement], syntax: UID) -> bytes:
    tail = Dataset()
    for element in elements:
        tail[element.tag] = element
    buffer = DicomBytesIO()
    buffer.is_little_endian = syntax.is_little_endian
    buffer.is_implicit_VR = syntax.is_implicit_VR
    write_dataset(buffer, tail)
    return buffer.getvalue()
