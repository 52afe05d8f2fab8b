"""Peers only the benchmark needs: Orthanc as an anonymizing router and the plain pynetdicom
relay. Everything else (storescp, the proxy, HAProxy, echo) is tests/netpeers.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.netpeers import DCMTK_ENV, echo, free_port, wait_until


def orthanc_binary() -> str | None:
    """Debian package orthanc (scripts/bench installs it); /usr/sbin may not be on PATH."""
    return shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)


class Orthanc:
    """Orthanc as an anonymizing router: Lua OnStoredInstance -> anonymize -> send -> delete."""

    LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
   if origin['RequestOrigin'] ~= 'Lua' then
      local dicom = RestApiPost('/instances/' .. instanceId .. '/anonymize', '{"Force": true, "KeepPrivateTags": false}')
      local anonymized = ParseJson(RestApiPost('/instances', dicom))['ID']
      SendToModality(anonymized, 'archive')
      Delete(anonymized)
      Delete(instanceId)
   end
end
"""

    def __init__(self, work: Path, archive_port: int) -> None:
        self.work = work
        self.archive_port = archive_port
        self.process: subprocess.Popen[bytes] | None = None
        self.dicom_port = 0
        self.http_port = 0

    def start(self, binary: str) -> Orthanc:
        self.dicom_port, self.http_port = free_port(), free_port()
        (self.work / "router.lua").write_text(self.LUA)
        config = {
            "Name": "bench-router",
            "StorageDirectory": str(self.work / "storage"),
            "IndexDirectory": str(self.work / "index"),
            "StorageCompression": False,
            "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {"archive": ["ARCHIVE", "127.0.0.1", self.archive_port]},
            "LuaScripts": [str(self.work / "router.lua")],
            "Plugins": [],
            "SaveJobs": False,
            "StableAge": 3600,
        }
        (self.work / "orthanc.json").write_text(json.dumps(config, indent=2))
        with open(self.work / "orthanc.log", "wb") as log:
            self.process = subprocess.Popen(
                [binary, str(self.work / "orthanc.json")],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.work,
                env=DCMTK_ENV,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/system", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        if not wait_until(ready, 60, 0.1) or not wait_until(lambda: echo(self.dicom_port, "ORTHANC"), 20, 0.1):
            raise RuntimeError("Orthanc not ready")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Relay:
    """benchmarks/relay.py in a subprocess: ready on its 'listening on H:P' line."""

    archive_port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "relay.log"

    def start(self, timeout: float = 60) -> Relay:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.relay", str(self.archive_port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
        pattern = re.compile(rb"listening on [^:\s]+:(\d+)")

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"relay exited with {self.process.returncode}")
            match = pattern.search(self.log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
            return bool(match)

        if not wait_until(ready, timeout, 0.05):
            raise RuntimeError("relay not ready")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
