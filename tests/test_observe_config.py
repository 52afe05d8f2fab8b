"""[metrics] and [logging.audit_messages]: off unless configured, every problem names its key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dicom_proxy.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def _raw(**sections: object) -> dict[str, object]:
    return {"destinations": [{"name": "a", "type": "folder", "path": "out"}], **sections}


def _problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def test_quick_start_has_metrics_off_and_the_service_example_on() -> None:
    assert not load_config(REPO / "conf" / "dicom-proxy.toml").metrics.enabled
    service = parse_config(tomllib.loads((REPO / "conf" / "dicom-proxy.service.toml").read_text()))
    assert service.metrics.enabled
    assert (service.metrics.bind, service.metrics.port) == ("0.0.0.0", 9464)
    assert service.logging.audit_file == Path("var/audit.jsonl")


def test_metrics_defaults_and_errors() -> None:
    metrics = parse_config(_raw(metrics={})).metrics
    assert (metrics.enabled, metrics.bind, metrics.port) == (True, "127.0.0.1", 9464)
    assert _problems(_raw(metrics={"port": 70000})) == ["metrics.port: must be 0-65535"]
    assert _problems(_raw(metrics={"prot": 1})) == ["metrics.prot: unknown key"]
    assert _problems(_raw(metrics={"bind": ""})) == ["metrics.bind: must not be empty"]


def test_audit_messages_defaults_and_errors(tmp_path: Path) -> None:
    udp = parse_config(_raw(logging={"audit_messages": {"host": "127.0.0.1"}})).logging.audit_messages
    assert udp is not None and (udp.transport, udp.port) == ("udp", 514)
    tls = parse_config(_raw(logging={"audit_messages": {"host": "h", "transport": "tls"}})).logging.audit_messages
    assert tls is not None and tls.port == 6514
    key = "logging.audit_messages"
    assert _problems(_raw(logging={"audit_messages": {}})) == [
        f"{key}.host: required: the syslog collector's host name or address"
    ]
    assert _problems(_raw(logging={"audit_messages": {"host": "h", "transport": "tcp"}})) == [
        f"{key}.transport: must be one of 'udp', 'tls'"
    ]
    assert _problems(_raw(logging={"audit_messages": {"host": "h", "ca_file": str(tmp_path / "ca.pem")}})) == [
        f'{key}.ca_file: only used with transport = "tls"'
    ]
    missing = {"host": "h", "transport": "tls", "ca_file": str(tmp_path / "nope.pem")}
    assert _problems(_raw(logging={"audit_messages": missing})) == [f"{key}.ca_file: file not found"]
    (tmp_path / "node.pem").write_text("x")
    half = {"host": "h", "transport": "tls", "certificate_file": str(tmp_path / "node.pem")}
    assert _problems(_raw(logging={"audit_messages": half})) == [
        f"{key}.certificate_file: certificate_file and private_key_file go together"
    ]
