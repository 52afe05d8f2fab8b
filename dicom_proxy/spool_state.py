"""What each destination's worker last saw, shared through the spool directory (issue 15, item 5).

The forwarder runs in its own process; `dicom-proxy spool status` (and the metrics and status
page) run in others. So each worker writes a small state file, `state/<destination>.json`
(0600, written to a temporary file and renamed: a reader never sees half a file), and anyone
reads it. It holds no object identity at all: a state, times, counts and the last PHI-free
error reason. Advisory: not fsync'ed, and written at most once a second while nothing changes.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dicom_proxy.spool import Spool, make_spool_dir

STATE_FOLDER = "state"
_FILE_MODE = 0o600
# While the state stays the same, rewrite at most this often (last_delivered moves on).
_REWRITE_SECONDS = 1.0


class Delivery(enum.StrEnum):
    IDLE = "idle"  # nothing queued
    DELIVERING = "delivering"  # the last attempt went through (or was refused for good)
    BACKING_OFF = "backing off"  # the last attempt failed transiently; retry at `retry_at`
    NOT_RUNNING = "not running"  # no worker: the node is stopped (readers only)


@dataclass(frozen=True)
class DestinationState:
    """One destination as its worker last saw it. Times are Unix seconds."""

    destination: str
    state: Delivery = Delivery.NOT_RUNNING
    updated: float | None = None
    pid: int = 0
    # First failed attempt of the current run of failures: when the destination went down.
    down_since: float | None = None
    failures: int = 0
    retry_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    last_delivered_at: float | None = None

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def state_path(spool_root: Path, destination: str) -> Path:
    return spool_root / STATE_FOLDER / f"{destination}.json"


def read_state(spool_root: Path, destination: str) -> DestinationState:
    """The last state written for `destination`; NOT_RUNNING when no worker is alive."""
    try:
        raw = json.loads(state_path(spool_root, destination).read_text(encoding="utf-8"))
        fields = {f.name for f in dataclasses.fields(DestinationState)}
        state = DestinationState(**{k: v for k, v in raw.items() if k in fields})
        state = dataclasses.replace(state, destination=destination, state=Delivery(state.state))
    except (OSError, ValueError, TypeError):
        return DestinationState(destination)
    if not _alive(state.pid):
        return dataclasses.replace(state, state=Delivery.NOT_RUNNING, retry_at=None)
    return state


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


class DestinationHealth:
    """The worker's side: one call per outcome; the file follows."""

    def __init__(self, spool_root: Path, destination: str) -> None:
        self._root = spool_root
        self._path = state_path(spool_root, destination)
        self._state = DestinationState(destination, Delivery.IDLE, pid=os.getpid())
        self._written_at = 0.0
        self._written: DestinationState | None = None

    @property
    def state(self) -> DestinationState:
        return self._state

    @property
    def delivering(self) -> bool:
        return self._state.state is Delivery.DELIVERING

    def delivered(self) -> None:
        """The destination answered (Success, or a permanent refusal that was quarantined)."""
        self._update(Delivery.DELIVERING, down_since=None, failures=0, retry_at=None, last_delivered_at=time.time())

    def refused(self, reason: str) -> None:
        """A permanent refusal: the destination is up, the object went to quarantine."""
        now = time.time()
        self._update(Delivery.DELIVERING, down_since=None, failures=0, retry_at=None, last_error=reason,
                     last_error_at=now)

    def deferred(self, reason: str, retry_in: float) -> None:
        """A transient failure: back off, retry in `retry_in` seconds."""
        now = time.time()
        self._update(
            Delivery.BACKING_OFF,
            down_since=self._state.down_since or now,
            failures=self._state.failures + 1,
            retry_at=now + retry_in,
            last_error=reason,
            last_error_at=now,
        )

    def idle(self) -> None:
        """Nothing queued. A destination that was down stays 'backing off' until it answers."""
        if self._state.state is Delivery.DELIVERING:
            self._update(Delivery.IDLE)
        elif self._written is None:
            self._write()

    def _update(self, state: Delivery, **changes: object) -> None:
        self._state = dataclasses.replace(self._state, state=state, **changes)  # type: ignore[arg-type]
        previous = self._written
        if (
            previous is None
            or previous.state is not state
            or previous.failures != self._state.failures
            or time.monotonic() - self._written_at >= _REWRITE_SECONDS
        ):
            self._write()

    def _write(self) -> None:
        state = dataclasses.replace(self._state, updated=time.time())
        try:
            make_spool_dir(self._root, self._path.parent)
            temporary = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
            try:
                os.write(fd, (json.dumps(state.to_json()) + "\n").encode("utf-8"))
            finally:
                os.close(fd)
            os.replace(temporary, self._path)
        except OSError:
            return  # advisory only: delivery never waits on, or fails because of, this file
        self._written = state
        self._written_at = time.monotonic()


@dataclass(frozen=True)
class QueueReport:
    """`spool status` for one destination: the queue on disk plus the worker's state."""

    destination: str
    state: DestinationState
    queued: int
    queued_bytes: int
    oldest_age_seconds: float | None
    quarantined: int

    def to_json(self) -> dict[str, object]:
        return {
            "destination": self.destination,
            "state": str(self.state.state),
            "queued": self.queued,
            "queued_bytes": self.queued_bytes,
            "oldest_age_seconds": self.oldest_age_seconds,
            "quarantined": self.quarantined,
            **{k: v for k, v in self.state.to_json().items() if k not in ("destination", "state", "pid")},
        }


def entry_time(path: Path) -> float:
    """When an entry was spooled: its name starts with time.time_ns() (mtime as a fallback)."""
    head = path.name.split("-", 1)[0]
    if head.isdigit() and len(head) >= 19:
        return int(head) / 1e9
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def report(spool: Spool, now: float | None = None) -> list[QueueReport]:
    """One QueueReport per destination of `spool`."""
    now = time.time() if now is None else now
    reports = []
    for destination in spool.destinations:
        queue = spool.queue_dir(destination)
        pending = spool.pending(destination) if queue.is_dir() else []
        oldest = round(now - entry_time(pending[0].path), 1) if pending else None
        reports.append(
            QueueReport(
                destination=destination,
                state=read_state(spool.root, destination),
                queued=len(pending),
                queued_bytes=sum(e.size for e in pending),
                oldest_age_seconds=oldest,
                quarantined=len(spool.quarantined(destination)),
            )
        )
    return reports

