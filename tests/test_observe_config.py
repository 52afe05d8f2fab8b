"""[metrics] and [logging.audit_messages]: off unless configured, every problem names its key."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dicom_proxy.config import ConfigError, load_config, parse_config
from tests.netpeers import base_config, write_config

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


def test_failed_start_leaves_no_metrics_folder(tmp_path: Path) -> None:
    """A node that cannot listen exits 2 and removes its multiprocess metrics folder."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = base_config(
            tmp_path,
            [{"name": "a", "type": "folder", "path": str(tmp_path / "out")}],
            node={"bind": "127.0.0.1", "port": port},
            metrics={"bind": "127.0.0.1", "port": 0},
        )
        path = write_config(tmp_path / "proxy.toml", config)
        temporary = tmp_path / "tmp"
        temporary.mkdir()
        result = subprocess.run(
            [sys.executable, "-m", "dicom_proxy", "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "TMPDIR": str(temporary)},
        )
    assert result.returncode == 2, result.stderr
    assert list(temporary.iterdir()) == []
