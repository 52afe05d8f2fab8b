"""The storage SCP: admission of associations and the C-STORE handler (PS3.4 Annex B).

The handler is as short as storescp's: turn the event into a ReceivedObject, run the pipeline
(select the caller's profile, de-identify, spool), map the outcome to a StoreStatus. Anything
that goes wrong before the object is durably spooled answers a failure status (fail closed).
A caller that matches no profile is rejected when it asks for an association.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_proxy import audit, reception
from dicom_proxy.admission import AdmittingServer
from dicom_proxy.config import NodeConfig
from dicom_proxy.deidentify import Engine
from dicom_proxy.limits import ReceiveLimits
from dicom_proxy.models import Dropped, ObjectIdentity, ReceivedObject, Refused
from dicom_proxy.profiles import Profiles
from dicom_proxy.spool import Spool, SpoolFull
from dicom_proxy.status import StoreStatus
from dicom_proxy.tcp import set_tcp_nodelay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who sent an object: for the audit records of what it sent."""

    calling_ae_title: str = ""
    association: int = 0
    profile: str = ""  # the profile chosen for it (empty: implicit profile or none)


@dataclass(frozen=True)
class StoreOutcome:
    """The C-STORE response: a status and, for a failure, a PHI-free reason (Error Comment)."""

    status: StoreStatus
    reason: str = ""
    dropped: bool = False  # Success, but a filter dropped it: nothing stored


class StorePipeline:
    """Select the caller's profile, de-identify one received object with the profile's engine
    and spool it durably for the profile's destinations. The profiles can be swapped (SIGHUP)."""

    def __init__(self, profiles: Profiles, spool: Spool) -> None:
        self.profiles = profiles
        self.spool = spool
        # Outcomes per profile ("stored", "dropped", "refused"): counted, never PHI.
        self.counts: Counter[tuple[str, str]] = Counter()
        self._counts_lock = threading.Lock()

    def count(self, profile: str, outcome: str) -> None:
        with self._counts_lock:
            self.counts[(profile, outcome)] += 1

    def store(self, received: ReceivedObject, caller: Caller = Caller()) -> StoreOutcome:
        # One profile set for the whole object, even if a reload swaps it now.
        profile = self.profiles.select(received.calling_ae_title, received.peer_address)
        if profile is None:
            # Admitted under a previous configuration, matched by none of the current one.
            return _refuse(StoreStatus.REJECTED_BY_PROFILE, "caller matches no profile", None, caller)
        caller = dataclasses.replace(caller, profile="" if profile.config.implicit else profile.name)
        outcome = self._store(received, profile.engine, profile.destinations, caller)
        if outcome.dropped:
            self.count(profile.name, "dropped")
        else:
            self.count(profile.name, "stored" if outcome.status is StoreStatus.SUCCESS else "refused")
        return outcome

    def _store(
        self, received: ReceivedObject, engine: Engine, destinations: tuple[str, ...], caller: Caller
    ) -> StoreOutcome:
        identity: ObjectIdentity | None = None
        size = len(received.dataset_bytes)
        try:
            self.spool.check_capacity(len(received.dataset_bytes))
            result = engine.deidentify_received(received)
            identity = result.identity
            self.spool.store(result, destinations)
        except Dropped as exc:
            # The sender did nothing wrong: Success, counted and audited, nothing stored.
            audit.emit(
                audit.ObjectDropped.of(
                    caller.profile or "default",
                    exc.filter_name,
                    exc.identity,
                    calling_ae_title=caller.calling_ae_title,
                    association=caller.association,
                )
            )
            return StoreOutcome(StoreStatus.SUCCESS, dropped=True)
        except SpoolFull as exc:
            return _refuse(StoreStatus.OUT_OF_RESOURCES, str(exc), identity, caller, size)
        except Refused as exc:
            return _refuse(exc.status, exc.reason, exc.identity, caller, size)
        except OSError as exc:
            # Disk trouble while spooling: the sender should try again later.
            reason = f"spool write failed ({exc.strerror})"
            return _refuse(StoreStatus.OUT_OF_RESOURCES, reason, identity, caller, size)
        except Exception as exc:  # fail closed on anything unexpected
            # Type only: a traceback or message may quote a value of the object.
            log.error("unexpected error while processing an object (%s)", type(exc).__name__)
            reason = f"unexpected {type(exc).__name__}"
            return _refuse(StoreStatus.PROCESSING_FAILURE, reason, identity, caller, size)
        known = result.identity or ObjectIdentity()
        audit.emit(
            audit.ObjectStored(
                sop_instance_uid=result.sop_instance_uid,
                series_instance_uid=result.series_instance_uid,
                study_instance_uid=result.study_instance_uid,
                patient_id=known.patient_id,
                accession=known.accession,
                bytes=result.size,
                calling_ae_title=caller.calling_ae_title,
                association=caller.association,
                received_bytes=size,
                profile=caller.profile,
            )
        )
        return StoreOutcome(StoreStatus.SUCCESS)


