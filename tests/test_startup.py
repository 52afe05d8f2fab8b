"""Startup failures, key handling and spool permissions (issue 15, items 2, 3, 4, 6), with the
real `dicom-proxy` processes: a startup problem is one `config error:` line and exit 2 within a
bounded time, never a traceback or a lingering process; the key is created in one explicit
place only and is never silently replaced."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.netpeers import Proxy, base_config, wait_until, write_config

pytestmark = pytest.mark.network

_STARTUP_TIMEOUT = 60  # generous: the machine is shared; a hang is what this catches


def _run(*args: str, cwd: Path, timeout: float = _STARTUP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_proxy", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def _config(tmp_path: Path, **overrides: Any) -> Path:
    folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "archive")}
    return write_config(tmp_path / "proxy.toml", base_config(tmp_path, [folder], **overrides))


def _serve_expecting_failure(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """serve in its own session; it must exit by itself and leave no process of its group."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dicom_proxy", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=_STARTUP_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert wait_until(lambda: not _group_alive(process.pid), 10), "a process of serve's group lingers"
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _one_config_error(result: subprocess.CompletedProcess[str], starts: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"config error: {starts}"), lines[0]
    return lines[0]


def test_port_in_use_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        config = _config(tmp_path, node={"port": port})
        assert _run("init", "--config", str(config), cwd=tmp_path).returncode == 0
        line = _one_config_error(_serve_expecting_failure(config, tmp_path), "node.port: cannot listen on")
        assert f"127.0.0.1:{port}" in line and "in use" in line
        # The metrics/status port is checked the same way, before anything is started.
        config = _config(tmp_path, metrics={"bind": "127.0.0.1", "port": port})
        line = _one_config_error(_serve_expecting_failure(config, tmp_path), "metrics.port: cannot listen on")
        assert f"127.0.0.1:{port}" in line


def test_address_not_on_this_machine_exits_2_and_check_config_finds_it(tmp_path: Path) -> None:
    config = _config(tmp_path, node={"bind": "192.0.2.1"})  # TEST-NET-1: never local
    assert _run("init", "--config", str(config), cwd=tmp_path).returncode == 0
    _one_config_error(_serve_expecting_failure(config, tmp_path), "node.bind: cannot listen on 192.0.2.1")
    _one_config_error(_run("check-config", "--config", str(config), cwd=tmp_path), "node.bind: cannot listen")


def test_malformed_bind_address_is_a_config_error(tmp_path: Path) -> None:
    config = _config(tmp_path, node={"bind": "999.1.1.1"})
    _one_config_error(_run("check-config", "--config", str(config), cwd=tmp_path), "node.bind: '999.1.1.1'")
    _one_config_error(_serve_expecting_failure(config, tmp_path), "node.bind: '999.1.1.1'")


def test_unwritable_spool_key_and_audit_paths_are_config_errors(tmp_path: Path) -> None:
    # A path under a regular file can never be created (also as root, unlike a chmod'ed folder).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cases = {
        "spool.directory": {"spool": {"directory": str(blocker / "spool")}},
        "deidentify.secret_key_file": {"deidentify": {"secret_key_file": str(blocker / "secret.key")}},
        "logging.audit_file": {"logging": {"level": "INFO", "audit_file": str(blocker / "audit.jsonl")}},
    }
    for key, overrides in cases.items():
        config = _config(tmp_path, **overrides)
        checked = _run("check-config", "--config", str(config), cwd=tmp_path)
        assert checked.returncode == 2 and "Traceback" not in checked.stderr, checked.stderr
        assert f"config error: {key}: " in checked.stderr and "is not a directory" in checked.stderr
        line = _one_config_error(_serve_expecting_failure(config, tmp_path), key)
        assert str(blocker) in line


def test_key_created_only_by_init_or_the_first_start_and_never_replaced(tmp_path: Path) -> None:
    config = _config(tmp_path)
    key_file = tmp_path / "secret.key"

    checked = _run("check-config", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0 and "creates it on its first start" in checked.stdout
    offline = _run("deidentify", "--config", str(config), "--output", str(tmp_path / "out"), str(tmp_path),
                   cwd=tmp_path)
    assert offline.returncode == 2 and "dicom-proxy init" in offline.stderr
    assert not key_file.exists()

    # The very first start creates it, loudly, and logs its fingerprint (never the key).
    with Proxy(config, tmp_path) as proxy:
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        log = proxy.log()
        assert "WARNING dicom_proxy.preflight: created a new secret key" in log
        fingerprint = log.split("secret key fingerprint ")[1].split(")")[0]
        assert key not in log
        assert proxy.terminate() == 0
    assert f"fingerprint {fingerprint}" in _run("check-config", "--config", str(config), cwd=tmp_path).stdout
    again = _run("init", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0 and "already exists" in again.stdout and key_file.read_text().strip() == key

    # The key goes missing (mistyped path, other working directory): the spool shows an
    # earlier run, so nothing starts and no new key appears.
    key_file.rename(tmp_path / "backup.key")
    refused = _serve_expecting_failure(config, tmp_path)
    line = _one_config_error(refused, "deidentify.secret_key_file:")
    assert "has run before" in line and "dicom-proxy init" in line
    assert not key_file.exists()
    assert _run("check-config", "--config", str(config), cwd=tmp_path).returncode == 2
    assert not key_file.exists()

    # init is the deliberate way to start over; the next start says the key changed.
    created = _run("init", "--config", str(config), cwd=tmp_path)
    assert created.returncode == 0 and "new secret key created" in created.stdout
    assert "the secret key changed" in created.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key_file.read_text().strip() != key


def test_reload_never_creates_a_key_and_rejects_a_changed_one(tmp_path: Path) -> None:
    config = _config(tmp_path)
    key_file = tmp_path / "secret.key"
    with Proxy(config, tmp_path) as proxy:
        assert proxy.process is not None
        key_file.rename(tmp_path / "moved.key")
        proxy.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload rejected" in proxy.log() and "not found" in proxy.log(), 30)
        assert not key_file.exists()
        key_file.write_text("ab" * 32 + "\n")
        key_file.chmod(0o600)
        proxy.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "the key changed" in proxy.log(), 30)
        assert proxy.process.poll() is None
        assert proxy.terminate() == 0


def test_every_spool_folder_is_0700(tmp_path: Path) -> None:
    config = _config(tmp_path)
    os.umask(0o022)
    with Proxy(config, tmp_path) as proxy:
        assert proxy.terminate() == 0
    spool = tmp_path / "spool"
    folders = [spool, *(p for p in spool.rglob("*") if p.is_dir())]
    assert {"queues", "quarantine", "incoming"} <= {p.name for p in folders}
    assert {p.relative_to(tmp_path).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {
        p.relative_to(tmp_path).as_posix(): "0o700" for p in folders
    }
