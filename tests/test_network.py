"""End to end over loopback: dcmtk storescu -> dicom-proxy serve (subprocess) -> dcmtk storescp."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.corpus import PATIENTS, write_corpus
from tests.netpeers import (
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    echo,
    free_port,
    pynetdicom_send_file,
    storescu,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.network


def _proxy(tmp_path: Path, destinations: list[dict[str, object]], **overrides: object) -> Proxy:
    config = write_config(tmp_path / "proxy.toml", base_config(tmp_path, destinations, **overrides))
    return Proxy(config, tmp_path)


def _received(scp: StoreSCP, count: int, timeout: float = 60) -> list[Path]:
    return scp.complete_files(count, timeout)


def test_corpus_arrives_complete_deidentified_and_consistent(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=3, series_per_study=2, images_per_series=3)
    originals = {p.name: dcmread(p) for p in corpus}
    archive_port = free_port()
    with StoreSCP(tmp_path / "archive", archive_port) as scp, _proxy(
        tmp_path, [dicom_destination("research", archive_port)]
    ) as proxy:
        sent = storescu(proxy.port, [tmp_path / "corpus"])
        assert sent.statuses == ["Success"] * len(corpus), sent.output
        received = [dcmread(p) for p in _received(scp, len(corpus))]

        # Resend the same objects: the same pseudonymous UIDs come out (keyed, stateless).
        first_uids = sorted(str(ds.SOPInstanceUID) for ds in received)
        for path in scp.files():
            path.unlink()
        again = storescu(proxy.port, [tmp_path / "corpus"])
        assert again.statuses == ["Success"] * len(corpus)
        second_uids = sorted(str(dcmread(p).SOPInstanceUID) for p in _received(scp, len(corpus)))
        assert second_uids == first_uids

    assert len(received) == len(corpus)
    original_values = {
        value
        for ds in originals.values()
        for value in (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.AccessionNumber, ds.SOPInstanceUID)
    }
    studies: dict[str, set[str]] = defaultdict(set)
    series_per_study: dict[str, set[str]] = defaultdict(set)
    patient_ids: dict[str, set[str]] = defaultdict(set)
    for ds in received:
        assert ds.PatientIdentityRemoved == "YES"
        for element in ds.iterall():
            assert str(element.value) not in original_values
        assert not any(str(ds.SOPInstanceUID) == str(o.SOPInstanceUID) for o in originals.values())
        studies[str(ds.StudyInstanceUID)].add(str(ds.SOPInstanceUID))
        series_per_study[str(ds.StudyInstanceUID)].add(str(ds.SeriesInstanceUID))
        patient_ids[str(ds.PatientID)].add(str(ds.StudyInstanceUID))
    # Three patients, one study each, two series per study, all objects of a study share its UID.
    assert len(studies) == len(PATIENTS)
    assert all(len(series) == 2 for series in series_per_study.values())
    assert all(len(objs) == 6 for objs in studies.values())
    assert len(patient_ids) == len(PATIENTS)
    assert all(len(s) == 1 for s in patient_ids.values())


def test_archive_down_sender_gets_success_and_everything_arrives_later(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=2, series_per_study=1, images_per_series=4)
    archive_port = free_port()
    with _proxy(tmp_path, [dicom_destination("research", archive_port)]) as proxy:
        sent = storescu(proxy.port, corpus)
        assert sent.statuses == ["Success"] * len(corpus), sent.output
        queue = tmp_path / "spool" / "queues" / "research"
        assert len(list(queue.glob("*.dcm"))) == len(corpus)
        with StoreSCP(tmp_path / "archive", archive_port) as scp:
            received = _received(scp, len(corpus))
            assert wait_until(lambda: not list(queue.glob("*.dcm")), 30)
        assert proxy.terminate() == 0
    assert len(received) == len(corpus)


def test_echo_and_association_admission(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=1)
    archive = {"name": "archive", "type": "folder", "path": str(tmp_path / "out")}
    with _proxy(tmp_path, [archive], node={"allowed_calling_ae_titles": ["MODALITY1"]}) as proxy:
        assert echo(proxy.port, "DEID_PROXY", calling="MODALITY1")
        assert not echo(proxy.port, "WRONG_AE", calling="MODALITY1")
        assert not echo(proxy.port, "DEID_PROXY", calling="INTRUDER")
        refused = storescu(proxy.port, corpus, calling="INTRUDER")
        assert refused.returncode != 0 and refused.statuses == []
        assert "Rejected" in refused.output
        accepted = storescu(proxy.port, corpus, calling="MODALITY1")
        assert accepted.statuses == ["Success"]
        assert wait_until(lambda: len(list((tmp_path / "out").rglob("*.dcm"))) == 1, 30)
        # Named by the new identity: <Study>/<Series>/<SOP>.dcm, all 2.25 pseudonyms.
        output = next((tmp_path / "out").rglob("*.dcm"))
        ds = dcmread(output)
        assert output.relative_to(tmp_path / "out").parts == (
            str(ds.StudyInstanceUID),
            str(ds.SeriesInstanceUID),
            f"{ds.SOPInstanceUID}.dcm",
        )
        assert all(part.startswith("2.25.") for part in output.relative_to(tmp_path / "out").parts)


def test_unparseable_object_gets_failure_status_and_node_keeps_serving(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=2)
    bad = tmp_path / "bad"
    bad.mkdir()
    # A valid file meta header followed by a data set whose first element claims 2 GB.
    good_bytes = corpus[0].read_bytes()
    ds = dcmread(corpus[0])
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    (bad / "broken.dcm").write_bytes(good_bytes[:meta_end] + b"\x08\x00\x05\x00CS\xff\xff" + b"ISO_IR 100")
    archive = {"name": "archive", "type": "folder", "path": str(tmp_path / "out")}
    with _proxy(tmp_path, [archive]) as proxy:
        status = pynetdicom_send_file(proxy.port, bad / "broken.dcm")
        assert status is not None and 0xC000 <= status <= 0xCFFF, status
        follow_up = storescu(proxy.port, corpus)
        assert follow_up.statuses == ["Success", "Success"]
        # Only the two good objects are delivered; nothing of the broken one was spooled.
        assert wait_until(lambda: len(list((tmp_path / "out").rglob("*.dcm"))) == 2, 30)
        assert wait_until(lambda: not list((tmp_path / "spool" / "queues" / "archive").iterdir()), 30)
