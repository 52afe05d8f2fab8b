"""Hostile input over real associations and raw sockets: never Success, never a crash, and the
next association is served normally. Also: no original value in any log line."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage

from tests.corpus import PATIENTS, write_corpus
from tests.netpeers import (
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    echo,
    free_port,
    pynetdicom_send_files,
    storescu,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    workdir = tmp_path_factory.mktemp("hostile")
    folder = {"name": "archive", "type": "folder", "path": str(workdir / "out")}
    config = write_config(workdir / "proxy.toml", base_config(workdir, [folder], logging={"level": "DEBUG"}))
    with Proxy(config, workdir) as running:
        yield running
        assert running.process is not None and running.process.poll() is None, "proxy died"


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("good"), patients=1, series_per_study=1, images_per_series=1)[0]


def _file_with_body(template: Path, folder: Path, name: str, body: bytes) -> Path:
    """A Part 10 file with `template`'s valid File Meta and an arbitrary data set `body`."""
    raw = template.read_bytes()
    meta_length = struct.unpack("<I", raw[140:144])[0]
    path = folder / name
    path.write_bytes(raw[: 144 + meta_length] + body)
    return path


def _body(ds: Dataset) -> bytes:
    """Encode `ds` as an Explicit VR Little Endian data set (no meta)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _assert_still_serving(proxy: Proxy, good: Path) -> None:
    assert echo(proxy.port, "DEID_PROXY")
    assert pynetdicom_send_files(proxy.port, [good]) == [0x0000]


def _nasty_corpus(good: Path, folder: Path) -> list[Path]:
    original = dcmread(good)
    raw_body = good.read_bytes()[144 + struct.unpack("<I", good.read_bytes()[140:144])[0]:]
    cases = {
        "truncated.dcm": raw_body[: len(raw_body) // 3],
        "absurd-length.dcm": b"\x08\x00\x05\x00CS\xfe\xff" + b"ISO_IR 100",
        "absurd-sq-length.dcm": b"\x08\x00\x15\x11SQ\x00\x00\xf0\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\x7f",
        "garbage.dcm": bytes(range(256)) * 8,
        "empty.dcm": b"",
    }
    paths = [_file_with_body(good, folder, name, body) for name, body in cases.items()]

    mismatch = original.copy()
    mismatch.SOPClassUID = MRImageStorage  # the association negotiated CT Image Storage
    paths.append(_file_with_body(good, folder, "sop-class-mismatch.dcm", _body(mismatch)))

    # Nesting deeper than the proxy's limit (and deeper than pydicom can recurse), built raw.
    sequence_open = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    sequence_close = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    for depth in (60, 150, 3000):
        body = _body(original) + sequence_open * depth + sequence_close * depth
        paths.append(_file_with_body(good, folder, f"nested-{depth}.dcm", body))

    charset = original.copy()
    charset.SpecificCharacterSet = "ISO_IR 999"
    paths.append(_file_with_body(good, folder, "unknown-charset.dcm", _body(charset)))

    no_uids = original.copy()
    del no_uids.StudyInstanceUID
    paths.append(_file_with_body(good, folder, "no-study-uid.dcm", _body(no_uids)))
    return paths


def test_fixed_corpus_of_nasty_data_sets(proxy: Proxy, good: Path, tmp_path: Path) -> None:
    for path in _nasty_corpus(good, tmp_path):
        [status] = pynetdicom_send_files(proxy.port, [path])
        assert status != 0x0000, f"{path.name} was accepted"
        _assert_still_serving(proxy, good)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(min_size=0, max_size=2048))
def test_random_data_sets_are_never_acknowledged(proxy: Proxy, good: Path, tmp_path: Path, body: bytes) -> None:
    path = _file_with_body(good, tmp_path, "random.dcm", body)
    [status] = pynetdicom_send_files(proxy.port, [path])
    assert status != 0x0000


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(min_size=1, max_size=4096))
def test_random_bytes_on_the_port(proxy: Proxy, good: Path, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            while sock.recv(4096):
                pass
        except OSError:
            pass  # the proxy may reset the connection: that is a fine answer
    assert echo(proxy.port, "DEID_PROXY")


def test_absurd_pdu_lengths_and_half_open_connections(proxy: Proxy, good: Path) -> None:
    # A-ASSOCIATE-RQ claiming 4 GiB, then silence and close; and a P-DATA before association.
    for pdu in (b"\x01\x00\xff\xff\xff\xff\x00\x01", b"\x04\x00\x7f\xff\xff\xff", b"\x07\x00\x00\x00\x00\x04\x00\x00"):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(pdu)
    _assert_still_serving(proxy, good)


def test_no_original_value_in_any_log_line(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=3, series_per_study=1, images_per_series=2)
    originals = [dcmread(p) for p in corpus]
    planted = {
        # A one-letter name part ("M") is no needle: base32 pseudonym tokens contain letters.
        *(part for p in PATIENTS for part in (*p.name.split("^"), p.patient_id, p.birth_date) if len(part) > 1),
        *(str(ds.SOPInstanceUID) for ds in originals),
        *(str(ds.StudyInstanceUID) for ds in originals),
        *(str(ds.SeriesInstanceUID) for ds in originals),
        "ACC8812391", "St Elsewhere Hospital", "Harbour Road", "GREGORY", "CTSCANNER01",
    }
    live_port, refusing_port = free_port(), free_port()
    destinations = [dicom_destination("live", live_port), dicom_destination("down", refusing_port)]
    config = write_config(
        tmp_path / "proxy.toml",
        base_config(tmp_path, destinations, logging={"level": "DEBUG", "audit_file": str(tmp_path / "audit.jsonl")}),
    )
    broken = _file_with_body(corpus[0], tmp_path, "broken.dcm", b"\x10\x00\x10\x00PN\x40\x00" + b"QUIXOTEHEIMER^ZEB")
    # Invalid values make pydicom warn, and its warnings quote the value.
    invalid = dcmread(corpus[1])
    invalid.PatientBirthDate = "1956-11-03"
    invalid.StationName = "CTSCANNER01 OF ST ELSEWHERE HOSPITAL"
    invalid.ImageType = ["ORIGINAL", "PRIMARY", "VANTERPOOL_ALOYSIA_SPECIAL"]
    invalid.save_as(corpus[1], enforce_file_format=True)
    planted.update({"1956-11-03", "VANTERPOOL_ALOYSIA_SPECIAL"})
    with StoreSCP(tmp_path / "live", live_port) as live, Proxy(config, tmp_path) as proxy:
        assert storescu(proxy.port, corpus).statuses == ["Success"] * len(corpus)
        assert pynetdicom_send_files(proxy.port, [broken])[0] != 0x0000
        assert wait_until(lambda: len(live.files()) == len(corpus), 30)
        assert proxy.terminate() == 0
    text = proxy.log() + (tmp_path / "audit.jsonl").read_text()
    assert "stored" in text and "refused" in text and "forwarded" in text
    leaked = sorted(value for value in planted if value in text)
    assert leaked == []


def test_text_hidden_in_a_kept_number_field_is_refused(tmp_path: Path) -> None:
    from dicom_proxy.config import DeidentifyConfig
    from dicom_proxy.deidentify import Engine
    from dicom_proxy.models import Refused

    path = write_corpus(tmp_path, patients=1, series_per_study=1, images_per_series=1)[0]
    raw = path.read_bytes()
    # SliceThickness (0018,0050) DS "5.0" becomes a name of the same length + padding.
    marker = b"\x18\x00\x50\x00DS\x04\x005.0 "
    assert marker in raw
    path.write_bytes(raw.replace(marker, b"\x18\x00\x50\x00DS\x04\x00ZED "))
    with pytest.raises(Refused, match="SliceThickness"):
        Engine(DeidentifyConfig(), b"k" * 32).deidentify_file(path)


def test_data_set_over_the_size_limit_aborts_and_the_next_is_served(tmp_path: Path) -> None:
    small = write_corpus(tmp_path / "small", patients=1, series_per_study=1, images_per_series=1, size=64)
    large = write_corpus(tmp_path / "large", patients=1, series_per_study=1, images_per_series=1, size=256)
    folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "out")}
    config = write_config(
        tmp_path / "proxy.toml", base_config(tmp_path, [folder], node={"max_object_bytes": 64 * 1024})
    )
    with Proxy(config, tmp_path) as proxy:
        refused = storescu(proxy.port, large)
        assert refused.statuses == [] and refused.returncode != 0, refused.output
        assert "association aborted: data set or command larger than allowed" in proxy.log()
        assert storescu(proxy.port, small).statuses == ["Success"]
        assert wait_until(lambda: len(list((tmp_path / "out").rglob("*.dcm"))) == 1, 30)
