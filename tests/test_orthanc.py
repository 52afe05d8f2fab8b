"""Interoperability with Orthanc (Debian `orthanc`) as sender and as archive.

Orthanc pushes one multi-series study in several transfer syntaxes through the proxy (its own
REST API, /modalities/{name}/store); the proxy forwards to a second Orthanc that accepts every
syntax and to a third that accepts only uncompressed ones. Checked through Orthanc's REST API:
one study stays one study, N series stay N series, nothing planted in the originals arrived, and
Orthanc renders every instance it received.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from tests.corpus import PATIENTS, ct_image
from tests.netpeers import Proxy, base_config, dicom_destination, wait_until, write_config
from tests.orthanc import Orthanc

pytestmark = pytest.mark.network

UNCOMPRESSED = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))

# Series -> the syntaxes of its instances: syntaxes mix within a series and across the study.
SERIES = (
    (ExplicitVRLittleEndian, RLELossless),
    (JPEGLSLossless, JPEG2000Lossless),
    (ImplicitVRLittleEndian, RLELossless, JPEGLSLossless),
)


def write_study(folder: Path) -> tuple[list[Path], list[str]]:
    """The study's files and the identifying values planted in them."""
    folder.mkdir(parents=True)
    patient = PATIENTS[0]
    study_uid = generate_uid()
    paths: list[Path] = []
    planted = [
        *patient.name.split("^"),
        patient.patient_id,
        patient.birth_date,
        "ACC8812391",
        "St Elsewhere Hospital",
        "HOUSE^GREGORY",
        "CTSCANNER01",
        study_uid,
    ]
    for number, syntaxes in enumerate(SERIES, start=1):
        series_uid = generate_uid()
        planted.append(series_uid)
        for instance, syntax in enumerate(syntaxes, start=1):
            ds = ct_image(patient, study_uid, series_uid, instance, size=32)
            ds.SeriesNumber = number
            planted.append(str(ds.SOPInstanceUID))
            if syntax.is_compressed:
                ds.compress(syntax, generate_instance_uid=False)
            else:
                ds.file_meta.TransferSyntaxUID = syntax
            path = folder / f"{number}-{instance}.dcm"
            ds.save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
            paths.append(path)
    return paths, planted


def received(archive: Orthanc) -> list[str]:
    return list(archive.get("/instances"))


def assert_archive_holds_the_study_de_identified(archive: Orthanc, planted: list[str]) -> list[str]:
    """One study, one series per original series, every instance clean and renderable.
    Returns the transfer syntaxes the instances arrived in."""
    instances = sum(len(s) for s in SERIES)
    assert len(archive.get("/studies")) == 1
    assert len(archive.get("/patients")) == 1
    assert len(archive.get("/series")) == len(SERIES)
    ids = received(archive)
    assert len(ids) == instances
    syntaxes = []
    for instance in ids:
        tags = archive.request("GET", f"/instances/{instance}/tags").decode()
        encoded = archive.request("GET", f"/instances/{instance}/file")
        for value in planted:
            assert value not in tags, f"planted value in the tags of {instance}"
            assert value.encode() not in encoded, f"planted value in the file of {instance}"
        assert json.loads(tags)["0012,0062"]["Value"] == "YES"  # Patient Identity Removed
        preview = archive.request("GET", f"/instances/{instance}/preview")
        assert preview.startswith(b"\x89PNG"), "Orthanc could not render the instance"
        syntaxes.append(archive.request("GET", f"/instances/{instance}/metadata/TransferSyntax").decode())
    return syntaxes


def test_orthanc_to_proxy_to_orthanc_keeps_the_hierarchy_and_nothing_identifying(tmp_path: Path) -> None:
    paths, planted = write_study(tmp_path / "study")
    with (
        Orthanc(tmp_path / "research", "RESEARCH") as research,
        Orthanc(tmp_path / "plain", "PLAIN", accepted_transfer_syntaxes=UNCOMPRESSED) as plain,
    ):
        destinations = [
            dicom_destination("research", research.dicom_port, "RESEARCH"),
            dicom_destination("plain", plain.dicom_port, "PLAIN"),
        ]
        config = write_config(tmp_path / "proxy.toml", base_config(tmp_path, destinations))
        with (
            Proxy(config, tmp_path) as proxy,
            Orthanc(tmp_path / "hospital", "HOSPITAL", modalities={"proxy": ("DEID_PROXY", proxy.port)}) as hospital,
        ):
            for path in paths:
                hospital.post("/instances", path.read_bytes())
            (study,) = hospital.get("/studies")
            hospital.post("/modalities/proxy/store", {"Resources": [study], "Synchronous": True})
            count = len(paths)
            assert wait_until(lambda: len(received(research)) == count and len(received(plain)) == count, 60), (
                proxy.log()
            )
            assert proxy.terminate() == 0
        # Compressed objects reached the archive that takes them in their own syntax ...
        sent = sorted(str(s) for series in SERIES for s in series)
        assert sorted(assert_archive_holds_the_study_de_identified(research, planted)) == sent
        # ... and were decoded only for the archive that takes none of them.
        assert set(assert_archive_holds_the_study_de_identified(plain, planted)) <= set(UNCOMPRESSED)
