"""DICOM audit messages (PS3.15 A.5, IHE ATNA) sent to a syslog collector.

An optional audit sink: the node's audit events become DICOM audit messages (XML, the schema of
PS3.15 A.5.1) carried as RFC 5424 syslog messages over UDP (RFC 5426, one message per datagram)
or TLS (RFC 5425, octet-counting framing). Messages name objects by their pseudonyms only: the
de-identified Study Instance UID and the pseudonymous Patient ID the output carries.

Mapping (PS3.15 A.5.3):

- objects stored on one association -> per study, when the association ends:
  *DICOM Instances Transferred* (110104, action C, sender = the calling AE) and
  *DICOM Instances Accessed* (110103, action C, data life cycle 7 De-identification);
  refusals of the association -> *DICOM Instances Transferred* with outcome 4 (minor failure)
- a study forwarded to a destination -> *Begin Transferring DICOM Instances* (110102) when the
  destination first gets an object of it, *DICOM Instances Transferred* (110104, action R) for
  each object it confirmed
- a rejected association -> *Security Alert* (110113, type 110126 Node Authentication)
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import ssl
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.etree import ElementTree

from dicom_proxy import audit
from dicom_proxy.config import AuditMessagesConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Code:
    """A coded value (PS3.15 A.5.1 CodedValueType): code, coding scheme, meaning."""

    code: str
    scheme: str
    meaning: str


# PS3.16 CID 400 Audit Event ID, CID 403 Security Alert Type, CID 402 Role ID, CID 404 ID Type.
BEGIN_TRANSFERRING = Code("110102", "DCM", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
APPLICATION = Code("110150", "DCM", "Application")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
NODE_ID = Code("110182", "DCM", "Node ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")

# EventOutcomeIndicator (PS3.15 A.5.1): 0 success, 4 minor, 8 serious, 12 major failure.
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"
# RFC 5424 PRI: facility 10 (security/authorization) * 8 + severity 5 (notice), as ATNA uses.
_PRI = 10 * 8 + 5
_MSGID = "IHE+RFC-3881"
_BOM = b"\xef\xbb\xbf"  # RFC 5424 6.4: an UTF-8 MSG starts with the BOM


@dataclass(frozen=True)
class Participant:
    """ActiveParticipant: a process (an AE title) and where it runs (an IP address)."""

    user_id: str
    requestor: bool
    role: Code | None = None
    network_access_point: str = ""
    alternative_user_id: str = ""


@dataclass(frozen=True)
class ParticipantObject:
    """ParticipantObjectIdentification: a study, a patient or a node, by pseudonym only."""

    object_id: str
    type_code: str  # 1 person, 2 system object
    role: str  # 1 patient, 3 report (a study), 13 security resource
    id_type: Code
    name: str
    life_cycle: str = ""
    instances: int = 0  # SOPClass NumberOfInstances in the description, when > 0
    anonymized: bool | None = None


@dataclass(frozen=True)
class AuditMessage:
    """One DICOM audit message (PS3.15 A.5.1), built from audit events."""

    event: Code
    action: str  # C R U D E
    outcome: str
    time: float
    participants: tuple[Participant, ...]
    source_id: str
    objects: tuple[ParticipantObject, ...] = ()
    type_codes: tuple[Code, ...] = ()
    outcome_description: str = ""
    enterprise_site_id: str = ""


def _coded(parent: ElementTree.Element, tag: str, code: Code) -> None:
    ElementTree.SubElement(
        parent, tag, {"csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning}
    )


def to_xml(message: AuditMessage) -> bytes:
    """The message as XML, elements in the order of the PS3.15 A.5.1 schema."""
    root = ElementTree.Element("AuditMessage")
    event = ElementTree.SubElement(
        root,
        "EventIdentification",
        {
            "EventActionCode": message.action,
            "EventDateTime": datetime.fromtimestamp(message.time, UTC).isoformat(timespec="milliseconds"),
            "EventOutcomeIndicator": message.outcome,
        },
    )
    _coded(event, "EventID", message.event)
    for code in message.type_codes:
        _coded(event, "EventTypeCode", code)
    if message.outcome_description:
        ElementTree.SubElement(event, "EventOutcomeDescription").text = message.outcome_description
    for p in message.participants:
        attributes = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
        if p.alternative_user_id:
            attributes["AlternativeUserID"] = p.alternative_user_id
        if p.network_access_point:
            attributes["NetworkAccessPointID"] = p.network_access_point
            attributes["NetworkAccessPointTypeCode"] = "2"  # IP address
        element = ElementTree.SubElement(root, "ActiveParticipant", attributes)
        if p.role is not None:
            _coded(element, "RoleIDCode", p.role)
    source = {"AuditSourceID": message.source_id}
    if message.enterprise_site_id:
        source["AuditEnterpriseSiteID"] = message.enterprise_site_id
    source_element = ElementTree.SubElement(root, "AuditSourceIdentification", source)
    ElementTree.SubElement(source_element, "AuditSourceTypeCode", {"csd-code": "4"})  # application server
    for o in message.objects:
        attributes = {
            "ParticipantObjectID": o.object_id,
            "ParticipantObjectTypeCode": o.type_code,
            "ParticipantObjectTypeCodeRole": o.role,
        }
        if o.life_cycle:
            attributes["ParticipantObjectDataLifeCycle"] = o.life_cycle
        element = ElementTree.SubElement(root, "ParticipantObjectIdentification", attributes)
        _coded(element, "ParticipantObjectIDTypeCode", o.id_type)
        ElementTree.SubElement(element, "ParticipantObjectName").text = o.name
        if o.instances or o.anonymized is not None:
            description = ElementTree.SubElement(element, "ParticipantObjectDescription")
            if o.instances:
                ElementTree.SubElement(description, "SOPClass", {"NumberOfInstances": str(o.instances)})
            if o.anonymized is not None:
                ElementTree.SubElement(description, "Anonymized").text = "true" if o.anonymized else "false"
    encoded: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return encoded


def syslog_message(xml: bytes, hostname: str, when: float, app_name: str = "dicom-proxy") -> bytes:
    """RFC 5424 6: HEADER (PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID), no
    STRUCTURED-DATA ("-"), then the BOM and the XML."""
    timestamp = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"<{_PRI}>1 {timestamp} {hostname or '-'} {app_name} {os.getpid()} {_MSGID} - "
    return header.encode("ascii") + _BOM + xml


# -- events -> messages --------------------------------------------------------------------
def _study(uid: str, instances: int, life_cycle: str = "") -> ParticipantObject:
    return ParticipantObject(uid, "2", "3", STUDY_INSTANCE_UID, uid, life_cycle, instances, anonymized=True)


def _patient(patient_id: str) -> ParticipantObject:
    return ParticipantObject(patient_id, "1", "1", PATIENT_NUMBER, patient_id)


def _peer_address(peer: str) -> str:
    return peer.rsplit(":", 1)[0] if peer else ""


@dataclass
class _Study:
    patient_id: str = ""
    stored: int = 0


@dataclass
class _Association:
    calling_ae_title: str = ""
    peer: str = ""
    studies: dict[str, _Study] = field(default_factory=dict)
    refusals: Counter[int] = field(default_factory=Counter)


class MessageBuilder:
    """Turns audit events into audit messages; keeps per-association and per-destination state."""

    # Studies a destination has begun receiving, remembered so "Begin Transferring" is sent once.
    _BEGUN_LIMIT = 10_000

    def __init__(self, ae_title: str, address: str, enterprise_site_id: str = "") -> None:
        self.ae_title = ae_title
        self.address = address
        self.enterprise_site_id = enterprise_site_id
        self._lock = threading.Lock()
        self._associations: dict[int, _Association] = {}
        self._begun: OrderedDict[tuple[str, str], None] = OrderedDict()

    def _message(self, event: Code, action: str, outcome: str, when: float, **kwargs: object) -> AuditMessage:
        return AuditMessage(
            event,
            action,
            outcome,
            when,
            source_id=self.ae_title,
            enterprise_site_id=self.enterprise_site_id,
            **kwargs,  # type: ignore[arg-type]
        )

    def _us(self, role: Code | None, requestor: bool = False) -> Participant:
        return Participant(self.ae_title, requestor, role, self.address, alternative_user_id=str(os.getpid()))

    def messages(self, event: audit.AuditEvent) -> list[AuditMessage]:
        if isinstance(event, audit.AssociationAccepted):
            with self._lock:
                self._associations[event.association] = _Association(event.calling_ae_title, event.peer)
        elif isinstance(event, audit.ObjectStored):
            with self._lock:
                session = self._associations.setdefault(event.association, _Association(event.calling_ae_title))
                study = session.studies.setdefault(event.study_instance_uid, _Study(event.patient_id))
                study.stored += 1
        elif isinstance(event, audit.ObjectRefused):
            with self._lock:
                session = self._associations.setdefault(event.association, _Association(event.calling_ae_title))
                session.refusals[event.status] += 1
        elif isinstance(event, audit.AssociationEnded):
            with self._lock:
                ended = self._associations.pop(event.association, None)
            if ended is not None:
                return self._received(ended, event.time)
        elif isinstance(event, audit.ObjectForwarded):
            return self._forwarded(event)
        elif isinstance(event, audit.AssociationRejected):
            return [self._rejected(event)]
        return []

    def _received(self, session: _Association, when: float) -> list[AuditMessage]:
        sender = Participant(session.calling_ae_title or "-", True, SOURCE_ROLE, _peer_address(session.peer))
        result = []
        for uid, study in session.studies.items():
            objects = (_study(uid, study.stored), *((_patient(study.patient_id),) if study.patient_id else ()))
            result.append(
                self._message(
                    INSTANCES_TRANSFERRED,
                    "C",
                    SUCCESS,
                    when,
                    participants=(sender, self._us(DESTINATION_ROLE)),
                    objects=objects,
                )
            )
            deidentified = (_study(uid, study.stored, life_cycle="7"), *objects[1:])
            result.append(
                self._message(
                    INSTANCES_ACCESSED, "C", SUCCESS, when, participants=(self._us(APPLICATION),), objects=deidentified
                )
            )
        if session.refusals:
            reasons = ", ".join(f"{n} refused with 0x{s:04X}" for s, n in sorted(session.refusals.items()))
            result.append(
                self._message(
                    INSTANCES_TRANSFERRED,
                    "C",
                    MINOR_FAILURE,
                    when,
                    participants=(sender, self._us(DESTINATION_ROLE)),
                    outcome_description=reasons,
                )
            )
        return result

    def _forwarded(self, event: audit.ObjectForwarded) -> list[AuditMessage]:
        receiver = Participant(event.destination, False, DESTINATION_ROLE)
        participants = (self._us(SOURCE_ROLE, requestor=True), receiver)
        objects = (_study(event.study_instance_uid, 1),) if event.study_instance_uid else ()
        result = []
        key = (event.destination, event.study_instance_uid)
        with self._lock:
            first = key not in self._begun
            self._begun[key] = None
            self._begun.move_to_end(key)
            while len(self._begun) > self._BEGUN_LIMIT:
                self._begun.popitem(last=False)
        if first:
            result.append(
                self._message(BEGIN_TRANSFERRING, "E", SUCCESS, event.time, participants=participants, objects=objects)
            )
        result.append(
            self._message(INSTANCES_TRANSFERRED, "R", SUCCESS, event.time, participants=participants, objects=objects)
        )
        return result

    def _rejected(self, event: audit.AssociationRejected) -> AuditMessage:
        peer = _peer_address(event.peer)
        performer = Participant(event.calling_ae_title or "-", True, None, peer)
        subject = ParticipantObject(peer or "-", "2", "13", NODE_ID, event.calling_ae_title or "-")
        return self._message(
            SECURITY_ALERT,
            "E",
            MINOR_FAILURE,
            event.time,
            participants=(self._us(APPLICATION), performer),
            objects=(subject,),
            type_codes=(NODE_AUTHENTICATION,),
            outcome_description=f"association rejected: {event.reason}",
        )


# -- transport -----------------------------------------------------------------------------
class SyslogSender:
    """Sends syslog messages from a background thread (a sink must be quick); one thread and one
    socket per process, started lazily, so the forked forwarder process gets its own."""

    def __init__(self, config: AuditMessagesConfig, hostname: str) -> None:
        self.config = config
        self.hostname = hostname
        self._pid = 0
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=10_000)
        self._lock = threading.Lock()
        self.dropped = 0

    def send(self, xml: bytes, when: float) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(syslog_message(xml, self.hostname, when))
        except queue.Full:
            self.dropped += 1

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._queue = queue.Queue(maxsize=10_000)  # a forked copy's queue had no reader
            threading.Thread(target=self._run, args=(self._queue,), name="audit-syslog", daemon=True).start()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued was handed to the network (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self, messages: queue.Queue[bytes]) -> None:
        connection: socket.socket | None = None
        while True:
            payload = messages.get()
            try:
                connection = self._deliver(connection, payload)
            except OSError as exc:
                # The collector is away: audit messages are best effort (the JSON audit log is
                # the record); never block the node. Type only in the log.
                log.warning(
                    "audit messages: cannot reach %s:%d (%s)", self.config.host, self.config.port, type(exc).__name__
                )
                if connection is not None:
                    connection.close()
                connection = None
            finally:
                messages.task_done()

    def _deliver(self, connection: socket.socket | None, payload: bytes) -> socket.socket:
        config = self.config
        if config.transport == "udp":
            if connection is None:
                connection = socket.socket(_family(config.host), socket.SOCK_DGRAM)
            connection.sendto(payload, (config.host, config.port))
            return connection
        if connection is None:
            raw = socket.create_connection((config.host, config.port), timeout=10)
            connection = _tls_context(config).wrap_socket(raw, server_hostname=config.host)
        # RFC 5425 4.3: octet-counting framing, "MSG-LEN SP SYSLOG-MSG".
        connection.sendall(f"{len(payload)} ".encode("ascii") + payload)
        return connection


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _tls_context(config: AuditMessagesConfig) -> ssl.SSLContext:
    """Server verified against `ca_file` (or the system store); a client certificate when given
    (IHE ATNA wants mutual authentication)."""
    context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.certificate_file is not None and config.private_key_file is not None:
        context.load_cert_chain(str(config.certificate_file), str(config.private_key_file))
    return context


class AuditMessageSink:
    """The audit sink (`dicom_proxy.audit.Sink`) that sends DICOM audit messages."""

    def __init__(self, config: AuditMessagesConfig, ae_title: str, address: str) -> None:
        self.builder = MessageBuilder(ae_title, address, config.enterprise_site_id)
        self.sender = SyslogSender(config, socket.gethostname())

    def emit(self, event: audit.AuditEvent) -> None:
        for message in self.builder.messages(event):
            self.sender.send(to_xml(message), message.time)


def build_all(builder: MessageBuilder, events: Sequence[audit.AuditEvent]) -> list[AuditMessage]:
    """Messages for a sequence of events (tests, replay)."""
    return [m for e in events for m in builder.messages(e)]
