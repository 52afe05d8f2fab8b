"""Orthanc (Debian `orthanc`) as a real sender and archive: each instance gets its own temporary
configuration, storage, DICOM port and HTTP port (loopback, no authentication)."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.netpeers import free_port, require_tool, wait_until

# Orthanc's built-in decoders lack JPEG 2000: Debian's orthanc-gdcm plugin adds it, so Orthanc
# can render every instance the test sends (scripts/test installs it).
GDCM_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancGdcm.so")


@dataclass
class Orthanc:
    """`Orthanc config.json` in a subprocess; REST calls on its HTTP port."""

    workdir: Path
    ae_title: str
    # Remote modalities by name: (AE title, port) on 127.0.0.1.
    modalities: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Transfer syntaxes its SCP accepts (Orthanc >= 1.9); None: Orthanc's default (all).
    accepted_transfer_syntaxes: Sequence[str] | None = None
    dicom_port: int = 0
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Orthanc:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dicom_port = self.dicom_port or free_port()
        self.http_port = free_port()
        assert GDCM_PLUGIN.exists(), "install Debian package orthanc-gdcm (scripts/test does)"
        config: dict[str, Any] = {
            "Name": self.ae_title,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.ae_title,
            "RemoteAccessAllowed": False,  # loopback only
            "AuthenticationEnabled": False,
            "Plugins": [str(GDCM_PLUGIN)],
            "StorageCompression": False,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomScuTimeout": 30,
            "DicomModalities": {name: [ae, "127.0.0.1", port] for name, (ae, port) in self.modalities.items()},
            "SaveJobs": False,
            "StableAge": 1,
        }
        if self.accepted_transfer_syntaxes is not None:
            config["AcceptedTransferSyntaxes"] = list(self.accepted_transfer_syntaxes)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=1))
        log = open(self.workdir / "orthanc.log", "wb")
        self.process = subprocess.Popen(
            [require_tool("Orthanc"), str(config_path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()
        assert wait_until(self._ready, 60), f"Orthanc {self.ae_title} did not start:\n{self.log()}"
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Orthanc exited with {self.process.returncode}:\n{self.log()}")
        try:
            self.get("/system")
        except (OSError, urllib.error.URLError):
            return False
        return True

    def log(self) -> str:
        path = self.workdir / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(request, timeout=120) as response:
            data: bytes = response.read()
            return data

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post(self, path: str, body: Any) -> Any:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        return json.loads(self.request("POST", path, payload))

    def stop(self) -> None:
        # Killed, not terminated: its graceful shutdown takes seconds and its storage is a
        # temporary folder nobody reads afterwards.
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
