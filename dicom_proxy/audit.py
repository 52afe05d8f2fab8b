"""Audit events: a typed, PHI-free vocabulary, and the sinks that receive them.

Every event is a frozen dataclass with fixed fields, named by an `EventKind`. What a field may
hold is fixed by construction: pseudonymous UIDs (checked to be UIDs, PS3.5 9.1), pseudonymous
patient IDs and keyed tokens, DIMSE status codes, counts, AE titles (checked, PS3.5 6.2),
peer addresses, destination and spool entry names (built from pseudonymous UIDs only), and
reasons built from attribute paths and codes. No field takes an original value.

Producers call `emit(event)`; every registered `Sink` receives it (a fan-out). The node
registers `JsonLogSink` (one JSON object per line, in the log at the event's level and, when
configured, appended to `[logging] audit_file`); other sinks (metrics, status page, DICOM audit
messages, PS3.15 A.5) subscribe with `add_sink`. A failing sink never disturbs the producer.
The forwarder process is forked after the sinks are registered, so it emits to the same ones.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from dicom_proxy.models import ObjectIdentity, is_valid_uid

_logger = logging.getLogger("dicom_proxy.audit")

# PS3.5 6.2: AE titles are at most 16 characters of the default repertoire, no backslash.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{0,16}$")
_REASON_MAX = 300


class EventKind(enum.StrEnum):
    """The vocabulary. The values are the `event` field of every JSON line (stable for grep)."""

    NODE_STARTED = "started"
    NODE_STOPPED = "stopped"
    KEY_CREATED = "key_created"
    KEY_CHANGED = "key_changed"
    CONFIG_RELOADED = "reloaded"
    RELOAD_REJECTED = "reload_rejected"
    ASSOCIATION_ACCEPTED = "association_accepted"
    ASSOCIATION_REJECTED = "association_rejected"
    CONNECTION_REJECTED = "connection_rejected"
    ASSOCIATION_ENDED = "association_ended"
    OBJECT_STORED = "stored"
    OBJECT_REFUSED = "refused"
    OBJECT_DROPPED = "dropped"
    OBJECT_FORWARDED = "forwarded"
    DELIVERY_DEFERRED = "delivery_deferred"
    OBJECT_QUARANTINED = "quarantined"
    QUARANTINE_RETRIED = "quarantine_retried"
    QUARANTINE_PURGED = "quarantine_purged"


def _check_ae(name: str, value: str) -> None:
    if not _AE_TITLE.match(value):
        raise ValueError(f"{name}: not an AE title")


@dataclass(frozen=True, kw_only=True)
class AuditEvent:
    """Base of every event: the kind, the level it is logged at, and when it happened."""

    kind: ClassVar[EventKind]
    level: ClassVar[int] = logging.INFO
    time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # The construction-time guard: a UID field holds a UID, an AE field an AE title,
        # a reason is one bounded line. Nothing else is free text.
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name.endswith("_uid") and value and not is_valid_uid(value):
                raise ValueError(f"{item.name}: not a valid UID")
            if item.name.endswith("ae_title"):
                _check_ae(item.name, value)
            if item.name == "reason" and isinstance(value, str):
                object.__setattr__(self, "reason", " ".join(value.split())[:_REASON_MAX])

    def log_level(self) -> int:
        """The level this event is logged at."""
        return self.level

    def to_json(self) -> dict[str, object]:
        """The JSON-ready record: `time`, `event`, then the fields (statuses as hex)."""
        record: dict[str, object] = {"time": round(self.time, 3), "event": str(self.kind)}
        for item in dataclasses.fields(self):
            if item.name == "time":
                continue
            record[item.name] = _json_value(item.name, getattr(self, item.name))
        return record


def _json_value(name: str, value: object) -> object:
    if name == "status" and isinstance(value, int):
        return f"0x{value:04X}"
    if name == "refused_by_status" and isinstance(value, Mapping):
        return {f"0x{int(k):04X}": v for k, v in sorted(value.items())}
    if isinstance(value, tuple):
        return list(value)
    return value


# -- node lifecycle --------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class NodeStarted(AuditEvent):
    kind = EventKind.NODE_STARTED
    ae_title: str
    address: str
    port: int
    destinations: tuple[str, ...]
    key_fingerprint: str


@dataclass(frozen=True, kw_only=True)
class NodeStopped(AuditEvent):
    kind = EventKind.NODE_STOPPED


@dataclass(frozen=True, kw_only=True)
class KeyCreated(AuditEvent):
    """A new secret key: every pseudonym from now on derives from it."""

    kind = EventKind.KEY_CREATED
    level = logging.WARNING
    key_file: str
    key_fingerprint: str


@dataclass(frozen=True, kw_only=True)
class KeyChanged(AuditEvent):
    """The node started with another key than the one its spool was filled with."""

    kind = EventKind.KEY_CHANGED
    level = logging.WARNING
    key_fingerprint: str
    previous_fingerprint: str


@dataclass(frozen=True, kw_only=True)
class ConfigReloaded(AuditEvent):
    kind = EventKind.CONFIG_RELOADED
    key_fingerprint: str


@dataclass(frozen=True, kw_only=True)
class ReloadRejected(AuditEvent):
    kind = EventKind.RELOAD_REJECTED
    level = logging.ERROR
    reason: str


# -- associations (PS3.8 7.1) ----------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class AssociationAccepted(AuditEvent):
    kind = EventKind.ASSOCIATION_ACCEPTED
    association: int
    calling_ae_title: str
    called_ae_title: str
    peer: str


@dataclass(frozen=True, kw_only=True)
class AssociationRejected(AuditEvent):
    """A-ASSOCIATE-RJ sent (PS3.8 9.3.4): result, source and diagnostic as sent, and why."""

    kind = EventKind.ASSOCIATION_REJECTED
    level = logging.WARNING
    calling_ae_title: str
    called_ae_title: str
    peer: str
    reason: str
    result: int
    source: int
    diagnostic: int


@dataclass(frozen=True, kw_only=True)
class ConnectionRejected(AuditEvent):
    """A connection closed before any DICOM was read: its address is not in
    node.allowed_networks, or its TLS handshake failed (PS3.15 B.9), with why."""

    kind = EventKind.CONNECTION_REJECTED
    level = logging.WARNING
    peer: str
    port: int  # the node's port it reached
    tls: bool
    reason: str


@dataclass(frozen=True, kw_only=True)
class AssociationEnded(AuditEvent):
    """The per-association summary: what was received and what was refused, by status."""

    kind = EventKind.ASSOCIATION_ENDED
    association: int
    calling_ae_title: str
    peer: str
    ended_by: str  # "release" or "abort" (or "closed" when the connection just went away)
    received: int
    stored: int
    refused: int
    refused_by_status: Mapping[int, int]
    seconds: float

    def log_level(self) -> int:
        return logging.WARNING if self.refused else logging.INFO


# -- objects received ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ObjectStored(AuditEvent):
    """De-identified and durably spooled: the sender got Success."""

    kind = EventKind.OBJECT_STORED
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str  # the pseudonymous Patient ID the output carries
    accession: str  # keyed token of the original Accession Number (the output has none)
    bytes: int
    calling_ae_title: str = ""
    association: int = 0
    received_bytes: int = 0  # the data set as received (before de-identification)
    profile: str = ""  # the profile that de-identified it (empty: no [[profiles]] declared)


@dataclass(frozen=True, kw_only=True)
class ObjectRefused(AuditEvent):
    """A failure status was sent; nothing was stored. Pseudonymous identity when known."""

    kind = EventKind.OBJECT_REFUSED
    level = logging.WARNING
    status: int
    reason: str
    # Pseudonyms of the object when its header could be read (see `ObjectIdentity`).
    sop_instance_uid: str = ""
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    patient_id: str = ""
    accession: str = ""
    calling_ae_title: str = ""
    association: int = 0
    received_bytes: int = 0  # the data set as received, when it could be read
    profile: str = ""

    @classmethod
    def of(cls, status: int, reason: str, identity: ObjectIdentity | None, **context: object) -> ObjectRefused:
        """A refusal carrying whatever pseudonymous identity is known."""
        known = dataclasses.asdict(identity) if identity is not None else {}
        return cls(status=status, reason=reason, **known, **context)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class ObjectDropped(AuditEvent):
    """A filter of the caller's profile dropped the object: Success was sent, nothing stored."""

    kind = EventKind.OBJECT_DROPPED
    profile: str
    filter: str  # the filter's name (site-authored) or "filters_default"
    sop_instance_uid: str = ""
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    patient_id: str = ""
    accession: str = ""
    calling_ae_title: str = ""
    association: int = 0

    @classmethod
    def of(cls, profile: str, filter_name: str, identity: ObjectIdentity | None, **context: object) -> ObjectDropped:
        known = dataclasses.asdict(identity) if identity is not None else {}
        return cls(profile=profile, filter=filter_name, **known, **context)  # type: ignore[arg-type]


