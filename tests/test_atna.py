"""DICOM audit messages over syslog: a real node sends to a test UDP listener, and a TLS
listener for the RFC 5425 framing. Every message must be a well-formed RFC 5424 message whose
XML validates against the DICOM audit message schema (tests/data/dicom-audit-message.rng,
PS3.15 A.5.1), carry the expected events, and hold pseudonyms only."""

from __future__ import annotations

import re
import socket
import ssl
import threading
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from pydicom import dcmread

from dicom_proxy import audit
from dicom_proxy.atna import AuditMessageSink, to_xml
from dicom_proxy.config import AuditMessagesConfig
from tests.certificates import self_signed
from tests.corpus import write_corpus
from tests.netpeers import (
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    echo,
    free_port,
    storescu,
    wait_until,
    write_config,
)
from tests.test_metrics import us_objects
from tests.test_status_page import _original_values

SCHEMA = etree.RelaxNG(etree.parse(str(Path(__file__).parent / "data" / "dicom-audit-message.rng")))
# RFC 5424 6: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP SD SP MSG
HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>\S+) dicom-proxy "
    rb"(?P<pid>\d+) IHE\+RFC-3881 - \xef\xbb\xbf(?P<msg><\?xml.*)$",
    re.DOTALL,
)


class UdpCollector:
    """A syslog collector on a free UDP port: keeps every datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.datagrams: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.datagrams.append(self.sock.recv(65535))
            except TimeoutError:
                continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def parse(datagram: bytes) -> etree._Element:
    """Check the syslog header and the schema; return the AuditMessage element."""
    match = HEADER.match(datagram)
    assert match, datagram[:200]
    assert int(match.group("pri")) == 10 * 8 + 5  # authpriv.notice
    root = etree.fromstring(match.group("msg"))
    assert SCHEMA.validate(root), SCHEMA.error_log
    return root


def event_id(root: etree._Element) -> str:
    return str(root.find("EventIdentification/EventID").get("csd-code"))  # type: ignore[union-attr]


def test_node_sends_schema_valid_audit_messages_with_pseudonyms_only(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=2, series_per_study=1, images_per_series=2)
    refused = us_objects(tmp_path / "us", 1)
    collector = UdpCollector()
    archive_port = free_port()
    try:
        config = base_config(
            tmp_path,
            [dicom_destination("research", archive_port)],
            logging={"level": "INFO", "audit_messages": {"host": "127.0.0.1", "port": collector.port}},
        )
        config["deidentify"]["pixels"] = {"detect": "off"}  # rules only: the US object is refused
        with (
            StoreSCP(tmp_path / "archive", archive_port) as scp,
            Proxy(write_config(tmp_path / "proxy.toml", config), tmp_path) as proxy,
        ):
            sent = storescu(proxy.port, [*corpus, *refused], calling="MODALITY1")
            assert sent.statuses == ["Success"] * len(corpus) + ["Error: CannotUnderstand"], sent.output
            assert not echo(proxy.port, "SOMEONE_ELSE", calling="INTRUDER")
            scp.complete_files(len(corpus))
            expected = 2 * 2 + 1 + 2 + len(corpus) + 1  # see the counts below
            assert wait_until(lambda: len(collector.datagrams) >= expected, 30), len(collector.datagrams)
            assert proxy.terminate() == 0
    finally:
        collector.close()

    messages = [parse(d) for d in collector.datagrams]
    kinds = Counter(event_id(m) for m in messages)
    # Per study of the association: Instances Transferred (C) and Instances Accessed (C);
    # the refusal: Instances Transferred with outcome 4; per study forwarded: one Begin
    # Transferring; per object forwarded: Instances Transferred (R); the rejected association:
    # a Security Alert.
    assert kinds == {"110104": 2 + 1 + len(corpus), "110103": 2, "110102": 2, "110113": 1}

    received = [
        m
        for m in messages
        if event_id(m) == "110104" and m.find("EventIdentification").get("EventActionCode") == "C"  # type: ignore[union-attr]
    ]
    success = [m for m in received if m.find("EventIdentification").get("EventOutcomeIndicator") == "0"]  # type: ignore[union-attr]
    failure = [m for m in received if m.find("EventIdentification").get("EventOutcomeIndicator") == "4"]  # type: ignore[union-attr]
    assert len(success) == 2 and len(failure) == 1
    assert "1 refused with 0xC003" in failure[0].findtext("EventIdentification/EventOutcomeDescription", "")
    output_studies = {str(dcmread(p).StudyInstanceUID) for p in scp.files()}
    for message in success:
        (source,) = message.xpath("ActiveParticipant[RoleIDCode/@csd-code='110153']")
        assert source.get("UserID") == "MODALITY1"
        assert source.get("NetworkAccessPointID") == "127.0.0.1"
        (study,) = message.xpath("ParticipantObjectIdentification[ParticipantObjectIDTypeCode/@csd-code='110180']")
        assert study.get("ParticipantObjectID") in output_studies
        assert study.findtext("ParticipantObjectDescription/Anonymized") == "true"
        assert study.find("ParticipantObjectDescription/SOPClass").get("NumberOfInstances") == "2"  # type: ignore[union-attr]
    alert = next(m for m in messages if event_id(m) == "110113")
    assert alert.find("EventIdentification/EventTypeCode").get("csd-code") == "110126"  # type: ignore[union-attr]
    assert "called AE title" in alert.findtext("EventIdentification/EventOutcomeDescription", "")

    text = b"\n".join(collector.datagrams).decode("utf-8", "replace")
    leaked = sorted(v for v in _original_values([*corpus, *refused]) if v in text)
    assert leaked == []


def _certificates(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert, key_file = folder / "collector.pem", folder / "collector.key"
    cert.write_bytes(self_signed(key, "127.0.0.1", addresses=("127.0.0.1",)).public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key_file


def test_tls_transport_frames_messages_by_octet_count(tmp_path: Path) -> None:
    cert, key = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])
    received = bytearray()

    def accept() -> None:
        connection, _ = server.accept()
        with context.wrap_socket(connection, server_side=True) as tls:
            while chunk := tls.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    sink = AuditMessageSink(
        AuditMessagesConfig(host="127.0.0.1", port=port, transport="tls", ca_file=cert), "DEID_PROXY", "127.0.0.1"
    )
    sink.emit(audit.AssociationRejected(
        calling_ae_title="INTRUDER", called_ae_title="X", peer="127.0.0.1:4000", reason="called AE title is not "
        "this node's (node.ae_title)", result=1, source=1, diagnostic=7,
    ))  # fmt: skip
    sink.emit(audit.ObjectForwarded(destination="research", entry="e.dcm", study_instance_uid="2.25.1"))
    sink.sender.flush()
    assert wait_until(lambda: received.count(b"</AuditMessage>") == 3, 10)
    server.close()
    # RFC 5425 4.3: MSG-LEN SP SYSLOG-MSG, one after another.
    data, frames = bytes(received), []
    while data:
        length, _, rest = data.partition(b" ")
        frames.append(rest[: int(length)])
        data = rest[int(length) :]
    assert [event_id(parse(f)) for f in frames] == ["110113", "110102", "110104"]


@pytest.mark.parametrize("outcome", ["0", "4"])
def test_to_xml_escapes_and_validates(outcome: str) -> None:
    from dicom_proxy.atna import INSTANCES_TRANSFERRED, AuditMessage, Participant

    message = AuditMessage(
        INSTANCES_TRANSFERRED, "C", outcome, 1.5e9, (Participant("A<B&C", True),), "DEID_PROXY",
        outcome_description="reason with <xml> & quotes \"'",
    )  # fmt: skip
    root = etree.fromstring(to_xml(message))
    assert SCHEMA.validate(root), SCHEMA.error_log
    assert root.find("ActiveParticipant").get("UserID") == "A<B&C"  # type: ignore[union-attr]
    assert root.find("EventIdentification").get("EventDateTime") == "2017-07-14T02:40:00.000+00:00"  # type: ignore[union-attr]
