#!/usr/bin/env python3
"""Benchmark dicom-proxy against the limit (dcmtk direct) and Orthanc as an anonymizing router.

Not a test: it prints figures and never asserts on them. Run through `scripts/bench` (sets up
the venv, dcmtk and TCP_NODELAY=1). Every path is timed the same way:

  t0 = just before the sender(s) start; "ack" = every storescu has exited (the sender saw a
  response for each object); "done" = the archive folder (dcmtk storescp) holds every object.

images/s and MB/s are computed from "done" (end-to-end throughput into the archive). The
proxy's per-object latency comes from its audit log: "stored" (object de-identified and
durably spooled, just before the sender gets Success) to "forwarded" (the archive answered
Success to the proxy's C-STORE). It measures spool queueing + forwarding, not network receive
or de-identification time.

Modes (see --help): the network comparison (default), --engine-only, --large (1 GiB object
through the proxy, peak RSS vs object size), --backlog N (drain rate of a pre-filled spool),
--pixels (scripts/bench_pixels.py), --profile FILE (py-spy on the proxy during its run).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
MiB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        sys.exit(f"bench: {name} not found (Debian package dcmtk)")
    return path


def echo(port: int, called: str) -> bool:
    result = subprocess.run(
        [tool("echoscu"), "-aec", called, "-aet", "BENCH", "-to", "5", "127.0.0.1", str(port)],
        capture_output=True,
        env=DCMTK_ENV,
        timeout=30,
    )
    return result.returncode == 0


def count_files(directory: Path) -> int:
    try:
        with os.scandir(directory) as it:
            return sum(1 for e in it if e.is_file() and not e.name.endswith(".tmp"))
    except FileNotFoundError:
        return 0


def vm_hwm_mib(pid: int) -> float | None:
    """Peak resident set size of a live process (VmHWM), MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, sections: dict[str, Any]) -> Path:
    lines: list[str] = []
    for name, body in sections.items():
        for table in body if isinstance(body, list) else [body]:
            lines.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            lines.extend(f"{k} = {toml_value(v)}" for k, v in table.items() if not isinstance(v, dict))
            for sub, subbody in ((k, v) for k, v in table.items() if isinstance(v, dict)):
                lines.append(f"[{name}.{sub}]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in subbody.items())
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# corpus

PATIENTS = [
    ("DOE^JOHN^Q", "MRN0012345", "19510312", "M", "ST MARY'S HOSPITAL"),
    ("SMITH^ANNA", "MRN0098765", "19780921", "F", "ST MARY'S HOSPITAL"),
    ("MÜLLER^JÖRG", "PID-443-221", "19640101", "M", "UNIVERSITÄTSKLINIKUM NORD"),
    ("NGUYEN^THI^MAI", "778812", "19900715", "F", "CITY GENERAL"),
    ("O'BRIEN^PATRICK", "A99-1234", "19420228", "M", "CITY GENERAL"),
]
SERIES = [("AXIAL 5MM", "STANDARD"), ("AXIAL 1MM BONE", "BONE"), ("CORONAL MPR", "SOFT")]


def _uid(*parts: object) -> str:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def ct_header(index: int, count: int, size: int, frames: int = 1) -> Any:
    """A CT header with realistic identifying attributes; no Pixel Data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    per_patient = max(1, -(-count // len(PATIENTS)))
    p = min(index // per_patient, len(PATIENTS) - 1)
    within = index - p * per_patient
    per_series = max(1, -(-per_patient // len(SERIES)))
    s = min(within // per_series, len(SERIES) - 1)
    name, pid, birth, sex, institution = PATIENTS[p]
    study_uid = _uid("study", pid)
    series_uid = _uid("series", pid, s)
    sop_uid = _uid("sop", pid, s, index, count, size, frames)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240517"
    ds.StudyTime, ds.SeriesTime, ds.AcquisitionTime, ds.ContentTime = "083012", "083512", "083522", "083530"
    ds.AccessionNumber = f"ACC{2024000 + p * 17:07d}"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME MEDICAL"
    ds.InstitutionName = institution
    ds.InstitutionAddress = "1 HOSPITAL ROAD, SPRINGFIELD"
    ds.ReferringPhysicianName = "HOUSE^GREGORY^^DR"
    ds.StationName = "CT-SCANNER-02"
    ds.StudyDescription = f"CT CHEST ABDOMEN W CONTRAST {name.split('^')[0]}"
    ds.SeriesDescription = SERIES[s][0]
    ds.OperatorsName = "TECH^JANE"
    ds.ManufacturerModelName = "ScanMaster 9000"
    ds.PatientName = name
    ds.PatientID = pid
    ds.IssuerOfPatientID = "HOSP-A"
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.PatientAge = f"{2024 - int(birth[:4]):03d}Y"
    ds.PatientWeight = 78.5
    ds.OtherPatientIDs = pid.replace("MRN", "OLD")
    ds.AdditionalPatientHistory = f"Follow-up; patient {name.split('^')[0]} seen 2024-05-01"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = 5.0
    ds.KVP = 120
    ds.DeviceSerialNumber = "SN-884421"
    ds.SoftwareVersions = "VA12"
    ds.ConvolutionKernel = SERIES[s][1]
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{4000 + p}"
    ds.SeriesNumber = s + 1
    ds.InstanceNumber = within - s * per_series + 1
    ds.ImagePositionPatient = [-250.0, -250.0, -5.0 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = _uid("for", pid)
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = -5.0 * index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = size
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    return ds


def base_image(size: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(6)
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    body = np.where(r < size * 0.42, 1024 + 40 + 60 * np.sin(xx / 19.0) * np.cos(yy / 13.0), 24)
    return (body + rng.integers(0, 24, size=(size, size))).clip(0, 4095).astype("<u2")


def make_corpus(root: Path, count: int, size: int, parts: int = 4) -> list[Path]:
    """N CT images in `parts` sub-folders (one per concurrent sender); cached between runs."""
    from pydicom import dcmwrite

    marker = root / "complete"
    if marker.exists():
        return sorted(root.glob("part*/*.dcm"))
    shutil.rmtree(root, ignore_errors=True)
    started = time.monotonic()
    base = base_image(size)
    files = []
    for i in range(count):
        part = root / f"part{min(parts - 1, i * parts // count)}"
        part.mkdir(parents=True, exist_ok=True)
        ds = ct_header(i, count, size)
        ds.PixelData = (base + (i % 7)).tobytes()
        path = part / f"IMG{i:05d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    marker.write_text(f"{count} {size}\n")
    print(f"corpus: {count} CT {size}x{size} 16-bit in {root} ({time.monotonic() - started:.1f}s)", file=sys.stderr)
    return files


def make_large(path: Path, frames: int, size: int) -> int:
    """One multi-frame CT object written frame by frame (never two copies in memory)."""
    import numpy as np
    from pydicom import dcmwrite

    ds = ct_header(0, 1, size, frames=frames)
    frame_bytes = size * size * 2
    length = frame_bytes * frames
    if length % 2 or length >= 2**32 - 1:
        sys.exit("bench: --large object too big for a 32-bit element length")
    dcmwrite(path, ds, enforce_file_format=True)
    base = base_image(size)
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length))
        chunk = 64
        for start in range(0, frames, chunk):
            n = min(chunk, frames - start)
            block = np.empty((n, size, size), dtype="<u2")
            for k in range(n):
                block[k] = base + ((start + k) % 11)
            f.write(block.tobytes())
    return path.stat().st_size


# --------------------------------------------------------------------------------------------
# peers


@dataclass
class StoreSCP:
    directory: Path
    port: int = 0
    ae_title: str = "ARCHIVE"
    process: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> StoreSCP:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [tool("storescp"), "-aet", self.ae_title, "-od", str(self.directory), "-uf", "--accept-all",
             str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV,
        )
        if wait and not wait_until(lambda: echo(self.port, self.ae_title), 20, 0.1):
            raise RuntimeError("storescp did not start")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@dataclass
class Server:
    """A relay under test in a subprocess (proxy, pynetdicom relay): ready on 'listening on H:P'."""

    argv: list[str]
    workdir: Path
    name: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, timeout: float = 60) -> Server:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                env={**os.environ, "TCP_NODELAY": "1", **self.env},
            )
        pattern = re.compile(rb"listening on [^:\s]+:(\d+)")

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            match = pattern.search(self.log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
            return bool(match)

        if not wait_until(ready, timeout, 0.05):
            raise RuntimeError(f"{self.name} not ready:\n{self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


def proxy_server(work: Path, archive_port: int, audit: Path, extra_spool: dict[str, Any] | None = None) -> Server:
    config = write_toml(work / "proxy.toml", {
        "node": {"ae_title": "DEID_PROXY", "bind": "127.0.0.1", "port": 0},
        "destinations": [{
            "name": "archive", "ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive_port,
            "retry_initial_delay": 0.2, "retry_max_delay": 1.0,
        }],
        "deidentify": {"secret_key_file": str(work / "secret.key"),
                       "options": ["retain_longitudinal_modified_dates", "clean_descriptors"]},
        "spool": {"directory": str(work / "spool"), "min_free_bytes": 0, "max_bytes": 64 * 1024**3,
                  **(extra_spool or {})},
        "logging": {"level": "INFO", "audit_file": str(audit)},
    })
    return Server([sys.executable, "-m", "dicom_proxy", "serve", "--config", str(config)], work, "proxy")


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

    @staticmethod
    def available() -> str | None:
        binary = shutil.which("Orthanc") or (Path("/usr/sbin/Orthanc").exists() and "/usr/sbin/Orthanc") or None
        if binary:
            return binary
        print("bench: Orthanc missing, trying apt-get install orthanc ...", file=sys.stderr)
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "update", "-qq"], capture_output=True, env=env)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "orthanc"], capture_output=True, env=env)
        return shutil.which("Orthanc") or (Path("/usr/sbin/Orthanc").exists() and "/usr/sbin/Orthanc") or None

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
        self.log = open(self.work / "orthanc.log", "wb")
        self.process = subprocess.Popen([binary, str(self.work / "orthanc.json")], stdout=self.log,
                                        stderr=subprocess.STDOUT, cwd=self.work, env=DCMTK_ENV)

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/system", timeout=2) as r:
                    return r.status == 200
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
        self.log.close()


# --------------------------------------------------------------------------------------------
# the plain pynetdicom relay (baseline: decode, edit a few tags, send_c_store, ack)


def relay_serve(archive_port: int) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

    from dicom_proxy.tcp import set_tcp_nodelay

    downstream: dict[int, Any] = {}
    lock = threading.Lock()
    out = AE(ae_title="RELAY")
    out.add_requested_context(CTImageStorage, [EXPLICIT_LE, "1.2.840.10008.1.2"])
    out.maximum_pdu_size = 0

    def upstream_ended(event: Any) -> None:
        with lock:
            assoc = downstream.pop(id(event.assoc), None)
        if assoc is not None and assoc.is_established:
            assoc.release()

    def handle_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        token = hashlib.sha256(str(ds.PatientID).encode()).hexdigest()[:10]
        ds.PatientName = f"ANON^{token}"
        ds.PatientID = token
        for keyword in ("PatientBirthDate", "AccessionNumber", "InstitutionName", "InstitutionAddress",
                        "ReferringPhysicianName", "OperatorsName", "OtherPatientIDs", "AdditionalPatientHistory"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.PatientIdentityRemoved = "YES"
        key = id(event.assoc)
        with lock:
            assoc = downstream.get(key)
        if assoc is None or not assoc.is_established:
            assoc = out.associate("127.0.0.1", archive_port, ae_title="ARCHIVE",
                                  evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)])
            if not assoc.is_established:
                return 0xA700
            with lock:
                downstream[key] = assoc
        status = assoc.send_c_store(ds)
        return int(status.Status) if "Status" in status else 0xA700

    ae = AE(ae_title="RELAY")
    ae.maximum_pdu_size = 0
    ae.add_supported_context(CTImageStorage, [EXPLICIT_LE, "1.2.840.10008.1.2"])
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_C_STORE, handle_store), (evt.EVT_C_ECHO, lambda e: 0), (evt.EVT_CONN_OPEN, set_tcp_nodelay),
        (evt.EVT_RELEASED, upstream_ended), (evt.EVT_ABORTED, upstream_ended),
    ])
    print(f"relay listening on 127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()
    server.shutdown()


# --------------------------------------------------------------------------------------------
# one timed run


@dataclass
class Run:
    path: str
    count: int
    total_bytes: int
    ack_seconds: float = float("nan")
    done_seconds: float = float("nan")
    arrived: int = 0
    sender_failures: int = 0
    peak_rss_mib: float | None = None
    latencies: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def images_per_s(self) -> float:
        return self.arrived / self.done_seconds if self.done_seconds > 0 else float("nan")

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes * self.arrived / max(self.count, 1) / 1e6 / self.done_seconds


def send_and_wait(run: Run, port: int, called: str, parts: list[Path], senders: int, archive: Path,
                  work: Path, watch_pid: int | None = None, timeout: float | None = None,
                  profile: Path | None = None) -> Run:
    """Start the storescu sender(s), wait for the archive to hold every object."""
    groups: list[list[Path]] = [[] for _ in range(senders)]
    for i, part in enumerate(parts):
        groups[i % senders].append(part)
    timeout = timeout or 120 + run.count * 1.0
    logs = []
    profiler = None
    if profile is not None and watch_pid is not None:
        profiler = start_profiler(watch_pid, profile)
    t0 = time.monotonic()
    procs = []
    for k, group in enumerate(groups):
        log = open(work / f"storescu-{run.path}-{k}.log", "wb")
        logs.append(log)
        procs.append(subprocess.Popen(
            [tool("storescu"), "-v", "-aec", called, "-aet", f"BENCH{k}", "-to", "60", "+sd", "+r", "-nh",
             "127.0.0.1", str(port), *map(str, group)],
            stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV,
        ))
    acked: set[int] = set()
    peak = 0.0
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        for i, p in enumerate(procs):
            if i not in acked and p.poll() is not None:
                acked.add(i)
                if len(acked) == len(procs):
                    run.ack_seconds = time.monotonic() - t0
        run.arrived = count_files(archive)
        if watch_pid:
            peak = max(peak, vm_hwm_mib(watch_pid) or 0)
        if run.arrived >= run.count:
            run.done_seconds = time.monotonic() - t0
            break
        if len(acked) == len(procs) and time.monotonic() - t0 - run.ack_seconds > max(30.0, 5 * run.ack_seconds):
            run.note = "stalled after the senders finished"
            break
        time.sleep(0.01)
    else:
        run.note = "timeout"
    if run.done_seconds != run.done_seconds:  # nan: partial
        run.done_seconds = time.monotonic() - t0
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if run.ack_seconds != run.ack_seconds:
        run.ack_seconds = time.monotonic() - t0
    for log in logs:
        log.close()
    for k in range(len(groups)):
        text = (work / f"storescu-{run.path}-{k}.log").read_text(errors="replace")
        run.sender_failures += len(re.findall(r"Received Store Response \((?!Success)", text))
    if profiler is not None:
        stop_profiler(profiler)
    if watch_pid:
        run.peak_rss_mib = max(peak, vm_hwm_mib(watch_pid) or 0)
    return run


PROFILE_GIL = False


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    pyspy = Path(sys.executable).parent / "py-spy"
    if not pyspy.exists():
        print("bench: --profile needs py-spy in the venv (pip install py-spy); not profiling", file=sys.stderr)
        return None
    proc = subprocess.Popen([str(pyspy), "record", "--format", "raw", "-r", "200", "-o", str(output),
                             "--pid", str(pid), *(["--gil"] if PROFILE_GIL else [])], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def summarize_profile(path: Path, top: int = 15) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    cumulative: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        # one entry per function (py-spy raw frames carry the line: "func (file.py:123)")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")
                  if not f.startswith(("thread (", "process ", "Thread.run ", "Thread._bootstrap"))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    kind = "threads holding the GIL (--gil)" if PROFILE_GIL else "non-idle threads (short sleeps count)"
    lines = [f"py-spy samples, {kind}: {total}", f"top {top} by own time:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append(f"top {top} by cumulative time:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in cumulative.most_common(top)]
    return lines


def proxy_latencies(audit: Path) -> list[float]:
    """Seconds from 'stored' (spooled, before Success) to 'forwarded' (archive said Success)."""
    stored: dict[str, float] = {}
    forwarded: dict[str, float] = {}
    if not audit.exists():
        return []
    for line in audit.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "stored":
            stored[record["sop_instance_uid"]] = record["time"]
        elif record.get("event") == "forwarded":
            uid = re.sub(r"\.dcm$", "", record["entry"]).rsplit("-", 1)[-1]
            forwarded[uid] = record["time"]
    return [forwarded[u] - stored[u] for u in stored if u in forwarded]


def run_path(path: str, args: argparse.Namespace, parts: list[Path], total_bytes: int, work_root: Path) -> Run:
    work = work_root / f"{path}-s{args.senders}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    archive = StoreSCP(work / "archive").start()
    run = Run(path, args.count, total_bytes)
    try:
        if path == "direct":
            return send_and_wait(run, archive.port, "ARCHIVE", parts, args.senders, archive.directory, work)
        if path == "orthanc":
            binary = Orthanc.available()
            if not binary:
                run.note = "skipped: Orthanc could not be installed"
                return run
            orthanc = Orthanc(work, archive.port)
            try:
                orthanc.start(binary)
            except RuntimeError as exc:
                run.note = f"skipped: {exc}"
                orthanc.stop()
                return run
            try:
                assert orthanc.process is not None
                return send_and_wait(run, orthanc.dicom_port, "ORTHANC", parts, args.senders, archive.directory,
                                     work, watch_pid=orthanc.process.pid)
            finally:
                orthanc.stop()
        if path == "proxy":
            audit = work / "audit.jsonl"
            proxy = proxy_server(work, archive.port, audit).start()
            try:
                assert proxy.process is not None
                send_and_wait(run, proxy.port, "DEID_PROXY", parts, args.senders, archive.directory, work,
                              watch_pid=proxy.process.pid, profile=args.profile)
                time.sleep(0.2)  # the audit line follows the archive's file by a few ms
                run.latencies = proxy_latencies(audit)
                refused = sum('"event": "refused"' in line for line in audit.read_text().splitlines())
                if refused:
                    run.note = f"{refused} refused by the proxy"
                return run
            finally:
                proxy.stop()
        if path == "relay":
            relay = Server([sys.executable, str(Path(__file__).resolve()), "--relay-serve", str(archive.port)],
                           work, "relay").start()
            try:
                assert relay.process is not None
                return send_and_wait(run, relay.port, "RELAY", parts, args.senders, archive.directory, work,
                                     watch_pid=relay.process.pid)
            finally:
                relay.stop()
        raise SystemExit(f"bench: unknown path {path!r}")
    finally:
        archive.stop()


def print_table(runs: list[Run], args: argparse.Namespace, mean_bytes: float) -> None:
    by = {r.path: r for r in runs}
    print()
    print(f"network: {args.count} CT {args.size}x{args.size} 16-bit, {mean_bytes / 1e6:.2f} MB each "
          f"({args.count * mean_bytes / 1e6:.0f} MB), senders={args.senders}, machine: {os.cpu_count()} CPUs")
    header = (f"{'path':<8} {'arrived':>8} {'img/s':>8} {'MB/s':>8} {'ack img/s':>10} {'ack s':>7} {'done s':>7} "
              f"{'peak RSS':>9}  note")
    print(header)
    print("-" * len(header))
    for r in runs:
        if r.note.startswith("skipped"):
            print(f"{r.path:<8} {'-':>8} {'-':>8} {'-':>8} {'-':>10} {'-':>7} {'-':>7} {'-':>9}  {r.note}")
            continue
        rss = f"{r.peak_rss_mib:.0f} MiB" if r.peak_rss_mib else "-"
        ack_rate = r.count / r.ack_seconds if r.ack_seconds > 0 else float("nan")
        print(f"{r.path:<8} {r.arrived:>4}/{r.count:<3} {r.images_per_s:8.1f} {r.mb_per_s:8.1f} {ack_rate:10.1f} "
              f"{r.ack_seconds:7.2f} {r.done_seconds:7.2f} {rss:>9}  "
              f"{r.note}{' sender saw ' + str(r.sender_failures) + ' failures' if r.sender_failures else ''}")
    print("img/s, MB/s: end to end, t0 -> archive (storescp folder) holds every object; ack img/s: t0 -> "
          "every storescu exited (a response for each object); peak RSS: VmHWM of the relay process")
    proxy = by.get("proxy")
    if proxy and proxy.arrived:
        print()
        for other in ("direct", "orthanc", "relay"):
            o = by.get(other)
            if o and o.arrived and not o.note.startswith("skipped"):
                print(f"proxy / {other:<7} throughput ratio: {proxy.images_per_s / o.images_per_s:6.2f}")
        lat = proxy.latencies
        if lat:
            print(f"proxy per-object latency, audit 'stored' -> 'forwarded' (spool wait + C-STORE to archive), "
                  f"n={len(lat)}: p50 {percentile(lat, 50) * 1e3:.0f} ms, p99 {percentile(lat, 99) * 1e3:.0f} ms, "
                  f"max {max(lat) * 1e3:.0f} ms")


# --------------------------------------------------------------------------------------------
# modes


def engine_only(args: argparse.Namespace, work_root: Path) -> None:
    import warnings

    from pydicom import dcmread
    from pydicom.data import get_testdata_files

    from dicom_proxy.config import parse_config
    from dicom_proxy.deidentify import Engine
    from dicom_proxy.models import ReceivedObject, Refused

    warnings.simplefilter("ignore")
    config = parse_config({
        "destinations": [{"name": "x", "type": "folder", "path": str(work_root / "unused")}],
        "deidentify": {"secret_key_file": str(work_root / "unused.key"),
                       "options": ["retain_longitudinal_modified_dates", "clean_descriptors"]},
    })
    engine = Engine(config.deidentify, os.urandom(32))

    def received(path: Path) -> ReceivedObject:
        data = path.read_bytes()
        meta = dcmread(io.BytesIO(data), stop_before_pixels=True)
        (group_length,) = struct.unpack_from("<I", data, 132 + 8)
        return ReceivedObject(data[132 + 12 + group_length:], str(meta.file_meta.TransferSyntaxUID),
                              str(meta.SOPClassUID), "BENCH")

    corpus = make_corpus(work_root.parent / f"corpus-{min(args.count, 50)}-{args.size}", min(args.count, 50),
                         args.size)
    objects = [received(p) for p in corpus]
    for obj in objects[:3]:
        engine.deidentify_received(obj)  # warm-up (policy caches, imports)
    repeat = max(1, 200 // len(objects))
    started = time.perf_counter()
    for _ in range(repeat):
        for obj in objects:
            engine.deidentify_received(obj)
    seconds = time.perf_counter() - started
    n = repeat * len(objects)
    print(f"engine  CT {args.size}x{args.size} 16-bit (deidentify_received: decode+plan+tags+verify+encode): "
          f"{n / seconds:8.1f} objects/s  {seconds / n * 1e3:7.2f} ms/object  "
          f"{n * len(objects[0].dataset_bytes) / seconds / 1e6:7.1f} MB/s")

    ok, refused, failed, elapsed, times = 0, 0, 0, 0.0, []
    for path in get_testdata_files():
        try:
            ds = dcmread(path)
            if "SOPClassUID" not in ds:
                continue
        except Exception:
            continue
        t = time.perf_counter()
        try:
            engine.deidentify(ds)
            ok += 1
            times.append((time.perf_counter() - t, Path(path).name))
        except Refused:
            refused += 1
        except Exception:
            failed += 1
        elapsed += time.perf_counter() - t
    print(f"engine  pydicom test files (deidentify(dataset), {ok} de-identified, {refused} refused, "
          f"{failed} crashed): {(ok + refused) / elapsed:8.1f} objects/s, "
          f"median {statistics.median(t for t, _ in times) * 1e3:.2f} ms")
    for t, name in sorted(times, reverse=True)[:5]:
        print(f"        slowest: {name:<40} {t * 1e3:8.1f} ms")


def large_mode(args: argparse.Namespace, work_root: Path) -> None:
    work = work_root / "large"
    shutil.rmtree(work, ignore_errors=True)
    (work / "input").mkdir(parents=True)
    frames = args.large_frames
    started = time.monotonic()
    size = make_large(work / "input" / "large.dcm", frames, args.size)
    print(f"large: {frames} frames {args.size}x{args.size} 16-bit, {size / MiB:.0f} MiB file "
          f"({time.monotonic() - started:.1f}s to write)", file=sys.stderr)
    archive = StoreSCP(work / "archive").start()
    audit = work / "audit.jsonl"
    proxy = proxy_server(work, archive.port, audit).start()
    try:
        assert proxy.process is not None
        rss_start = vm_hwm_mib(proxy.process.pid) or 0
        run = Run("proxy", 1, size)
        # done = the archive said Success to the proxy (storescp creates its file while writing)
        t0 = time.monotonic()
        sender = subprocess.Popen(
            [tool("storescu"), "-v", "-aec", "DEID_PROXY", "-aet", "BENCH", "-to", "60", "-nh", "127.0.0.1",
             str(proxy.port), str(work / "input" / "large.dcm")],
            stdout=open(work / "storescu.log", "wb"), stderr=subprocess.STDOUT, env=DCMTK_ENV)
        peak = 0.0
        deadline = t0 + args.large_timeout
        while time.monotonic() < deadline:
            peak = max(peak, vm_hwm_mib(proxy.process.pid) or 0)
            if sender.poll() is not None and run.ack_seconds != run.ack_seconds:
                run.ack_seconds = time.monotonic() - t0
            text = audit.read_text(errors="replace") if audit.exists() else ""
            if '"event": "forwarded"' in text or '"event": "refused"' in text or '"quarantined"' in text:
                run.done_seconds = time.monotonic() - t0
                break
            if proxy.process.poll() is not None:
                run.note = f"proxy died (exit {proxy.process.returncode})"
                break
            time.sleep(0.05)
        else:
            run.note = "timeout"
        peak = max(peak, vm_hwm_mib(proxy.process.pid) or 0)
        sender.wait(120)
        if run.ack_seconds != run.ack_seconds:
            run.ack_seconds = time.monotonic() - t0
        files = [p for p in (work / "archive").iterdir() if p.is_file()]
        arrived = bool(files) and '"event": "forwarded"' in audit.read_text(errors="replace")
        status = re.findall(r"Received Store Response \(([^)]*)\)", (work / "storescu.log").read_text(errors="replace"))
        goal = 2 * size / MiB + 300
        print()
        print(f"large object through the proxy: {size / MiB:.0f} MiB ({frames} frames)")
        print(f"  sender status: {status or 'none'}  ack after {run.ack_seconds:.1f}s")
        print(f"  arrived in archive: {'yes' if arrived else 'NO'}"
              + (f" ({files[0].stat().st_size / MiB:.0f} MiB) after {run.done_seconds:.1f}s" if arrived else "")
              + (f"  [{run.note}]" if run.note else ""))
        print(f"  proxy peak RSS (VmHWM): {peak:.0f} MiB (idle before: {rss_start:.0f} MiB) = "
              f"{peak / (size / MiB):.2f}x object size; goal < 2x size + 300 MiB = {goal:.0f} MiB: "
              f"{'MET' if peak < goal else 'NOT MET'}")
        if not arrived:
            print("  proxy log tail:\n" + "\n".join("    " + l for l in proxy.log().splitlines()[-15:]))
    finally:
        proxy.stop()
        archive.stop()


def backlog_mode(args: argparse.Namespace, work_root: Path) -> None:
    n = args.backlog
    size = args.backlog_size
    corpus_dir = work_root.parent / f"corpus-{n}-{size}"
    files = make_corpus(corpus_dir, n, size)
    work = work_root / "backlog"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    archive_port = free_port()  # nothing listens here yet: the archive is down
    audit = work / "audit.jsonl"
    proxy = proxy_server(work, archive_port, audit).start()
    archive = StoreSCP(work / "archive", port=archive_port)
    try:
        t0 = time.monotonic()
        result = subprocess.run(
            [tool("storescu"), "-v", "-aec", "DEID_PROXY", "-aet", "BENCH", "-to", "60", "+sd", "+r", "-nh",
             "127.0.0.1", str(proxy.port), str(corpus_dir)],
            capture_output=True, env=DCMTK_ENV, timeout=600 + n)
        fill = time.monotonic() - t0
        ok = len(re.findall(rb"Received Store Response \(Success\)", result.stdout + result.stderr))
        queued = len(list((work / "spool").rglob("*.dcm")))
        print(f"backlog: {ok}/{len(files)} objects ({size}x{size}) acknowledged with the archive down in "
              f"{fill:.1f}s ({ok / fill:.0f}/s); {queued} files in the spool", file=sys.stderr)
        t_start = time.time()
        archive.start(wait=False)
        wait_until(lambda: count_files(archive.directory) >= ok, 120 + n * 0.5, 0.05)
        total = time.time() - t_start
        times = sorted(p.stat().st_mtime for p in archive.directory.iterdir() if p.is_file())
        arrived = len(times)
        tenth = max(2, arrived // 10)

        def rate(ts: list[float]) -> float:
            return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else float("nan")

        print()
        print(f"backlog drain: {arrived}/{ok} queued objects {size}x{size} delivered after the archive came up")
        if times:
            print(f"  first arrival {times[0] - t_start:.2f}s after archive start (includes retry backoff <= 1s)")
            print(f"  drain: total {total:.2f}s, {arrived / total:.1f} objects/s overall; "
                  f"first 10%: {rate(times[:tenth]):.1f}/s, last 10%: {rate(times[-tenth:]):.1f}/s, "
                  f"steady (first->last arrival): {rate(times):.1f}/s  (archive file mtimes)")
        rss = vm_hwm_mib(proxy.process.pid) if proxy.process else None
        print(f"  proxy peak RSS: {rss:.0f} MiB" if rss else "")
    finally:
        proxy.stop()
        archive.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="corpus size (default 300, ~150 MB at 512)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns (default 512)")
    parser.add_argument("--senders", type=int, default=1, choices=(1, 2, 4), help="concurrent storescu processes")
    parser.add_argument("--paths", default="direct,orthanc,proxy,relay", help="comma list: direct,orthanc,proxy,relay")
    parser.add_argument("--engine-only", action="store_true", help="engine alone in process: objects/s")
    parser.add_argument("--pixels", action="store_true", help="also run scripts/bench_pixels.py")
    parser.add_argument("--large", action="store_true", help="one 1 GiB multi-frame object through the proxy")
    parser.add_argument("--large-frames", type=int, default=2048, help="frames of the --large object (2048: 1 GiB)")
    parser.add_argument("--large-timeout", type=float, default=900)
    parser.add_argument("--backlog", type=int, default=0, metavar="N", help="drain rate of N objects queued")
    parser.add_argument("--backlog-size", type=int, default=64, help="rows = columns of backlog objects")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the proxy during its run")
    parser.add_argument("--profile-gil", action="store_true", help="py-spy --gil: only the GIL holder")
    parser.add_argument("--workdir", type=Path, default=REPO / "var" / "bench", help="corpus cache and run dirs")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (archives, logs)")
    parser.add_argument("--relay-serve", type=int, metavar="ARCHIVE_PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()

    global PROFILE_GIL
    PROFILE_GIL = args.profile_gil
    if args.relay_serve:
        relay_serve(args.relay_serve)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    work_root = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    try:
        did = False
        if args.engine_only:
            engine_only(args, work_root)
            did = True
        if args.pixels:
            if (REPO / "scripts" / "bench_pixels.py").exists():
                sys.path.insert(0, str(REPO / "scripts"))
                from bench_pixels import bench_pixels  # type: ignore[import-not-found]

                for line in bench_pixels():
                    print(line)
            else:
                print("bench: scripts/bench_pixels.py not found; no pixel benchmark")
            did = True
        if args.large:
            large_mode(args, work_root)
            did = True
        if args.backlog:
            backlog_mode(args, work_root)
            did = True
        if did:
            return 0
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
        files = make_corpus(args.workdir / f"corpus-{args.count}-{args.size}", args.count, args.size)
        parts = sorted({f.parent for f in files})
        total_bytes = sum(f.stat().st_size for f in files)
        runs = []
        for path in paths:
            print(f"bench: running {path} (senders={args.senders}) ...", file=sys.stderr)
            runs.append(run_path(path, args, parts, total_bytes, work_root))
        print_table(runs, args, total_bytes / len(files))
        if args.profile and args.profile.exists() and args.profile.stat().st_size:
            print()
            print("\n".join(summarize_profile(args.profile)))
        return 0
    finally:
        if args.keep:
            print(f"bench: run directory kept: {work_root}", file=sys.stderr)
        else:
            shutil.rmtree(work_root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
