"""Delivery in process: the forwarder against a scripted, recording SCP over loopback.

Every object must arrive on a presentation context accepted for the syntax it is encoded in
(PS3.8 9.3.2.2), converted only when the destination takes none of the syntaxes it could be
sent in, and a spool entry goes only after Success for a correctly labelled object.
"""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from dicom_proxy import part10
from dicom_proxy.config import DicomDestination, FolderDestination, NodeConfig, SpoolConfig
from dicom_proxy.forward import Delivery, Forwarder, Outcome
from dicom_proxy.forward.dicom import DicomSender
from dicom_proxy.models import DeidentifiedObject, SpoolEntry
from dicom_proxy.spool import Spool
from dicom_proxy.spool_state import Delivery as QueueState
from dicom_proxy.spool_state import DestinationHealth, read_state
from tests.netpeers import free_port, wait_until
from tests.scripted_scp import Received, ScriptedSCP

pytestmark = pytest.mark.network

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

# One SOP class (MR Image Storage) in five syntaxes, plus colour JPEG baseline (SC): the mix
# that, on one association, used to go out on the context of the first syntax.
MIX = {
    "MR_small_RLE.dcm": RLELossless,
    "MR_small_jpeg_ls_lossless.dcm": JPEGLSLossless,
    "MR_small_jp2klossless.dcm": JPEG2000Lossless,
    "SC_rgb_jpeg_dcmtk.dcm": JPEGBaseline8Bit,
    "MR_small.dcm": ExplicitVRLittleEndian,
    "MR_small_implicit.dcm": ImplicitVRLittleEndian,
}


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path)


def spool_of(tmp_path: Path, paths: list[Path]) -> tuple[Spool, list[SpoolEntry]]:
    """A spool whose 'archive' queue holds these files, in this order."""
    spool = Spool(SpoolConfig(directory=tmp_path / "spool", min_free_bytes=0), ["archive"])
    spool.open()
    for path in paths:
        header = dcmread(path, stop_before_pixels=True)
        spool.store(
            DeidentifiedObject(
                str(header.SOPClassUID),
                str(header.SOPInstanceUID),
                str(header.StudyInstanceUID),
                str(header.SeriesInstanceUID),
                str(header.file_meta.TransferSyntaxUID),
                (path.read_bytes(),),
            )
        )
    return spool, spool.pending("archive")


def destination(port: int, **extra: object) -> DicomDestination:
    return DicomDestination(
        name="archive",
        ae_title="ARCHIVE",
        host="127.0.0.1",
        port=port,
        retry_initial_delay=0.05,
        retry_max_delay=0.2,
        dimse_timeout=20,
        **extra,  # type: ignore[arg-type]
    )


def send_all(sender: DicomSender, entries: list[SpoolEntry], lookahead: bool = True) -> list[Outcome]:
    if lookahead:
        sender.expect(entries)
    try:
        return [sender.send(entry) for entry in entries]
    finally:
        sender.close()


def decoded(received: Received) -> Dataset:
    """Parse what arrived as the syntax it was labelled with, strictly, then as a Part 10 file."""
    part10.decode_received(received.dataset_bytes, received.transfer_syntax_uid)  # structure check
    meta = Dataset()
    meta.TransferSyntaxUID = UID(received.transfer_syntax_uid)
    meta.MediaStorageSOPClassUID = "1.2.3"
    meta.MediaStorageSOPInstanceUID = "1.2.3"
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta)  # type: ignore[arg-type]
    buffer.write(received.dataset_bytes)
    buffer.seek(0)
    return dcmread(buffer)


def assert_arrived_intact(received: Received, source: Path) -> None:
    """It parses in its labelled syntax and its pixels decode to the source's pixels."""
    arrived = decoded(received)
    assert np.array_equal(arrived.pixel_array, dcmread(source).pixel_array)


def test_a_syntax_mix_on_one_association_goes_out_as_encoded(tmp_path: Path) -> None:
    paths = [pydicom_file(name) for name in MIX] + [pydicom_file("MR_small_RLE.dcm")]
    _, entries = spool_of(tmp_path, paths)
    with ScriptedSCP(free_port()) as archive:
        sender = DicomSender(destination(archive.port), NodeConfig())
        outcomes = send_all(sender, entries)
    assert [o.delivery for o in outcomes] == [Delivery.DELIVERED] * len(paths)
    assert [r.transfer_syntax_uid for r in archive.received] == [*MIX.values(), RLELossless]
    assert [o.transfer_syntax_uid for o in outcomes] == [*MIX.values(), RLELossless]
    # Each went as stored: the bytes on the wire are the file's data set, not a re-encoding.
    for received, path in zip(archive.received, paths, strict=True):
        assert path.read_bytes().endswith(received.dataset_bytes)
        assert_arrived_intact(received, path)
    assert sender.associations_opened == 1
    assert {r.association for r in archive.received} == {0}


