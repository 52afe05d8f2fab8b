"""Decode what arrives and encode what leaves, without touching Pixel Data.

pydicom parses lazily: elements stay raw bytes until accessed, so Pixel Data that no rule
touches is copied through unchanged, and each object is encoded exactly once.
"""

from __future__ import annotations

import zlib
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom_proxy import __version__
from dicom_proxy.models import Refused
from dicom_proxy.status import StoreStatus

# Our Implementation Class UID (PS3.7 D.3.3.2): a fixed 2.25 UID generated once for dicom-proxy.
IMPLEMENTATION_CLASS_UID = UID("2.25.229395738514155395347318870432585741412")
IMPLEMENTATION_VERSION_NAME = f"DICOM_PROXY_{__version__.replace('.', '')}"[:16]


def decode_received(dataset_bytes: bytes, transfer_syntax_uid: str) -> Dataset:
    """Parse a C-STORE data set (no File Meta) encoded in `transfer_syntax_uid`.

    Raises Refused(CANNOT_PARSE) for anything that does not parse: fail closed.
    """
    syntax = UID(transfer_syntax_uid)
    try:
        raw = dataset_bytes
        if syntax == DeflatedExplicitVRLittleEndian:
            raw = zlib.decompress(raw, -zlib.MAX_WBITS)
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
    """Read a Part 10 file (or a raw data set with force) for offline de-identification."""
    try:
        dataset = dcmread(path, force=True)
        if "TransferSyntaxUID" not in dataset.file_meta:
            raise ValueError("no transfer syntax")
        _touch_all(dataset)
    except Exception as exc:
        raise Refused(f"file cannot be parsed ({type(exc).__name__})", StoreStatus.CANNOT_PARSE) from None
    return dataset


_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def _touch_all(dataset: Dataset) -> None:
    for element in dataset.iterall():
        # iterall converts raw elements (and recurses into sequences); Pixel Data stays bytes.
        if element.tag in _PIXEL_TAGS:
            continue


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
