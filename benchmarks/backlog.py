"""A backlog: N objects acknowledged while the archive is down, then the archive comes up and
the spool drains. Steady means the last tenth arrives about as fast as the first."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import make_corpus
from benchmarks.network import count_files, proxy_config
from tests.netpeers import DCMTK_ENV, Proxy, StoreSCP, free_port, storescu_command, wait_until, write_config


@dataclass(frozen=True)
class BacklogResult:
    queued: int
    arrived: int
    overall_per_s: float
    first_tenth_per_s: float
    last_tenth_per_s: float
    lines: tuple[str, ...]


def _rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else float("nan")


def backlog(work_root: Path, corpus_root: Path, count: int, size: int) -> BacklogResult:
    files = make_corpus(corpus_root, count, size)
    work = work_root / "backlog"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    archive_port = free_port()  # nothing listens here yet: the archive is down
    config, _ = proxy_config(work, archive_port, ())
    archive = StoreSCP(work / "archive", archive_port)
    with Proxy(write_config(work / "proxy.toml", config), work) as proxy:
        try:
            t0 = time.monotonic()
            result = subprocess.run(
                storescu_command(
                    proxy.port, [corpus_root], calling="BENCH", options=("-v", "-to", "60", "+sd", "+r", "-nh")
                ),
                capture_output=True,
                env=DCMTK_ENV,
                timeout=600 + count,
            )
            fill = time.monotonic() - t0
            ok = len(re.findall(rb"Received Store Response \(Success\)", result.stdout + result.stderr))
            print(
                f"backlog: {ok}/{len(files)} objects ({size}x{size}) acknowledged with the archive down in "
                f"{fill:.1f}s ({ok / fill:.0f}/s)",
                file=sys.stderr,
            )
            t_start = time.time()
            archive.start()
            wait_until(lambda: count_files(archive.directory) >= ok, 120 + count * 0.5, 0.05)
            total = time.time() - t_start
        finally:
            archive.stop()
    times = sorted(p.stat().st_mtime for p in archive.directory.iterdir() if p.is_file())
    tenth = max(2, len(times) // 10)
    first, last = _rate(times[:tenth]), _rate(times[-tenth:])
    lines = (
        (
            f"backlog drain: {len(times)}/{ok} queued objects {size}x{size} delivered after the archive came up, "
            f"{total:.1f}s, {len(times) / total:.1f} objects/s overall"
        ),
        (
            f"  first 10%: {first:.1f}/s, last 10%: {last:.1f}/s, first->last arrival: {_rate(times):.1f}/s "
            "(archive file mtimes)"
        ),
    )
    return BacklogResult(ok, len(times), len(times) / total, first, last, lines)
