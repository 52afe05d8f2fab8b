"""Timed network runs: storescu sender(s) -> path under test -> dcmtk storescp (the archive).

Every path is timed the same way: t0 = just before the sender(s) start; "ack" = every storescu
has exited (the sender saw a response for each object); "done" = the archive folder holds
every object. images/s and MB/s are computed from "done" (end to end into the archive).

A path is written `kind[+feature...][@senders]`:
  direct            storescu straight to the archive (the limit)
  orthanc           Orthanc's anonymizing router (Lua: anonymize, send, delete)
  relay             a plain pynetdicom relay (benchmarks/relay.py)
  proxy             one dicom-proxy node
  haproxy           --nodes dicom-proxy nodes (same key, own spools) behind HAProxy in TCP mode
Features (proxy, haproxy) are entries of FEATURES: `detect` (pixel text detection on every
image), `tls` (TLS on both sides). `@4`: four concurrent storescu processes, each with its own
quarter of the corpus.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.peers import Orthanc, Relay, orthanc_binary
from benchmarks.profile import start_profiler, stop_profiler
from tests.netpeers import (
    DCMTK_ENV,
    HAProxy,
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    free_port,
    storescu_command,
    write_config,
)


@dataclass(frozen=True)
class Spec:
    """One path to time, parsed from `kind[+feature...][@senders]`."""

    kind: str
    features: tuple[str, ...] = ()
    senders: int = 1

    @classmethod
    def parse(cls, text: str) -> Spec:
        head, _, senders = text.partition("@")
        kind, *features = head.split("+")
        if kind not in ("direct", "orthanc", "relay", "proxy", "haproxy"):
            raise SystemExit(f"bench: unknown path kind {kind!r} in {text!r}")
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise SystemExit(f"bench: unknown feature(s) {unknown} in {text!r}; known: {sorted(FEATURES)}")
        if features and kind not in ("proxy", "haproxy"):
            raise SystemExit(f"bench: features apply to proxy and haproxy only: {text!r}")
        return cls(kind, tuple(features), int(senders or 1))

    def __str__(self) -> str:
        return self.kind + "".join("+" + f for f in self.features) + (f"@{self.senders}" if self.senders > 1 else "")


@dataclass
class Run:
    spec: Spec
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
    def skipped(self) -> bool:
        return self.note.startswith("skipped")

    @property
    def images_per_s(self) -> float:
        return self.arrived / self.done_seconds if self.done_seconds > 0 else float("nan")

    @property
    def mb_per_s(self) -> float:
        return self.total_bytes * self.arrived / max(self.count, 1) / 1e6 / self.done_seconds


# --------------------------------------------------------------------------------------------
# features: what a proxy node turns on for a row. Each returns config sections merged into the
# node's configuration and extra storescu arguments; None means this build does not support it.


@dataclass(frozen=True)
class Feature:
    config: dict[str, Any]
    sender_args: tuple[str, ...] = ()


def _detect(work: Path) -> Feature:
    return Feature({"deidentify": {"pixels": {"detect": "all"}}})


def _tls(work: Path) -> Feature:
    """A throwaway CA-less pair: the node's certificate is its own trust anchor for storescu."""
    key, cert = work / "node.key", work / "node.crt"
    if not cert.exists():
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
    return Feature(
        {"node": {"tls": {"certificate": str(cert), "private_key": str(key)}}},
        ("+tls", str(key), str(cert), "+cf", str(cert)),
    )


def _inproc(work: Path) -> Feature:
    """De-identify in the receiving process (node.worker_processes = 0), for comparison."""
    return Feature({"node": {"worker_processes": 0}})


