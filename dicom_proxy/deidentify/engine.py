"""Engine: binds the compiled policy and the secret key; turns one data set into one output.

PROVISIONAL minimal implementation (issue #2 wiring); the full PS3.15 engine replaces the body
of `_apply` while keeping this interface.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from dicom_proxy.config import DeidentifyConfig
from dicom_proxy.deidentify import codec
from dicom_proxy.deidentify.uids import pseudonymous_uid
from dicom_proxy.models import DeidentifiedObject, ReceivedObject, Refused


class Engine:
    """De-identify data sets with one policy and one secret key. Thread-safe (no mutable state)."""

    def __init__(self, config: DeidentifyConfig, key: bytes) -> None:
        self.config = config
        self._key = key

    def deidentify_received(self, received: ReceivedObject) -> DeidentifiedObject:
        dataset = codec.decode_received(received.dataset_bytes, received.transfer_syntax_uid)
        if dataset.get("SOPClassUID") != received.affected_sop_class_uid:
            raise Refused("SOP Class UID in the data set differs from the C-STORE request")
        return self.deidentify(dataset)

    def deidentify_file(self, path: Path) -> DeidentifiedObject:
        return self.deidentify(codec.read_file(path))

    def deidentify(self, dataset: Dataset) -> DeidentifiedObject:
        """De-identify `dataset` (modified in place) and return the encoded result."""
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if keyword not in dataset or not str(dataset.data_element(keyword).value):
                raise Refused(f"{keyword} missing")
        self._apply(dataset)
        try:
            encoded = codec.encode(dataset)
        except Exception as exc:
            raise Refused(f"cannot encode output ({type(exc).__name__})") from None
        return DeidentifiedObject(
            sop_class_uid=str(dataset.SOPClassUID),
            sop_instance_uid=str(dataset.SOPInstanceUID),
            study_instance_uid=str(dataset.StudyInstanceUID),
            series_instance_uid=str(dataset.SeriesInstanceUID),
            transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
            encoded=encoded,
        )

    def _apply(self, dataset: Dataset) -> None:
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
            if keyword in dataset:
                setattr(dataset, keyword, pseudonymous_uid(self._key, str(dataset.data_element(keyword).value)))
        dataset.PatientName = "ANON"
        dataset.PatientID = "ANON"
        for keyword in ("PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "AccessionNumber"):
            if keyword in dataset:
                del dataset[keyword]
        dataset.PatientIdentityRemoved = "YES"
