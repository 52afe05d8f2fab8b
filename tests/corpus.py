"""Synthetic, identifiable test corpora written as real Part 10 files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.dicomfactory import set_ct_pixels


@dataclass(frozen=True)
class Patient:
    name: str  # PN, e.g. "DOE^JANE"
    patient_id: str
    birth_date: str


PATIENTS = (
    Patient("QUIXOTEHEIMER^ZEBEDIAH", "MRN77441209", "19561103"),
    Patient("VANTERPOOL^ALOYSIA^M", "MRN55310977", "19831229"),
    Patient("OKONKWOBARRA^THADDEUS", "MRN90812345", "20010417"),
)


def ct_image(
    patient: Patient,
    study_uid: str,
    series_uid: str,
    instance: int,
    size: int = 64,
    accession: str = "ACC8812391",
) -> Dataset:
    """A CT Image Storage object carrying the patient's identity in the usual places."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.StudyDate = "20240312"
    ds.SeriesDate = "20240312"
    ds.ContentDate = "20240312"
    ds.StudyTime = "101530"
    ds.ContentTime = "101531"
    ds.AccessionNumber = accession
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.InstitutionAddress = "12 Harbour Road, Springfield"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StationName = "CTSCANNER01"
    ds.StudyDescription = f"CT CHEST for {patient.name.split('^')[1]} {patient.name.split('^')[0]}"
    ds.SeriesDescription = "AXIAL 5MM"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = "F"
    ds.PatientAge = "042Y"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "STUDY7731"
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance
    ds.FrameOfReferenceUID = study_uid[:-2] + ".9"
    ds.ImagePositionPatient = [0.0, 0.0, float(instance)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = 5.0
    ds.PixelSpacing = [0.7, 0.7]
    rng = np.random.default_rng(instance)
    set_ct_pixels(ds, size, size, rng.integers(0, 4096, size=(size, size), dtype=np.uint16).tobytes())
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_corpus(
    folder: Path, patients: int = 3, series_per_study: int = 2, images_per_series: int = 3, size: int = 64
) -> list[Path]:
    """One study per patient; files are named by their (identifying) SOP Instance UID."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for patient in PATIENTS[:patients]:
        study_uid = generate_uid()
        for _ in range(series_per_study):
            series_uid = generate_uid()
            for instance in range(1, images_per_series + 1):
                ds = ct_image(patient, study_uid, series_uid, instance, size)
                path = folder / f"{ds.SOPInstanceUID}.dcm"
                ds.save_as(path, enforce_file_format=True)
                paths.append(path)
    return paths