def _refuse(
    status: StoreStatus, reason: str, identity: ObjectIdentity | None, caller: Caller, received_bytes: int = 0
) -> StoreOutcome:
    audit.emit(
        audit.ObjectRefused.of(
            int(status),
            reason,
            identity,
            calling_ae_title=caller.calling_ae_title,
            association=caller.association,
            received_bytes=received_bytes,
            profile=caller.profile,
        )
    )
    return StoreOutcome(status, reason)


def response(outcome: StoreOutcome) -> Dataset:
    """The C-STORE response data set: Status, and for a failure an Error Comment (0000,0902),
    LO, at most 64 characters (PS3.7 C.4.2). Reasons name attribute paths and codes only."""
    rsp = Dataset()
    rsp.Status = int(outcome.status)
    if outcome.status != StoreStatus.SUCCESS and outcome.reason:
        rsp.ErrorComment = _error_comment(outcome.reason)
    return rsp


def _error_comment(reason: str) -> str:
    # LO: no backslash, no control characters, 64 characters at most.
    text = "".join(c if " " <= c <= "~" and c != "\\" else " " for c in reason)
    text = " ".join(text.split())
    return text if len(text) <= 64 else text[:61] + "..."


def handle_store(pipeline: StorePipeline, associations: AssociationAudit) -> Callable[[evt.Event], Dataset]:
    def handler(event: evt.Event) -> Dataset:
        caller = associations.caller(event.assoc)
        try:
            request = cast(C_STORE, event.request)
            received = ReceivedObject(
                dataset_bytes=cast(BytesIO, request.DataSet).getvalue(),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                affected_sop_class_uid=str(request.AffectedSOPClassUID),
                calling_ae_title=str(event.assoc.requestor.ae_title),
                peer_address=str(event.assoc.requestor.address),
            )
        except Exception:
            outcome = _refuse(StoreStatus.CANNOT_PARSE, "C-STORE request unreadable", None, caller)
        else:
            outcome = pipeline.store(received, caller)
        associations.count(event.assoc, outcome.status)
        return response(outcome)

    return handler


# PS3.8 9.3.4 (A-ASSOCIATE-RJ): (result, source, diagnostic) -> why, for the operator.
_REJECT_REASONS = {
    (0x01, 0x01, 0x03): "calling AE title not allowed (node.allowed_calling_ae_titles)",
    (0x01, 0x01, 0x07): "called AE title is not this node's (node.ae_title)",
    (0x02, 0x02, 0x01): "user identity not verified",
    (0x02, 0x03, 0x02): "too many associations (node.max_associations)",
}


