"""Real DICOM peers over loopback for the tests: the proxy as a subprocess, dcmtk's storescp,
storescu and echoscu. Readiness is a log line or a C-ECHO, never a fixed sleep."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def require_tool(name: str) -> str:
    """dcmtk tools are a hard requirement: CI installs them; a missing one fails the test."""
    path = shutil.which(name)
    assert path, f"{name} not found: install Debian package dcmtk (scripts/test does)"
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def echo(port: int, called: str, calling: str = "ECHOSCU") -> bool:
    result = subprocess.run(
        [require_tool("echoscu"), "-aec", called, "-aet", calling, "-to", "5", "127.0.0.1", str(port)],
        capture_output=True,
        env=DCMTK_ENV,
        timeout=30,
    )
    return result.returncode == 0


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    """Write a TOML config from {"node": {...}, "destinations": [{...}], ...}."""
    lines: list[str] = []
    for name, body in sections.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
            for key, value in table.items():
                if not isinstance(value, dict):
                    lines.append(f"{key} = {toml_value(value)}")
            for sub, subbody in subtables.items():
                lines.append(f"[{name}.{sub}]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in subbody.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def base_config(workdir: Path, destinations: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "node": {"ae_title": "DEID_PROXY", "bind": "127.0.0.1", "port": 0},
        "destinations": destinations,
        "deidentify": {"secret_key_file": str(workdir / "secret.key"), "options": []},
        "spool": {"directory": str(workdir / "spool"), "min_free_bytes": 0},
        "logging": {"level": "INFO"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


def dicom_destination(name: str, port: int, ae_title: str = "ARCHIVE", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "ae_title": ae_title,
        "host": "127.0.0.1",
        "port": port,
        "retry_initial_delay": 0.2,
        "retry_max_delay": 1.0,
        **extra,
    }


@dataclass
class Proxy:
    """`python -m dicom_proxy serve` in a subprocess; stderr captured to a file."""

    config_path: Path
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    env: dict[str, str] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "proxy.log"

    def start(self, timeout: float = 30.0) -> Proxy:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dicom_proxy", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env={**os.environ, **(self.env or {})},
        )
        log.close()
        pattern = re.compile(rb"listening on [^:]+:(\d+)")

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"proxy exited with {self.process.returncode}:\n{self.log()}")
            match = pattern.search(self.log_path.read_bytes()[offset:])
            if match:
                self.port = int(match.group(1))
            return bool(match)

        assert wait_until(ready, timeout), f"proxy not ready:\n{self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@dataclass
class StoreSCP:
    """dcmtk storescp writing every received object into `directory`."""

    directory: Path
    port: int
    ae_title: str = "ARCHIVE"
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> StoreSCP:
        self._launch()
        # With +tls in extra_args a clear-text C-ECHO cannot probe it: a TCP connect does.
        ready = (lambda: port_open(self.port)) if "+tls" in self.extra_args else (lambda: echo(self.port, self.ae_title))
        assert wait_until(ready, 20), "storescp did not start"
        return self

    def _launch(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                require_tool("storescp"),
                "-aet", self.ae_title,
                "-od", str(self.directory),
                "-uf",  # name files by SOP Instance UID
                "--accept-all",
                *self.extra_args,
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=DCMTK_ENV,
        )

    def files(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())

    def complete_files(self, count: int, timeout: float = 60) -> list[Path]:
        """Wait until `count` objects are fully written: storescp writes files in place, so a
        file can be listed while its end is still arriving."""
        from dicom_proxy.models import Refused
        from dicom_proxy.part10 import read_file

        def complete() -> bool:
            files = self.files()
            if len(files) < count:
                return False
            try:
                for path in files:
                    read_file(path)  # structural check: a partial file is refused
            except Refused:
                return False
            return True

        assert wait_until(complete, timeout, interval=0.1), f"archive holds {len(self.files())}/{count}"
        return self.files()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def __enter__(self) -> StoreSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class StoreResult:
    returncode: int
    statuses: list[str]
    output: str


_STATUS = re.compile(r"Received Store Response \(([^)]*)\)")


def storescu_command(
    port: int,
    files: Iterable[Path],
    *,
    called: str = "DEID_PROXY",
    calling: str = "STORESCU",
    options: Sequence[str] = (),
) -> list[str]:
    """dcmtk storescu sending `files` to 127.0.0.1:`port`; `options` go between the AE titles and the address."""
    return [require_tool("storescu"), "-aec", called, "-aet", calling, *options, "127.0.0.1", str(port), *map(str, files)]


def storescu(
    port: int, files: Iterable[Path], called: str = "DEID_PROXY", calling: str = "STORESCU", timeout: float = 300
) -> StoreResult:
    """Send `files` in one association; return the per-object response statuses as printed."""
    options = ("-v", "-to", "30", "+sd", "-nh")  # -nh: no halt on a failed store, report every status
    result = subprocess.run(
        storescu_command(port, files, called=called, calling=calling, options=options),
        capture_output=True,
        env=DCMTK_ENV,
        timeout=timeout,
    )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    return StoreResult(result.returncode, _STATUS.findall(output), output)


def run_in_thread(function: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=function, daemon=True)
    thread.start()
    return thread


def pynetdicom_send_files(port: int, paths: Iterable[Path], called: str = "DEID_PROXY") -> list[int | None]:
    """Send files' data set bytes exactly as stored (no re-encoding) with pynetdicom, in one
    association; return each C-STORE status (None: no response).

    Lets tests deliver corrupt data sets that dcmtk would refuse to send.
    """
    from pydicom.filereader import read_file_meta_info
    from pynetdicom import AE, _config

    paths = list(paths)
    metas = [read_file_meta_info(p) for p in paths]
    ae = AE(ae_title="PYNETDICOM")
    for context in {(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas}:
        ae.add_requested_context(*context)
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    statuses: list[int | None] = []
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        if not assoc.is_established:
            return [None] * len(paths)
        try:
            for path in paths:
                response = assoc.send_c_store(path)
                statuses.append(int(response.Status) if "Status" in response else None)
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return statuses


def pynetdicom_send_file(port: int, path: Path, called: str = "DEID_PROXY") -> int | None:
    return pynetdicom_send_files(port, [path], called)[0]


def haproxy_binary() -> str:
    """HAProxy (Debian package haproxy, installed by scripts/test) lives in /usr/sbin."""
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    assert path, "haproxy not found: install Debian package haproxy (scripts/test does)"
    return path


@dataclass
class HAProxy:
    """HAProxy in TCP mode on loopback, round robin over `backends` (ports), with a generated
    config and a free port. `check_lines` (e.g. dicom_proxy.balancer.haproxy_echo_check) are
    the backend's health check; without them every backend is simply used."""

    workdir: Path
    backends: list[int]
    check_lines: list[str] = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        check = " check inter 500ms fall 1 rise 1" if self.check_lines else ""
        lines = [
            "global",
            "    maxconn 256",
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            "    timeout client 300s",
            "    timeout server 300s",
            "    timeout check 5s",
            "frontend dicom",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend nodes",
            "backend nodes",
            "    balance roundrobin",
            *("    " + line for line in self.check_lines),
            *(f"    server node{i} 127.0.0.1:{port}{check}" for i, port in enumerate(self.backends, 1)),
        ]
        return "\n".join(lines) + "\n"

    def start(self, ae_title: str = "DEID_PROXY") -> HAProxy:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        path = self.workdir / "haproxy.cfg"
        path.write_text(self.config())
        log = open(self.workdir / "haproxy.log", "wb")
        # -db: stay in the foreground, logs to stderr; -W not needed (one process)
        self.process = subprocess.Popen(
            [haproxy_binary(), "-db", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

        def ready() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, f"haproxy exited:\n{self.log()}"
            return echo(self.port, ae_title)

        assert wait_until(ready, 20, 0.1), f"haproxy not ready:\n{self.log()}"
        return self

    def log(self) -> str:
        path = self.workdir / "haproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
