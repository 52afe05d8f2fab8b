"""py-spy on a running process during a timed run, and a summary of where it spent its time."""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
import time
from pathlib import Path


def start_profiler(pid: int, output: Path, gil: bool = False) -> subprocess.Popen[bytes] | None:
    """py-spy record (raw format) on `pid`; gil: sample only the thread holding the GIL."""
    pyspy = Path(sys.executable).parent / "py-spy"
    if not pyspy.exists():
        print("bench: --profile needs py-spy in the venv (pip install py-spy); not profiling", file=sys.stderr)
        return None
    proc = subprocess.Popen(
        [
            str(pyspy),
            "record",
            "--format",
            "raw",
            "-r",
            "200",
            "-o",
            str(output),
            "--pid",
            str(pid),
            *(["--gil"] if gil else []),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # py-spy attaches before the timed run starts
    return proc


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def summarize_profile(path: Path, gil: bool = False, top: int = 15) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    cumulative: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        # one entry per function (py-spy raw frames carry the line: "func (file.py:123)")
        frames = [
            re.sub(r":\d+\)$", ")", f)
            for f in stack.split(";")
            if not f.startswith(("thread (", "process ", "Thread.run ", "Thread._bootstrap"))
        ]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            cumulative[frame] += count
    kind = "threads holding the GIL (--gil)" if gil else "non-idle threads (short sleeps count)"
    lines = [f"py-spy samples, {kind}: {total}", f"top {top} by own time:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append(f"top {top} by cumulative time:")
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in cumulative.most_common(top)]
    return lines