def _ae(value: object) -> str:
    """A peer's AE title as text fit for a log line (PS3.5 6.2 characters, 16 at most)."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")
    return "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text.strip())[:16]


@dataclass
class _Session:
    number: int
    calling_ae_title: str
    peer: str
    started: float = field(default_factory=time.monotonic)
    ended_by: str = "closed"
    received: int = 0
    refused: Counter[int] = field(default_factory=Counter)


class AssociationAudit:
    """Audit of every inbound association: accepted or rejected (with why), and a summary when
    it ends (objects received, refused by status). One instance per server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._sessions: dict[int, _Session] = {}

    @staticmethod
    def _peer(assoc: Association) -> str:
        return f"{assoc.requestor.address}:{assoc.requestor.port}"

    def on_accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        session = _Session(next(self._numbers), _ae(assoc.requestor.ae_title), self._peer(assoc))
        with self._lock:
            self._sessions[id(assoc)] = session
        audit.emit(
            audit.AssociationAccepted(
                association=session.number,
                calling_ae_title=session.calling_ae_title,
                called_ae_title=_ae(primitive.called_ae_title if primitive is not None else ""),
                peer=session.peer,
            )
        )

    def on_rejected(self, event: evt.Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        answer = assoc.acceptor.primitive
        rsd = (0, 0, 0)
        if answer is not None:
            rsd = (int(answer.result or 0), int(answer.result_source or 0), int(answer.diagnostic or 0))
        audit.emit(
            audit.AssociationRejected(
                calling_ae_title=_ae(request.calling_ae_title if request is not None else ""),
                called_ae_title=_ae(request.called_ae_title if request is not None else ""),
                peer=self._peer(assoc),
                reason=_REJECT_REASONS.get(rsd, "rejected"),
                result=rsd[0],
                source=rsd[1],
                diagnostic=rsd[2],
            )
        )

    def on_released(self, event: evt.Event) -> None:
        self._ended_by(event.assoc, "release")

    def on_aborted(self, event: evt.Event) -> None:
        self._ended_by(event.assoc, "abort")

    def _ended_by(self, assoc: Association, how: str) -> None:
        with self._lock:
            session = self._sessions.get(id(assoc))
            if session is not None and session.ended_by == "closed":
                session.ended_by = how

    def on_closed(self, event: evt.Event) -> None:
        with self._lock:
            session = self._sessions.pop(id(event.assoc), None)
        if session is None:
            return  # never accepted: rejected (already logged) or closed before negotiating
        refused = sum(session.refused.values())
        audit.emit(
            audit.AssociationEnded(
                association=session.number,
                calling_ae_title=session.calling_ae_title,
                peer=session.peer,
                ended_by=session.ended_by,
                received=session.received,
                stored=session.received - refused,
                refused=refused,
                refused_by_status=dict(session.refused),
                seconds=round(time.monotonic() - session.started, 3),
            )
        )

    def caller(self, assoc: Association) -> Caller:
        with self._lock:
            session = self._sessions.get(id(assoc))
        if session is None:
            return Caller(_ae(assoc.requestor.ae_title))
        return Caller(session.calling_ae_title, session.number)

    def count(self, assoc: Association, status: StoreStatus) -> None:
        with self._lock:
            session = self._sessions.get(id(assoc))
            if session is None:
                return
            session.received += 1
            if status != StoreStatus.SUCCESS:
                session.refused[int(status)] += 1

    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
            (evt.EVT_CONN_CLOSE, self.on_closed),
        ]


def admit_caller(pipeline: StorePipeline) -> Callable[[evt.Event], None]:
    """Reject an association whose caller no profile takes (A-ASSOCIATE-RJ, rejected-permanent,
    service-user, calling AE title not recognized: PS3.8 9.3.4), before any object is sent."""

    def handler(event: evt.Event) -> None:
        assoc = event.assoc
        request = assoc.requestor.primitive
        calling = _ae(request.calling_ae_title if request is not None else "")
        if pipeline.profiles.select(calling, str(assoc.requestor.address)) is not None:
            return
        assoc.acse.send_reject(0x01, 0x01, 0x03)
        # As pynetdicom's own rejection does: stopping the DUL waits until the A-ASSOCIATE-RJ
        # is sent, before the acceptor closes the socket.
        assoc.kill()
        audit.emit(
            audit.AssociationRejected(
                calling_ae_title=calling,
                called_ae_title=_ae(request.called_ae_title if request is not None else ""),
                peer=AssociationAudit._peer(assoc),
                reason="calling AE title and peer address match no profile ([[profiles]])",
                result=0x01,
                source=0x01,
                diagnostic=0x03,
            )
        )

    return handler