# -- delivery --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ObjectForwarded(AuditEvent):
    kind = EventKind.OBJECT_FORWARDED
    destination: str
    entry: str
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    status: int = 0
    transfer_syntax_uid: str = ""  # what it went out as (its own, or a conversion)


@dataclass(frozen=True, kw_only=True)
class DeliveryDeferred(AuditEvent):
    """A transient failure: the entry stays queued and is retried after `retry_in` seconds."""

    kind = EventKind.DELIVERY_DEFERRED
    level = logging.WARNING
    destination: str
    reason: str
    retry_in: float
    entry: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""


@dataclass(frozen=True, kw_only=True)
class ObjectQuarantined(AuditEvent):
    """The destination refused the object permanently: moved to quarantine/<destination>/."""

    kind = EventKind.OBJECT_QUARANTINED
    level = logging.ERROR
    destination: str
    entry: str
    reason: str
    outcome: str = ""  # "refused by destination" or "cannot convert" (forward.Delivery)
    status: int | None = None
    sop_instance_uid: str = ""
    study_instance_uid: str = ""


# -- operator actions ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class QuarantineRetried(AuditEvent):
    kind = EventKind.QUARANTINE_RETRIED
    level = logging.WARNING
    destination: str
    entries: int
    user: str


@dataclass(frozen=True, kw_only=True)
class QuarantinePurged(AuditEvent):
    kind = EventKind.QUARANTINE_PURGED
    level = logging.WARNING
    destination: str
    entries: int
    user: str