FEATURES: dict[str, Callable[[Path], Feature]] = {"detect": _detect, "tls": _tls, "inproc": _inproc}
_DETECTION_OFF: dict[str, Any] = {"deidentify": {"pixels": {"detect": "off"}}}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def proxy_config(
    work: Path, archive_port: int, features: tuple[str, ...], key_file: Path | None = None, audit: Path | None = None
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A node's configuration for a timed run, and the sender arguments its features need."""
    config = base_config(
        work,
        [dicom_destination("archive", archive_port)],
        deidentify={
            "secret_key_file": str(key_file or work / "secret.key"),
            "options": ["retain_longitudinal_modified_dates", "clean_descriptors"],
        },
        spool={"directory": str(work / "spool"), "min_free_bytes": 0, "max_bytes": 64 * 1024**3},
        logging={"level": "INFO", "audit_file": str(audit or work / "audit.jsonl")},
    )
    if "detect" not in features and unsupported(deep_merge(config, _DETECTION_OFF)) is None:
        config = deep_merge(config, _DETECTION_OFF)  # say "off" explicitly when the build has the key
    sender_args: tuple[str, ...] = ()
    for name in features:
        feature = FEATURES[name](work)
        config = deep_merge(config, feature.config)
        sender_args += feature.sender_args
    return config, sender_args


def unsupported(config: dict[str, Any]) -> str | None:
    """The first configuration problem, if this build does not know a feature's keys."""
    from dicom_proxy.config import ConfigError, parse_config

    try:
        parse_config(config)
    except ConfigError as exc:
        return exc.problems[0]
    return None


# --------------------------------------------------------------------------------------------
# measuring


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


def tree_hwm_mib(pids: list[int]) -> float:
    return sum(vm_hwm_mib(pid) or 0 for pid in pids)


def child_pids(pid: int) -> list[int]:
    """The process and its children (the node forks its forwarder and maybe workers)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(c) for c in children)
    except OSError:
        pass
    return pids


def send_and_wait(
    run: Run,
    port: int,
    called: str,
    parts: list[Path],
    archive: Path,
    work: Path,
    watch_pids: list[int] | None = None,
    sender_args: tuple[str, ...] = (),
    profile: Path | None = None,
    profile_gil: bool = False,
) -> Run:
    """Start the storescu sender(s), wait for the archive to hold every object."""
    senders = run.spec.senders
    groups: list[list[Path]] = [[] for _ in range(senders)]
    for i, part in enumerate(parts):
        groups[i % senders].append(part)
    timeout = 120 + run.count * 1.0
    logs = []
    profiler = start_profiler(watch_pids[0], profile, profile_gil) if profile and watch_pids else None
    t0 = time.monotonic()
    procs = []
    for k, group in enumerate(groups):
        log = open(work / f"storescu-{k}.log", "wb")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                storescu_command(
                    port,
                    group,
                    called=called,
                    calling=f"BENCH{k}",
                    options=("-v", "-to", "60", "+sd", "+r", "-nh", *sender_args),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=DCMTK_ENV,
            )
        )
    acked: set[int] = set()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        for i, p in enumerate(procs):
            if i not in acked and p.poll() is not None:
                acked.add(i)
                if len(acked) == len(procs):
                    run.ack_seconds = time.monotonic() - t0
        run.arrived = count_files(archive)
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
        text = (work / f"storescu-{k}.log").read_text(errors="replace")
        run.sender_failures += len(re.findall(r"Received Store Response \((?!Success)", text))
    if profiler is not None:
        stop_profiler(profiler)
    if watch_pids:
        # VmHWM is the peak itself: read once at the end, not on every poll (reading the
        # node's /proc files 100 times a second took CPU from the node under test).
        run.peak_rss_mib = tree_hwm_mib(watch_pids)
    return run


def proxy_latencies(audits: list[Path]) -> list[float]:
    """Seconds from 'stored' (spooled, before Success) to 'forwarded' (archive said Success)."""
    stored: dict[str, float] = {}
    forwarded: dict[str, float] = {}
    for audit in audits:
        if not audit.exists():
            continue
        for line in audit.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "stored":
                stored[record["sop_instance_uid"]] = record["time"]
            elif record.get("event") == "forwarded" and "entry" in record:
                uid = re.sub(r"\.dcm$", "", record["entry"]).rsplit("-", 1)[-1]
                forwarded[uid] = record["time"]
    return [forwarded[u] - stored[u] for u in stored if u in forwarded]


def count_events(audits: list[Path], event: str) -> list[int]:
    return [
        sum(f'"event": "{event}"' in line for line in a.read_text(errors="replace").splitlines()) if a.exists() else 0
        for a in audits
    ]


# --------------------------------------------------------------------------------------------
# one timed run per path


@dataclass(frozen=True)
class Options:
    count: int
    nodes: int = 2
    profile: Path | None = None
    profile_gil: bool = False


def run_spec(spec: Spec, options: Options, parts: list[Path], total_bytes: int, work_root: Path) -> Run:
    work = work_root / str(spec).replace("@", "-x").replace("+", "-")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run = Run(spec, options.count, total_bytes)
    archive_port = free_port()
    # several nodes deliver at once: storescp must take concurrent associations (one child each)
    fork = ("--fork",) if spec.kind == "haproxy" else ()
    with StoreSCP(work / "archive", archive_port, extra_args=fork) as archive:
        if spec.kind == "direct":
            return send_and_wait(run, archive_port, "ARCHIVE", parts, archive.directory, work)
        if spec.kind == "orthanc":
            return _orthanc(run, work, archive_port, parts, archive.directory)
        if spec.kind == "relay":
            relay = Relay(archive_port, work).start()
            try:
                assert relay.process is not None
                return send_and_wait(
                    run, relay.port, "RELAY", parts, archive.directory, work, watch_pids=[relay.process.pid]
                )
            finally:
                relay.stop()
        return _nodes(run, options, work, archive_port, parts, archive.directory)


def _orthanc(run: Run, work: Path, archive_port: int, parts: list[Path], archive: Path) -> Run:
    binary = orthanc_binary()
    if not binary:
        run.note = "skipped: Orthanc not installed (scripts/bench installs Debian package orthanc)"
        return run
    orthanc = Orthanc(work, archive_port)
    try:
        orthanc.start(binary)
        assert orthanc.process is not None
        return send_and_wait(run, orthanc.dicom_port, "ORTHANC", parts, archive, work, watch_pids=[orthanc.process.pid])
    except RuntimeError as exc:
        run.note = f"skipped: {exc}"
        return run
    finally:
        orthanc.stop()


def _nodes(run: Run, options: Options, work: Path, archive_port: int, parts: list[Path], archive: Path) -> Run:
    """One node (proxy) or several behind HAProxy, all with the same secret key."""
    count = options.nodes if run.spec.kind == "haproxy" else 1
    key_file = work / "secret.key"
    proxies: list[Proxy] = []
    audits: list[Path] = []
    sender_args: tuple[str, ...] = ()
    for n in range(count):
        node_work = work / f"node{n + 1}" if count > 1 else work
        node_work.mkdir(exist_ok=True)
        audit = node_work / "audit.jsonl"
        config, sender_args = proxy_config(node_work, archive_port, run.spec.features, key_file, audit)
        problem = unsupported(config)
        if problem:
            run.note = f"skipped: not in this build ({problem})"
            return run
        proxies.append(Proxy(write_config(node_work / "proxy.toml", config), node_work))
        audits.append(audit)
    balancer: HAProxy | None = None
    try:
        for proxy in proxies:
            proxy.start(timeout=60)
        port = proxies[0].port
        if run.spec.kind == "haproxy":
            balancer = HAProxy(work / "haproxy", [p.port for p in proxies]).start()
            port = balancer.port
        pids = [pid for p in proxies if p.process is not None for pid in child_pids(p.process.pid)]
        send_and_wait(
            run,
            port,
            "DEID_PROXY",
            parts,
            archive,
            work,
            watch_pids=pids,
            sender_args=sender_args,
            profile=options.profile if run.spec.kind == "proxy" else None,
            profile_gil=options.profile_gil,
        )
        time.sleep(0.2)  # the audit line follows the archive's file by a few ms
        run.latencies = proxy_latencies(audits)
        refused = sum(count_events(audits, "refused"))
        notes = [f"{refused} refused by the proxy"] if refused else []
        if count > 1:
            notes.append("stored per node: " + "/".join(map(str, count_events(audits, "stored"))))
        run.note = "; ".join(notes)
        return run
    finally:
        if balancer is not None:
            balancer.stop()
        for proxy in proxies:
            if proxy.process is not None and proxy.process.poll() is None:
                proxy.terminate()


def describe(spec: Spec) -> str:
    """Human label of a path for the table."""
    if spec.kind == "direct":
        return "dcmtk direct (the limit)"
    if spec.kind == "orthanc":
        return "Orthanc anonymizing router"
    if spec.kind == "relay":
        return "pynetdicom relay"
    name = "proxy" if spec.kind == "proxy" else "2 nodes + HAProxy"
    features = ", ".join(spec.features) if spec.features else "detection off"
    return f"{name} ({features})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run scripts/bench")