def handle_echo(event: evt.Event) -> int:
    return 0x0000


def release_unassociated(event: evt.Event) -> None:
    """A connection that closes before an association was established frees its slot now.

    pynetdicom's acceptor otherwise waits the full ACSE timeout for an A-ASSOCIATE-RQ that
    cannot come; a port scanner could hold every slot (max_associations) that long. Waking the
    wait with None takes pynetdicom's own timeout path, which kills the association cleanly.
    """
    assoc = event.assoc
    if assoc.is_acceptor and not assoc.is_established and assoc.requestor.primitive is None:
        assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


class _CheaplyCopiedContext(PresentationContext):
    """A supported presentation context whose per-association copy is cheap.

    pynetdicom deep-copies every supported context for each new association: 171 storage SOP
    classes x 45 transfer syntaxes take about 60 ms, which caps senders that open one
    association per image. UIDs are immutable, so fresh lists are all a copy needs.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> _CheaplyCopiedContext:
        clone = PresentationContext.__new__(_CheaplyCopiedContext)
        clone.__dict__.update({k: list(v) if isinstance(v, list) else v for k, v in self.__dict__.items()})
        return clone


def _cheaply_copied(context: PresentationContext) -> _CheaplyCopiedContext:
    clone = PresentationContext.__new__(_CheaplyCopiedContext)
    clone.__dict__.update(context.__dict__)
    return clone


def build_ae(node: NodeConfig) -> AE:
    """An AE that accepts every storage SOP class and transfer syntax pynetdicom knows, plus
    Verification; only associations called `node.ae_title` (and, if listed, from allowed callers)."""
    ae = AE(ae_title=node.ae_title)
    ae.require_called_aet = True
    ae.require_calling_aet = list(node.allowed_calling_ae_titles)
    ae.maximum_associations = node.max_associations
    ae.acse_timeout = node.acse_timeout
    ae.dimse_timeout = node.dimse_timeout
    ae.network_timeout = node.network_timeout
    ae.maximum_pdu_size = node.maximum_pdu_size
    syntaxes = list(ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(cast(str, context.abstract_syntax), syntaxes)
    ae.add_supported_context(Verification, syntaxes)
    return ae


def start_servers(
    node: NodeConfig, pipeline: StorePipeline, tls_context: ssl.SSLContext | None = None
) -> list[AdmittingServer]:
    """Listen in background threads on `node.bind:node.port` (port 0: any free port): clear
    text, or TLS when `[node.tls]` names no port of its own; and, when it does, TLS on that
    port as well. One AE behind every port, so `node.max_associations` counts them all."""
    ae = build_ae(node)
    limits = ReceiveLimits(node.max_object_bytes)
    associations = AssociationAudit()
    handlers: list[Any] = [
        *associations.handlers(),
        (evt.EVT_REQUESTED, admit_caller(pipeline)),
        (evt.EVT_C_STORE, handle_store(pipeline, associations)),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_CONN_OPEN, set_tcp_nodelay),
        (evt.EVT_CONN_OPEN, limits.on_connection_open),
        (evt.EVT_CONN_CLOSE, release_unassociated),
    ]
    tls_port = node.tls.port if node.tls is not None else None
    listeners: list[tuple[int, ssl.SSLContext | None]] = [(node.port, tls_context if tls_port is None else None)]
    if tls_port is not None:
        listeners.append((tls_port, tls_context))
    servers: list[AdmittingServer] = []
    for port, context in listeners:
        contexts: list[PresentationContext] = [_cheaply_copied(c) for c in ae.supported_contexts]
        try:
            server = reception.start_server(
                ae, (node.bind, port), evt_handlers=handlers, contexts=contexts, server_class=AdmittingServer
            )
        except OSError:
            for started in servers:  # all ports or none
                started.shutdown()
            raise
        assert isinstance(server, AdmittingServer)
        server.allowed_networks = node.allowed_networks
        server.tls_context = context
        server.handshake_timeout = node.acse_timeout
        servers.append(server)
    return servers
