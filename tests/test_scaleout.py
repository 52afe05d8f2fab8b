"""Scale-out: two nodes with the same secret key, each with its own spool, behind HAProxy in TCP
mode on loopback. A study whose associations the balancer spreads over both nodes arrives as
one study: one Study Instance UID, one patient pseudonym, every series whole (DESIGN promise 3:
identity is consistent without shared state). HAProxy's health check is the real C-ECHO of
dicom_proxy.balancer."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_proxy.balancer import associate_rq, c_echo_rq, haproxy_echo_check, release_rq
from tests.corpus import write_corpus
from tests.netpeers import (
    HAProxy,
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    free_port,
    storescu,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.network


def _stored(audit: Path) -> int:
    if not audit.exists():
        return 0
    return sum(json.loads(line).get("event") == "stored" for line in audit.read_text().splitlines() if line.strip())


@contextmanager
def _closing_listener() -> Iterator[int]:
    """A port that accepts TCP connections and closes them: listening, but not a DICOM node."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_study_spread_over_two_nodes_arrives_as_one_study(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=2, images_per_series=4)
    originals = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in corpus}
    archive_port = free_port()
    key_file = tmp_path / "shared-secret.key"
    with ExitStack() as stack:
        # several nodes deliver at once: storescp forks one child per association
        archive = stack.enter_context(StoreSCP(tmp_path / "archive", archive_port, extra_args=("--fork",)))
        nodes: list[Proxy] = []
        audits: list[Path] = []
        for n in (1, 2):
            work = tmp_path / f"node{n}"
            work.mkdir()
            audit = work / "audit.jsonl"
            config = base_config(
                work,
                [dicom_destination("archive", archive_port)],
                deidentify={"secret_key_file": str(key_file), "options": []},
                logging={"level": "INFO", "audit_file": str(audit)},
            )
            # node 1 creates the key; node 2 starts after it and reads the same key
            nodes.append(stack.enter_context(Proxy(write_config(work / "proxy.toml", config), work)))
            audits.append(audit)
        listener = stack.enter_context(_closing_listener())
        balancer = stack.enter_context(
            HAProxy(tmp_path / "haproxy", [n.port for n in nodes] + [listener], haproxy_echo_check("DEID_PROXY"))
        )
        # The C-ECHO check takes the non-DICOM listener out of rotation; the nodes stay in.
        assert wait_until(lambda: "node3 is DOWN" in balancer.log(), 20), balancer.log()

        # Several associations (two objects each), so the round robin spreads the study.
        for start in range(0, len(corpus), 2):
            sent = storescu(balancer.port, corpus[start : start + 2])
            assert sent.statuses == ["Success", "Success"], sent.output
        received = [dcmread(p) for p in archive.complete_files(len(corpus))]
        stored = [_stored(a) for a in audits]

    assert all(count > 0 for count in stored), f"stored per node: {stored}"
    assert sum(stored) == len(corpus)
    assert "node1 is DOWN" not in balancer.log() and "node2 is DOWN" not in balancer.log()

    assert len(received) == len(corpus)
    assert len({str(ds.SOPInstanceUID) for ds in received}) == len(corpus)
    (study_uid,) = {str(ds.StudyInstanceUID) for ds in received}
    assert study_uid not in {str(ds.StudyInstanceUID) for ds in originals.values()}
    assert len({str(ds.PatientID) for ds in received}) == 1
    assert len({str(ds.PatientName) for ds in received}) == 1
    assert str(received[0].PatientID) != str(next(iter(originals.values())).PatientID)

    # Series intact: as many series as sent, each with all its instances and one Series Number.
    sent_series = Counter(str(ds.SeriesInstanceUID) for ds in originals.values())
    got_series: dict[str, list[int]] = defaultdict(list)
    for ds in received:
        got_series[str(ds.SeriesInstanceUID)].append(int(ds.InstanceNumber))
    assert sorted(len(v) for v in got_series.values()) == sorted(sent_series.values())
    assert all(sorted(v) == list(range(1, len(v) + 1)) for v in got_series.values())
    assert not set(got_series) & set(sent_series)


def _read_pdu(sock: socket.socket) -> bytes:
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        assert chunk, "connection closed"
        header += chunk
    (length,) = struct.unpack(">I", header[2:])
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, "connection closed"
        body += chunk
    return header + body


def test_echo_check_pdus_get_the_answers_the_check_expects(tmp_path: Path) -> None:
    """The hexadecimal PDUs of the HAProxy check, sent to a real node, get the replies the
    check's `expect` lines look for; another called AE title is rejected."""
    archive_port = free_port()
    config = base_config(tmp_path, [dicom_destination("archive", archive_port)])
    lines = haproxy_echo_check("DEID_PROXY")
    expected_echo = next(line.split()[-1] for line in lines if "expect binary" in line and "0009" in line)
    expected_release = lines[-1].split()[-1]
    with Proxy(write_config(tmp_path / "proxy.toml", config), tmp_path) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(associate_rq("DEID_PROXY", "HAPROXY_CHECK"))
            assert _read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
            sock.sendall(c_echo_rq())
            assert bytes.fromhex(expected_echo) in _read_pdu(sock)  # C-ECHO-RSP, Status 0000
            sock.sendall(release_rq())
            assert _read_pdu(sock) == bytes.fromhex(expected_release)  # A-RELEASE-RP
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(associate_rq("SOMEONE_ELSE", "HAPROXY_CHECK"))
            assert _read_pdu(sock)[0] == 0x03  # A-ASSOCIATE-RJ: the check would fail
