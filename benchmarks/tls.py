"""DICOM TLS on both sides vs clear text, same objects, same machine, side by side.

storescu (+tls, client certificate) -> node ([node.tls], mutual TLS) -> ([destinations.tls],
client certificate) -> storescp (+tls, requires it); then the same chain in clear text. One
sender, one association each way; timed from the sender's start until the archive folder holds
every object. Certificates: a throwaway ECDSA P-256 CA (tests/certs.py).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.certs import Authority
from tests.netpeers import (
    DCMTK_ENV,
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    free_port,
    storescu_command,
    wait_until,
    write_config,
)


@dataclass(frozen=True)
class TLSResult:
    count: int
    clear_per_s: float
    tls_per_s: float

    @property
    def ratio(self) -> float:
        return self.tls_per_s / self.clear_per_s if self.clear_per_s else float("nan")


def tls_both_sides(work_root: Path, files: list[Path], timeout: float = 600) -> TLSResult:
    """Objects/s through the node with TLS on both sides and in clear text."""
    pki = work_root / "tls-pki"
    ca = Authority.create(pki, "bench-ca")
    node, archive_pair = ca.issue(pki, "node"), ca.issue(pki, "archive")
    sender, proxy_client = ca.issue(pki, "sender", server=False), ca.issue(pki, "proxy-client", server=False)
    rates = {}
    for mode in ("clear", "tls"):
        work = work_root / f"tls-{mode}"
        work.mkdir(parents=True)
        archive_port = free_port()
        tls = mode == "tls"
        destination = dicom_destination("archive", archive_port)
        node_section: dict[str, object] = {}
        archive_args: tuple[str, ...] = ()
        sender_args: tuple[str, ...] = ()
        if tls:
            destination["tls"] = {
                "ca_bundle": str(ca.path),
                "certificate": str(proxy_client.certificate),
                "private_key": str(proxy_client.private_key),
            }
            node_section["tls"] = {
                "certificate": str(node.certificate),
                "private_key": str(node.private_key),
                "ca_bundle": str(ca.path),
            }
            archive_args = ("+tls", str(archive_pair.private_key), str(archive_pair.certificate), "+cf", str(ca.path))
            sender_args = ("+tls", str(sender.private_key), str(sender.certificate), "+cf", str(ca.path))
        config = base_config(work, [destination], node=node_section)
        archive = StoreSCP(work / "archive", archive_port, extra_args=archive_args)
        with archive, Proxy(write_config(work / "proxy.toml", config), work) as proxy:
            t0 = time.monotonic()
            subprocess.run(
                storescu_command(proxy.port, files, calling="BENCH", options=("-to", "60", "-nh", *sender_args)),
                capture_output=True, env=DCMTK_ENV, timeout=timeout, check=False,
            )  # fmt: skip
            arrived = wait_until(lambda scp=archive: len(scp.files()) >= len(files), timeout, interval=0.02)
            seconds = time.monotonic() - t0
        rates[mode] = len(files) / seconds if arrived else 0.0
    return TLSResult(len(files), rates["clear"], rates["tls"])
