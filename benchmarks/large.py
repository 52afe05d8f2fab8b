"""One 1 GiB multi-frame object through the proxy: peak RSS against the object's size."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import MiB, make_large
from benchmarks.network import child_pids, proxy_config, tree_hwm_mib
from tests.netpeers import DCMTK_ENV, Proxy, StoreSCP, free_port, storescu_command, write_config


@dataclass(frozen=True)
class LargeResult:
    size_mib: float
    peak_rss_mib: float
    idle_rss_mib: float
    arrived: bool
    seconds: float
    lines: tuple[str, ...]

    @property
    def goal_mib(self) -> float:
        return 2 * self.size_mib + 300


def large_object(work_root: Path, frames: int, size: int, timeout: float) -> LargeResult:
    work = work_root / "large"
    shutil.rmtree(work, ignore_errors=True)
    (work / "input").mkdir(parents=True)
    started = time.monotonic()
    file_size = make_large(work / "input" / "large.dcm", frames, size)
    print(
        f"large: {frames} frames {size}x{size} 16-bit, {file_size / MiB:.0f} MiB file "
        f"({time.monotonic() - started:.1f}s to write)",
        file=sys.stderr,
    )
    audit = work / "audit.jsonl"
    archive_port = free_port()
    config, _ = proxy_config(work, archive_port, (), audit=audit)
    with StoreSCP(work / "archive", archive_port), Proxy(write_config(work / "proxy.toml", config), work) as proxy:
        assert proxy.process is not None
        pids = child_pids(proxy.process.pid)
        idle = tree_hwm_mib(pids[:1])
        t0 = time.monotonic()
        with open(work / "storescu.log", "wb") as log:
            sender = subprocess.Popen(
                storescu_command(
                    proxy.port, [work / "input" / "large.dcm"], calling="BENCH", options=("-v", "-to", "60", "-nh")
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=DCMTK_ENV,
            )
        # the receiving process holds the object; the forwarder process streams it from the spool
        peak, done, note = 0.0, float("nan"), ""
        while time.monotonic() < t0 + timeout:
            peak = max(peak, tree_hwm_mib(pids[:1]))
            text = audit.read_text(errors="replace") if audit.exists() else ""
            if '"event": "forwarded"' in text or '"event": "refused"' in text or '"quarantined"' in text:
                done = time.monotonic() - t0
                break
            if proxy.process.poll() is not None:
                note = f"proxy died (exit {proxy.process.returncode})"
                break
            time.sleep(0.05)
        else:
            note = "timeout"
        peak = max(peak, tree_hwm_mib(pids[:1]))
        sender.wait(120)
        files = [p for p in (work / "archive").iterdir() if p.is_file()]
        arrived = bool(files) and '"event": "forwarded"' in audit.read_text(errors="replace")
        status = re.findall(r"Received Store Response \(([^)]*)\)", (work / "storescu.log").read_text(errors="replace"))
        size_mib = file_size / MiB
        lines = (
            f"large object through the proxy: {size_mib:.0f} MiB ({frames} frames), sender status: {status or 'none'}",
            f"  arrived in archive: {'yes' if arrived else 'NO'}"
            + (f" after {done:.1f}s" if arrived else "")
            + (f"  [{note}]" if note else ""),
            (
                f"  receiving process peak RSS (VmHWM): {peak:.0f} MiB (idle {idle:.0f} MiB) = "
                f"{peak / size_mib:.2f}x object size"
            ),
        )
        return LargeResult(size_mib, peak, idle, arrived, done, lines)
