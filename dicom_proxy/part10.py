"""Part 10 files (PS3.10 7): decode what arrives, encode what leaves, transcode for delivery.

The one place that reads and writes encoded objects: de-identification decodes and encodes here,
delivery reads stored files' meta information and converts between transfer syntaxes here.

The header is parsed by pydicom; the top-level Pixel Data value stays a view into the received
bytes (a RawDataElement holding a memoryview) unless the pixel stage needs it. On the way out,
the header is encoded by pydicom and the untouched Pixel Data element is written around that
view, so a large object is held in memory about once, and each object is encoded exactly once.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info, read_dataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels.decoders.base import get_decoder
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_proxy import __version__, fastencode
from dicom_proxy.models import Refused
from dicom_proxy.status import StoreStatus
from dicom_proxy.structure import PixelDataSpan, check_structure

# Our Implementation Class UID (PS3.7 D.3.3.2): a fixed 2.25 UID generated once for dicom-proxy.
IMPLEMENTATION_CLASS_UID = UID("2.25.229395738514155395347318870432585741412")
IMPLEMENTATION_VERSION_NAME = f"DICOM_PROXY_{__version__.replace('.', '')}"[:16]

# A deflated data set is inflated in memory; bound it so a small "zip bomb" cannot exhaust RAM.
MAX_INFLATED_BYTES = 2 * 1024**3

PIXEL_DATA = Tag(0x7FE00010)
_UNDEFINED = 0xFFFFFFFF

# One pixel decode or encode at a time in this process: the C codec libraries (libjpeg,
# openjpeg, CharLS, RLE) are not all documented as thread-safe, and a crash would take the node
# down. The pixel stage and the delivery transcoder both hold it.
CODEC_LOCK = threading.Lock()

# Every receiver can read these (PS3.5 A.1, A.2; PS3.7 B: Implicit VR Little Endian is the
# default every node supports): what an object is converted to when its own syntax is refused.
UNCOMPRESSED_LITTLE_ENDIAN = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class ConversionError(Exception):
    """The object cannot be converted to the requested transfer syntax. No values in the message."""


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


# -- delivery: what a stored file is and what it can be sent as ------------------------------


@dataclass(frozen=True)
class FileMeta:
    """The File Meta Information delivery needs (PS3.10 7.1); the UIDs are pseudonyms."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: UID


def read_file_meta(path: Path) -> FileMeta | None:
    """The stored file's meta information, or None when it is not a readable Part 10 file.

    I/O errors (OSError) are not an answer about the file and propagate.
    """
    with open(path, "rb") as handle:
        preamble = handle.read(132)
        if len(preamble) < 132 or preamble[128:] != b"DICM":
            return None
        try:
            meta = _read_file_meta_info(handle)
            return FileMeta(
                str(meta.MediaStorageSOPClassUID),
                str(meta.MediaStorageSOPInstanceUID),
                UID(str(meta.TransferSyntaxUID)),
            )
        except (AttributeError, KeyError, ValueError, EOFError, struct.error):
            return None  # a required element missing or unparsable: not a usable Part 10 file


@dataclass(frozen=True)
class Identity:
    """The identity that names a delivered file (`<Study>/<Series>/<SOP>.dcm`); pseudonyms."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


def read_identity(path: Path) -> Identity | None:
    """Study, Series and SOP Instance UID of a stored file; None when its header does not parse.

    I/O errors (OSError) are not an answer about the file and propagate.
    """
    try:
        header = dcmread(
            path,
            stop_before_pixels=True,
            specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        )
        return Identity(str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID))
    except OSError:
        raise
    except Exception:
        return None  # pydicom's verdict on this header, whatever it raises: it does not parse


def sendable_syntaxes(syntax: UID) -> tuple[UID, ...]:
    """Every transfer syntax an object stored in `syntax` may be sent in, best first.

    Its own syntax first (sent as stored, never decoded), then the uncompressed little-endian
    syntaxes it converts to without further loss (PS3.5 A.2, A.4: decoding a compressed stream
    adds no loss). A compressed syntax that no installed decoder reads has only itself.
    """
    if not syntax.is_transfer_syntax:
        return (syntax,)
    if syntax.is_compressed and not _decodable(syntax):
        return (syntax,)
    return (syntax, *(s for s in UNCOMPRESSED_LITTLE_ENDIAN if s != syntax))


def _decodable(syntax: UID) -> bool:
    try:
        return bool(get_decoder(syntax).is_available)
    except NotImplementedError:
        return False


def transcode(path: Path, target: UID) -> Encoded:
    """Re-encode the stored Part 10 file at `path` in `target` (an uncompressed little-endian
    syntax): decompress encapsulated Pixel Data (PS3.5 A.4), swap big-endian words (PS3.5 7.3),
    switch implicit/explicit VR (PS3.5 7.1). The SOP Instance UID never changes.

    Raises ConversionError when this object cannot be decoded or converted.
    """
    if target not in UNCOMPRESSED_LITTLE_ENDIAN:
        raise ConversionError(f"conversion to {target.name} is not offered")
    try:
        dataset = read_file(path)
    except Refused:
        raise ConversionError("stored file does not parse") from None
    materialize_pixel_data(dataset)
    source = UID(dataset.file_meta.TransferSyntaxUID)
    if source.is_compressed:
        if PIXEL_DATA in dataset:
            _decompress(dataset, source)
    elif not source.is_little_endian:
        to_little_endian(dataset, pixel_data=True)
    dataset.file_meta.TransferSyntaxUID = target
    return encode(dataset)


def _decompress(dataset: Dataset, source: UID) -> None:
    if not _decodable(source):
        raise ConversionError(f"no decoder for {source.name}")
    try:
        with CODEC_LOCK:
            # Colour JPEG decodes to RGB and Photometric Interpretation says so; a new SOP
            # Instance UID would break the pseudonym mapping.
            dataset.decompress(generate_instance_uid=False)
    except Exception as exc:
        # The decoder's verdict on this object's stream (corrupt, unsupported layout).
        raise ConversionError(f"Pixel Data cannot be decoded from {source.name} ({type(exc).__name__})") from None


_WORD_SIZE = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def to_little_endian(dataset: Dataset, *, pixel_data: bool = False) -> None:
    """Byte-swap the binary word values (OW, OF, OD, OL, OV) of a big endian data set so it
    can be written little endian (PS3.5 7.3); Pixel Data too when `pixel_data`."""
    for element in list(dataset):  # iterating converts raw elements with the original order
        if element.VR == "SQ":
            for item in element.value:
                to_little_endian(item, pixel_data=pixel_data)
        elif (pixel_data or element.tag != PIXEL_DATA) and element.VR in _WORD_SIZE and element.value:
            element.value = _swap(element.value, _WORD_SIZE[element.VR])
    dataset.set_original_encoding(False, True, dataset.original_character_set)


def _swap(value: bytes, size: int) -> bytes:
    if len(value) % size:
        raise ConversionError("binary value length is not a multiple of its word size")
    return np.frombuffer(value, dtype=f">u{size}").astype(f"<u{size}").tobytes()
