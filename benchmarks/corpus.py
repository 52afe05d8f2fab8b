"""The benchmark corpus: synthetic CT 512x512 16-bit images with realistic identifying
attributes (five patients, three series each), cached between runs, and one large multi-frame
object written frame by frame."""

from __future__ import annotations

import hashlib
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Any

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MiB = 1024 * 1024


PATIENTS = [
    ("DOE^JOHN^Q", "MRN0012345", "19510312", "M", "ST MARY'S HOSPITAL"),
    ("SMITH^ANNA", "MRN0098765", "19780921", "F", "ST MARY'S HOSPITAL"),
    ("MÜLLER^JÖRG", "PID-443-221", "19640101", "M", "UNIVERSITÄTSKLINIKUM NORD"),
    ("NGUYEN^THI^MAI", "778812", "19900715", "F", "CITY GENERAL"),
    ("O'BRIEN^PATRICK", "A99-1234", "19420228", "M", "CITY GENERAL"),
]
SERIES = [("AXIAL 5MM", "STANDARD"), ("AXIAL 1MM BONE", "BONE"), ("CORONAL MPR", "SOFT")]


def _uid(*parts: object) -> str:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def ct_header(index: int, count: int, size: int, frames: int = 1) -> Any:
    """A CT header with realistic identifying attributes; no Pixel Data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    per_patient = max(1, -(-count // len(PATIENTS)))
    p = min(index // per_patient, len(PATIENTS) - 1)
    within = index - p * per_patient
    per_series = max(1, -(-per_patient // len(SERIES)))
    s = min(within // per_series, len(SERIES) - 1)
    name, pid, birth, sex, institution = PATIENTS[p]
    study_uid = _uid("study", pid)
    series_uid = _uid("series", pid, s)
    sop_uid = _uid("sop", pid, s, index, count, size, frames)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240517"
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime, ds.ContentTime = "083012", "083512", "083522", "083530"
    ds.AccessionNumber = f"ACC{2024000 + p * 17:07d}"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME MEDICAL"
    ds.InstitutionName = institution
    ds.InstitutionAddress = "1 HOSPITAL ROAD, SPRINGFIELD"
    ds.ReferringPhysicianName = "HOUSE^GREGORY^^DR"
    ds.StationName = "CT-SCANNER-02"
    ds.StudyDescription = f"CT CHEST ABDOMEN W CONTRAST {name.split('^')[0]}"
    ds.SeriesDescription = SERIES[s][0]
    ds.OperatorsName = "TECH^JANE"
    ds.ManufacturerModelName = "ScanMaster 9000"
    ds.PatientName = name
    ds.PatientID = pid
    ds.IssuerOfPatientID = "HOSP-A"
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.PatientAge = f"{2024 - int(birth[:4]):03d}Y"
    ds.PatientWeight = 78.5
    ds.OtherPatientIDs = pid.replace("MRN", "OLD")
    ds.AdditionalPatientHistory = f"Follow-up; patient {name.split('^')[0]} seen 2024-05-01"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = 5.0
    ds.KVP = 120
    ds.DeviceSerialNumber = "SN-884421"
    ds.SoftwareVersions = "VA12"
    ds.ConvolutionKernel = SERIES[s][1]
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{4000 + p}"
    ds.SeriesNumber = s + 1
    ds.InstanceNumber = within - s * per_series + 1
    ds.ImagePositionPatient = [-250.0, -250.0, -5.0 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = _uid("for", pid)
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = -5.0 * index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    return ds


def base_image(size: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    body = np.where(r < size * 0.42, 1024 + 40 + 60 * np.sin(xx / 19.0) * np.cos(yy / 13.0), 24)
    return (body + rng.integers(0, 24, size=(size, size))).clip(0, 4095).astype("<u2")


def make_corpus(root: Path, count: int, size: int, parts: int = 4) -> list[Path]:
    """N CT images in `parts` sub-folders (one per concurrent sender); cached between runs."""
    from pydicom import dcmwrite

    marker = root / "complete"
    if marker.exists():
        return sorted(root.glob("part*/*.dcm"))
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    base = base_image(size)
    files = []
    for i in range(count):
        part = root / f"part{min(parts - 1, i * parts // count)}"
        part.mkdir(parents=True, exist_ok=True)
        ds = ct_header(i, count, size)
        ds.PixelData = (base + (i % 7)).tobytes()
        path = part / f"IMG{i:05d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    marker.write_text(f"{count} {size}\n")
    print(f"corpus: {count} CT {size}x{size} 16-bit in {root} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
    return files


def make_large(path: Path, frames: int, size: int) -> int:
    """One multi-frame CT object written frame by frame (never two copies in memory)."""
    import numpy as np
    from pydicom import dcmwrite

    ds = ct_header(0, 1, size, frames=frames)
    frame_bytes = size * size * 2
    length = frame_bytes * frames
    if length % 2 or length >= 2**32 - 1:
        sys.exit("bench: --large object too big for a 32-bit element length")
    dcmwrite(path, ds, enforce_file_format=True)
    base = base_image(size)
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        chunk = 64
        for start in range(0, frames, chunk):
            n = min(chunk, frames - start)
            block = np.empty((n, size, size), dtype="<u2")
            for k in range(n):
                block[k] = base + ((start + k) % 11)
            f.write(block.tobytes())
    return path.stat().st_size
