"""Helpers for the de-identification tests: synthetic data sets, engines, round trips."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_proxy.config import DeidentifyConfig, PixelConfig
from dicom_proxy.deidentify import Engine
from dicom_proxy.policy import Option

KEY = b"test-key-0123456789abcdef0123456"
OTHER_KEY = b"another-key-0123456789abcdef0123"
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"

# Original identifying values planted by `ct_dataset`.
PATIENT_NAME = "HOLLOWAY^WINIFRED"
PATIENT_ID = "MRN4417823"
STUDY_UID = "1.2.826.0.1.3680043.9.7777.1.1"
SERIES_UID = "1.2.826.0.1.3680043.9.7777.1.2"
SOP_UID = "1.2.826.0.1.3680043.9.7777.1.3"


def header_config(*options: str, detect: str = "all", **kwargs: object) -> DeidentifyConfig:
    """A config whose pixel stage accepts every modality (tests the header engine); `detect`
    as [deidentify.pixels] detect (text detection on every image by default)."""
    pixels = PixelConfig(high_risk_modalities=(), high_risk_sop_classes=(), detect=detect)  # type: ignore[arg-type]
    chosen = tuple(Option(name) for name in options)
    return DeidentifyConfig(options=chosen, pixels=pixels, **kwargs)  # type: ignore[arg-type]


def engine(*options: str, key: bytes = KEY, detect: str = "all", **kwargs: object) -> Engine:
    return Engine(header_config(*options, detect=detect, **kwargs), key)


def ct_dataset(rows: int = 4, columns: int = 4) -> Dataset:
    """A small, valid-looking CT image with identifying values in the usual places."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyDate = "20210314"
    ds.SeriesDate = "20210314"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC99172635"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.InstitutionName = "Saint Elsewhere Hospital"
    ds.ReferringPhysicianName = "KILDARE^JAMES"
    ds.StudyDescription = "CT CHEST for Winifred Holloway"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19570402"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "S7781"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.9.7777.1.4"
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.KVP = 120
    set_ct_pixels(ds, rows, columns, bytes(rows * columns * 2))
    return ds


def set_ct_pixels(ds: Dataset, rows: int, columns: int, pixel_data: bytes) -> None:
    """Image Pixel and CT Image module attributes for 12-bit unsigned MONOCHROME2 pixels."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = pixel_data


def read(encoded: bytes) -> Dataset:
    """Parse an engine output (Part 10 bytes)."""
    return dcmread(BytesIO(encoded))


def round_trip(ds: Dataset) -> Dataset:
    """Write `ds` to bytes and read it back."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return dcmread(BytesIO(buffer.getvalue()), force=True)


def item_with(**attributes: object) -> Dataset:
    """A sequence item with the given attributes."""
    result = Dataset()
    for keyword, value in attributes.items():
        setattr(result, keyword, value)
    return result
