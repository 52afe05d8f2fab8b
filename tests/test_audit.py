"""audit: typed events, fixed fields, PHI-free by construction, the fan-out and the JSON sink."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dicom_proxy import audit
from dicom_proxy.models import ObjectIdentity


def test_uid_and_ae_fields_accept_only_uids_and_ae_titles() -> None:
    with pytest.raises(ValueError, match="sop_instance_uid"):
        audit.ObjectForwarded(destination="a", entry="x.dcm", sop_instance_uid="DOE^JOHN")
    with pytest.raises(ValueError, match="calling_ae_title"):
        audit.AssociationAccepted(association=1, calling_ae_title="A" * 17, called_ae_title="B", peer="1.2.3.4:5")
    event = audit.ObjectForwarded(destination="a", entry="x.dcm", sop_instance_uid="2.25.1")
    assert event.sop_instance_uid == "2.25.1"


def test_reason_is_one_bounded_line() -> None:
    event = audit.ReloadRejected(reason="first\nsecond\t" + "x" * 1000)
    assert "\n" not in event.reason and len(event.reason) <= 300


def test_json_record_names_the_event_and_renders_statuses_in_hex() -> None:
    identity = ObjectIdentity(patient_id="ABC", study_instance_uid="2.25.7", sop_instance_uid="2.25.8")
    refused = audit.ObjectRefused.of(0xC003, "pixels", identity, calling_ae_title="MODALITY", association=4)
    record = refused.to_json()
    assert record["event"] == "refused"
    assert record["status"] == "0xC003"
    assert record["study_instance_uid"] == "2.25.7" and record["patient_id"] == "ABC"
    assert refused.log_level() == logging.WARNING
    ended = audit.AssociationEnded(
        association=4, calling_ae_title="M", peer="p", ended_by="release", received=3, stored=2, refused=1,
        refused_by_status={0xC003: 1}, seconds=0.1,
    )
    assert ended.to_json()["refused_by_status"] == {"0xC003": 1}
    assert ended.log_level() == logging.WARNING
    clean = audit.AssociationEnded(
        association=5, calling_ae_title="M", peer="p", ended_by="release", received=3, stored=3, refused=0,
        refused_by_status={}, seconds=0.1,
    )
    assert clean.log_level() == logging.INFO


def test_every_kind_has_one_event_class() -> None:
    def subclasses(cls: type) -> list[type]:
        return [c for s in cls.__subclasses__() for c in (s, *subclasses(s))]

    kinds = [c.kind for c in subclasses(audit.AuditEvent)]
    assert sorted(kinds) == sorted(audit.EventKind)


class _Broken:
    def emit(self, event: audit.AuditEvent) -> None:
        raise RuntimeError("sink down")


class _Recorder:
    def __init__(self) -> None:
        self.events: list[audit.AuditEvent] = []

    def emit(self, event: audit.AuditEvent) -> None:
        self.events.append(event)


def test_fan_out_reaches_every_sink_even_when_one_fails() -> None:
    fan = audit.FanOut()
    recorder = _Recorder()
    fan.add(_Broken())
    fan.add(recorder)
    fan.emit(audit.NodeStopped())
    assert [e.kind for e in recorder.events] == [audit.EventKind.NODE_STOPPED]
    fan.remove(recorder)
    fan.emit(audit.NodeStopped())
    assert len(recorder.events) == 1


def test_json_sink_appends_every_event_to_the_audit_file_whatever_the_log_level(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.jsonl"
    sink = audit.JsonLogSink(path)
    logging.getLogger("dicom_proxy.audit").setLevel(logging.ERROR)
    try:
        sink.emit(audit.NodeStopped(time=1.0))
        sink.emit(audit.QuarantinePurged(destination="a", entries=2, user="root"))
    finally:
        logging.getLogger("dicom_proxy.audit").setLevel(logging.NOTSET)
        sink.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"event": "stopped", "time": 1.0}
    assert lines[1]["event"] == "quarantine_purged" and lines[1]["entries"] == 2
    assert path.stat().st_mode & 0o077 == 0
