"""Decode what arrives and encode what leaves, without touching Pixel Data.

pydicom parses lazily: elements stay raw bytes until accessed, so Pixel Data that no rule
touches is copied through unchanged, and each object is encoded exactly once.
"""

from __future__ import annotations

import zlib
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_proxy import __version__
from dicom_proxy.deidentify.structure import MAX_SEQUENCE_DEPTH, check_structure
from dicom_proxy.models import Refused
from dicom_proxy.status import StoreStatus

# Our Implementation Class UID (PS3.7 D.3.3.2): a fixed 2.25 UID generated once for dicom-proxy.
IMPLEMENTATION_CLASS_UID = UID("2.25.229395738514155395347318870432585741412")
IMPLEMENTATION_VERSION_NAME = f"DICOM_PROXY_{__version__.replace('.', '')}"[:16]


# A deflated data set is inflated in memory; bound it so a small "zip bomb" cannot exhaust RAM.
MAX_INFLATED_BYTES = 2 * 1024**3


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
        check_structure(raw, syntax.is_implicit_VR, syntax.is_little_endian)
        dataset = read_dataset(BytesIO(raw), syntax.is_implicit_VR, syntax.is_little_endian)
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = syntax
        dataset.file_meta = meta
        # Force a full parse of the header now (but not of Pixel Data) so corrupt data fails
        # here, not halfway through de-identification.
        _touch_all(dataset)
    except Refused:
        raise
    except Exception as exc:
        raise Refused(f"data set cannot be parsed ({type(exc).__name__})", StoreStatus.CANNOT_PARSE) from None
    return dataset


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


def _touch_all(dataset: Dataset) -> None:
    """Convert every raw element now (Pixel Data's value stays bytes)."""
    stack: list[tuple[Dataset, int]] = [(dataset, 0)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_SEQUENCE_DEPTH:
            raise ValueError("sequences nested too deeply")
        for element in current:  # iterating converts raw elements; Pixel Data stays bytes
            if element.VR == "SQ":
                stack.extend((item, depth + 1) for item in element.value)


def encode(dataset: Dataset) -> bytes:
    """Encode `dataset` as a Part 10 file in the transfer syntax of its file_meta."""
    syntax = UID(dataset.file_meta.TransferSyntaxUID)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    dataset.file_meta = meta
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