# -- sinks -----------------------------------------------------------------------------------
class Sink(Protocol):
    """Anything that receives audit events. `emit` must be quick and thread-safe."""

    def emit(self, event: AuditEvent) -> None: ...


class FanOut:
    """Hands every event to every registered sink; a failing sink is logged, never raised."""

    def __init__(self) -> None:
        self._sinks: tuple[Sink, ...] = ()
        self._lock = threading.Lock()

    def add(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = (*self._sinks, sink)

    def remove(self, sink: Sink) -> None:
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        return self._sinks

    def emit(self, event: AuditEvent) -> None:
        for sink in self._sinks:
            try:
                sink.emit(event)
            except Exception as exc:
                # Type only: a message could quote anything.
                logging.getLogger(__name__).error("audit sink %s failed (%s)", type(sink).__name__, type(exc).__name__)


class JsonLogSink:
    """One JSON object per line: to the log (stderr/journald) at the event's level, and every
    event, whatever the log level, appended to `audit_file` when one is configured."""

    def __init__(self, audit_file: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        if audit_file is not None:
            audit_file.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: the receiver and the forwarder process write whole lines to one file.
            self._fd = os.open(audit_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def emit(self, event: AuditEvent) -> None:
        line = json.dumps(event.to_json())
        _logger.log(event.log_level(), line)
        if self._fd is not None:
            with self._lock:
                os.write(self._fd, (line + "\n").encode("utf-8"))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


SINKS = FanOut()
_json_sink: JsonLogSink | None = None


def emit(event: AuditEvent) -> None:
    """Send `event` to every registered sink."""
    SINKS.emit(event)


def add_sink(sink: Sink) -> None:
    SINKS.add(sink)


def remove_sink(sink: Sink) -> None:
    SINKS.remove(sink)


def configure(audit_file: Path | None) -> None:
    """(Re)register the JSON log sink, appending to `audit_file` when given."""
    global _json_sink
    if _json_sink is not None:
        SINKS.remove(_json_sink)
        _json_sink.close()
    _json_sink = JsonLogSink(audit_file)
    SINKS.add(_json_sink)