def test_an_archive_accepting_only_uncompressed_syntaxes_gets_every_object_decoded(tmp_path: Path) -> None:
    paths = [pydicom_file(name) for name in MIX]
    _, entries = spool_of(tmp_path, paths)
    with ScriptedSCP(free_port(), transfer_syntaxes=UNCOMPRESSED) as archive:
        outcomes = send_all(DicomSender(destination(archive.port), NodeConfig()), entries)
    assert [o.delivery for o in outcomes] == [Delivery.DELIVERED] * len(paths)
    for received, path in zip(archive.received, paths, strict=True):
        assert received.transfer_syntax_uid in UNCOMPRESSED
        assert_arrived_intact(received, path)
    # Uncompressed objects keep their own syntax.
    assert [r.transfer_syntax_uid for r in archive.received[-2:]] == [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"])
def test_uncompressed_objects_are_converted_for_an_explicit_little_endian_only_archive(
    tmp_path: Path, name: str
) -> None:
    path = pydicom_file(name)
    _, entries = spool_of(tmp_path, [path])
    with ScriptedSCP(free_port(), transfer_syntaxes=[ExplicitVRLittleEndian]) as archive:
        (outcome,) = send_all(DicomSender(destination(archive.port), NodeConfig()), entries)
    assert outcome.delivery is Delivery.DELIVERED, outcome.reason
    (received,) = archive.received
    assert received.transfer_syntax_uid == ExplicitVRLittleEndian
    assert_arrived_intact(received, path)


def test_a_compressed_object_is_not_decompressed_when_a_new_association_can_carry_it(tmp_path: Path) -> None:
    """Without lookahead the first association knows only the uncompressed object; the RLE
    object that follows gets a new association proposing RLE instead of being decompressed."""
    paths = [pydicom_file("MR_small.dcm"), pydicom_file("MR_small_RLE.dcm"), pydicom_file("MR_small.dcm")]
    _, entries = spool_of(tmp_path, paths)
    with ScriptedSCP(free_port()) as archive:
        sender = DicomSender(destination(archive.port), NodeConfig())
        outcomes = send_all(sender, entries, lookahead=False)
    assert [o.delivery for o in outcomes] == [Delivery.DELIVERED] * 3
    assert [r.transfer_syntax_uid for r in archive.received] == [
        ExplicitVRLittleEndian,
        RLELossless,
        ExplicitVRLittleEndian,
    ]
    assert [r.association for r in archive.received] == [0, 1, 1]
    assert sender.associations_opened == 2


def test_an_object_no_accepted_syntax_fits_is_refused_by_the_destination(tmp_path: Path) -> None:
    _, entries = spool_of(
        tmp_path, [pydicom_file("MR_small_jp2klossless.dcm"), pydicom_file("MR_small_jpeg_ls_lossless.dcm")]
    )
    with ScriptedSCP(free_port(), transfer_syntaxes=[JPEGLSLossless]) as archive:
        outcomes = send_all(DicomSender(destination(archive.port), NodeConfig()), entries)
    assert outcomes[0].delivery is Delivery.REFUSED
    assert "JPEG 2000" in outcomes[0].reason
    assert outcomes[1].delivery is Delivery.DELIVERED
    assert [r.transfer_syntax_uid for r in archive.received] == [JPEGLSLossless]


def test_an_object_that_does_not_decode_cannot_be_converted(tmp_path: Path) -> None:
    source = dcmread(pydicom_file("MR_small_RLE.dcm"))
    # An RLE header announcing 15 segments at offsets beyond the fragment: no decoder reads it.
    source.PixelData = encapsulate([(15).to_bytes(4, "little") + (60000).to_bytes(4, "little") * 15 + b"\x00" * 4])
    broken = tmp_path / "broken.dcm"
    source.save_as(broken, enforce_file_format=True)
    _, entries = spool_of(tmp_path, [broken])
    with ScriptedSCP(free_port(), transfer_syntaxes=UNCOMPRESSED) as archive:
        (outcome,) = send_all(DicomSender(destination(archive.port), NodeConfig()), entries)
    assert outcome.delivery is Delivery.CANNOT_CONVERT
    assert "cannot be decoded" in outcome.reason
    assert archive.received == []


@pytest.mark.parametrize(
    ("status", "delivery"),
    [
        (0x0000, Delivery.DELIVERED),
        (0xB000, Delivery.DELIVERED),
        (0xA700, Delivery.TRANSIENT),
        (0xC000, Delivery.REFUSED),
        (0xA900, Delivery.REFUSED),
    ],
)
def test_the_destination_status_decides_the_outcome(tmp_path: Path, status: int, delivery: Delivery) -> None:
    _, entries = spool_of(tmp_path, [pydicom_file("MR_small.dcm")])
    with ScriptedSCP(free_port(), statuses=[status]) as archive:
        (outcome,) = send_all(DicomSender(destination(archive.port), NodeConfig()), entries)
    assert (outcome.delivery, outcome.status) == (delivery, status)


def test_a_destination_that_is_down_is_transient(tmp_path: Path) -> None:
    _, entries = spool_of(tmp_path, [pydicom_file("MR_small.dcm")])
    (outcome,) = send_all(DicomSender(destination(free_port(), network_timeout=5), NodeConfig()), entries)
    assert outcome.delivery is Delivery.TRANSIENT


def run_forwarder(spool: Spool, port: int) -> Forwarder:
    forwarder = Forwarder(destination(port), NodeConfig(), spool)
    forwarder.start()
    return forwarder


def test_the_worker_quarantines_a_refusal_with_its_reason_and_deletes_only_delivered_entries(tmp_path: Path) -> None:
    spool, entries = spool_of(tmp_path, [pydicom_file("MR_small_jp2klossless.dcm"), pydicom_file("MR_small.dcm")])
    with ScriptedSCP(free_port(), statuses=[0xC000, 0x0000]) as archive:
        forwarder = run_forwarder(spool, archive.port)
        try:
            assert wait_until(lambda: not spool.pending("archive"), 20)
        finally:
            forwarder.stop()
            forwarder.join(10)
    (quarantined,) = spool.quarantined("archive")
    assert quarantined.name == entries[0].path.name
    reason = Path(str(quarantined) + ".reason.json").read_text()
    assert '"outcome": "refused by destination"' in reason
    assert '"status": 49152' in reason
    assert archive.answered == [0xC000, 0x0000]


def test_an_unexpected_error_keeps_the_entry_and_is_logged_by_type(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug is not a verdict on the object: never quarantined, logged loudly, retried."""
    spool, entries = spool_of(tmp_path, [pydicom_file("MR_small.dcm")])

    def broken(path: Path) -> None:
        raise KeyError("a value that must not be logged")

    monkeypatch.setattr(part10, "read_file_meta", broken)
    caplog.set_level(logging.ERROR, logger="dicom_proxy.forward")
    with ScriptedSCP(free_port()) as archive:
        forwarder = run_forwarder(spool, archive.port)
        try:
            assert wait_until(lambda: "unexpected KeyError" in caplog.text and caplog.text.count("KeyError") >= 2, 20)
        finally:
            forwarder.stop()
            forwarder.join(10)
        assert archive.received == []
    assert [e.path for e in spool.pending("archive")] == [entries[0].path]
    assert spool.quarantined("archive") == []
    assert "must not be logged" not in caplog.text
    assert "the entry stays queued" in caplog.text


def test_a_queue_emptied_after_every_object_says_delivering_then_idle_without_a_write_per_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sender slower than the forwarder empties the queue after every object; `spool status`
    still says 'delivering' while objects come, and 'idle' once none came for a moment. The
    state file is not rewritten for every object (it was, twice, before)."""
    writes: list[str] = []
    original = DestinationHealth._write

    def counted(self: DestinationHealth) -> None:
        writes.append(self.state.state.value)
        original(self)

    monkeypatch.setattr(DestinationHealth, "_write", counted)
    spool, _ = spool_of(tmp_path, [])
    forwarder = Forwarder(FolderDestination("archive", tmp_path / "out"), NodeConfig(), spool)
    forwarder.start()
    try:
        source = pydicom_file("MR_small.dcm")
        for n in range(12):
            header = dcmread(source, stop_before_pixels=True)
            spool.store(
                DeidentifiedObject(
                    str(header.SOPClassUID),
                    f"{header.SOPInstanceUID}.{n + 1}",
                    str(header.StudyInstanceUID),
                    str(header.SeriesInstanceUID),
                    str(header.file_meta.TransferSyntaxUID),
                    (source.read_bytes(),),
                )
            )
            spool.wake()
            assert wait_until(lambda: not spool.pending("archive"), 10, interval=0.01)
            assert read_state(spool.root, "archive").state is QueueState.DELIVERING
        assert list((tmp_path / "out").rglob("*.dcm"))  # the folder sender names files by their own UIDs
        assert len(writes) <= 4, writes
        assert wait_until(lambda: read_state(spool.root, "archive").state is QueueState.IDLE, 5)
    finally:
        forwarder.stop()
        forwarder.join(10)
