"""Durable queue of de-identified objects, one queue per destination (promise 2).

Layout under `[spool].directory` (directories 0700, files 0600):

    incoming/                 temporary files being written; anything here after a crash is
                              incomplete and is removed on start
    queues/<destination>/     entries waiting for delivery, named
                              `<time>-<pid>-<sequence>-<StudyInstanceUID>-<SOPInstanceUID>.dcm`
    quarantine/<destination>/ entries a destination refused permanently, each with a
                              `.reason.json` beside it

An object is written once to `incoming/`, fsync'ed, hard-linked into every destination's queue,
the queue directories are fsync'ed, and only then is the sender answered Success. A queue entry is
deleted only after its destination confirmed it. Spool and quarantine hold de-identified objects
only, and every name is built from pseudonymous UIDs.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dicom_proxy.config import SpoolConfig
from dicom_proxy.durable import fsync_dir as _fsync_dir
from dicom_proxy.models import DeidentifiedObject, SpoolEntry

_DIR_MODE = 0o700
_FILE_MODE = 0o600
SUFFIX = ".dcm"
REASON_SUFFIX = ".reason.json"


# How often the queued byte total is re-read from disk: another process (the forwarder)
# deletes entries, so a count kept in memory here would only ever grow.
_USAGE_REFRESH_SECONDS = 0.5


class SpoolFull(Exception):
    """The spool's byte limit or the disk's free-space floor would be exceeded."""


@dataclass(frozen=True)
class QueueStatus:
    destination: str
    queued: int
    queued_bytes: int
    quarantined: int


def entry_uids(name: str) -> tuple[str, str]:
    """(Study Instance UID, SOP Instance UID) of a spool entry, from its name (pseudonyms);
    entries spooled before names carried the study give an empty study."""
    parts = name.removesuffix(SUFFIX).split("-")
    if len(parts) >= 5:
        return parts[-2], parts[-1]
    return "", parts[-1] if len(parts) == 4 else ""


def queued_at(entry_name: str) -> float | None:
    """When an entry was spooled (seconds since the epoch), read from its name (see store())."""
    stamp = entry_name[:20]
    return int(stamp) / 1e9 if stamp.isdigit() else None


def _make_dir(path: Path) -> None:
    path.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, _DIR_MODE)


def make_spool_dir(root: Path, path: Path) -> None:
    """mkdir -p of `path` inside the spool `root`: every level from `root` down is 0700, whatever
    the umask (mkdir's `parents` would create the levels between with the umask's mode)."""
    _make_dir(root)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        current.mkdir(mode=_DIR_MODE, exist_ok=True)
        os.chmod(current, _DIR_MODE)


class Spool:
    """The on-disk queues. Thread-safe; one instance per process that writes."""

    def __init__(
        self,
        config: SpoolConfig,
        destinations: list[str] | tuple[str, ...],
        on_store: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.root = config.directory
        self.destinations = tuple(destinations)
        self.incoming = self.root / "incoming"
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._sequence = itertools.count()
        self._bytes = 0
        self._bytes_read_at = 0.0
        # Called after every store, e.g. to wake a forwarder in another process.
        self._on_store = on_store

    # -- paths ---------------------------------------------------------------------------
    def queue_dir(self, destination: str) -> Path:
        return self.root / "queues" / destination

    def quarantine_dir(self, destination: str) -> Path:
        return self.root / "quarantine" / destination

    # -- start ---------------------------------------------------------------------------
    def open(self) -> int:
        """Create directories, remove partial files left by a crash, count what is queued.

        Returns the number of entries found waiting (they will be delivered).
        """
        make_spool_dir(self.root, self.incoming)
        for leftover in self.incoming.iterdir():
            leftover.unlink(missing_ok=True)
        queued = 0
        total = 0
        for destination in self.destinations:
            make_spool_dir(self.root, self.queue_dir(destination))
            make_spool_dir(self.root, self.quarantine_dir(destination))
            for entry in self.pending(destination):
                queued += 1
                total += entry.size
        with self._lock:
            self._bytes = total
            self._bytes_read_at = time.monotonic()
        return queued

    def _queued_bytes(self, fresh: bool = False) -> int:
        """Bytes waiting in all queues (each destination's entry counted), at most
        _USAGE_REFRESH_SECONDS old plus what this process stored since (`fresh`: read now)."""
        with self._lock:
            if not fresh and time.monotonic() - self._bytes_read_at < _USAGE_REFRESH_SECONDS:
                return self._bytes
        total = sum(e.size for d in self.destinations for e in self.pending(d))
        with self._lock:
            self._bytes = total
            self._bytes_read_at = time.monotonic()
        return total

    # -- write ---------------------------------------------------------------------------
    def check_capacity(self, incoming_bytes: int = 0) -> None:
        """Raise SpoolFull when accepting `incoming_bytes` more would break a limit."""
        needed = incoming_bytes * max(1, len(self.destinations))
        # Before refusing, look again: the forwarder may have drained since the cached count.
        if self._queued_bytes() + needed > self.config.max_bytes and (
            self._queued_bytes(fresh=True) + needed > self.config.max_bytes
        ):
            raise SpoolFull("spool byte limit reached")
        if shutil.disk_usage(self.root).free - incoming_bytes < self.config.min_free_bytes:
            raise SpoolFull("free disk space below spool.min_free_bytes")

    def store(self, obj: DeidentifiedObject, destinations: Sequence[str] | None = None) -> list[SpoolEntry]:
        """Durably enqueue `obj` for `destinations` (default: every destination of the spool);
        return when it is safe to say Success."""
        targets = self.destinations if destinations is None else [d for d in self.destinations if d in destinations]
        if destinations is not None and len(targets) != len(set(destinations)):
            raise ValueError("store: unknown destination")
        size = obj.size
        self.check_capacity(size)
        # Time first (FIFO order), then process and sequence: unique across receiver processes.
        name = (
            f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence) % 1_000_000:06d}"
            f"-{obj.study_instance_uid}-{obj.sop_instance_uid}{SUFFIX}"
        )
        temporary = self.incoming / (name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        try:
            _write_all(fd, obj.parts)
            os.fsync(fd)
        finally:
            os.close(fd)
        entries = []
        try:
            for destination in targets:
                target = self.queue_dir(destination) / name
                os.link(temporary, target)
                entries.append(SpoolEntry(destination, target, size))
            for destination in targets:
                _fsync_dir(self.queue_dir(destination))
        except BaseException:
            for entry in entries:
                entry.path.unlink(missing_ok=True)
            raise
        finally:
            temporary.unlink(missing_ok=True)
        with self._changed:
            self._bytes += size * len(entries)
            self._changed.notify_all()
        if self._on_store is not None:
            self._on_store()
        return entries

    # -- read / complete -------------------------------------------------------------------
    def pending(self, destination: str) -> list[SpoolEntry]:
        """The destination's queue, oldest first."""
        entries = []
        with os.scandir(self.queue_dir(destination)) as it:
            for item in it:
                if item.name.endswith(SUFFIX):
                    try:
                        size = item.stat().st_size
                    except FileNotFoundError:
                        continue
                    entries.append(SpoolEntry(destination, Path(item.path), size))
        entries.sort(key=lambda e: e.path.name)
        return entries

    def complete(self, entry: SpoolEntry) -> None:
        """The destination confirmed the object: drop the entry."""
        entry.path.unlink(missing_ok=True)
        with self._lock:
            self._bytes = max(0, self._bytes - entry.size)

    def quarantine(self, entry: SpoolEntry, reason: dict[str, object]) -> Path:
        """Move a permanently refused entry aside with a PHI-free reason file."""
        folder = self.quarantine_dir(entry.destination)
        make_spool_dir(self.root, folder)
        target = folder / entry.path.name
        reason_path = folder / (entry.path.name + REASON_SUFFIX)
        _write_small_file(reason_path, json.dumps({**reason, "time": time.time()}, indent=1) + "\n")
        try:
            os.replace(entry.path, target)
        except FileNotFoundError:
            reason_path.unlink(missing_ok=True)  # already delivered or moved by someone else
            return target
        _fsync_dir(folder)
        _fsync_dir(entry.path.parent)
        with self._lock:
            self._bytes = max(0, self._bytes - entry.size)
        return target

    def retry_quarantined(self, destination: str) -> int:
        """Move every quarantined entry of `destination` back into its queue."""
        folder = self.quarantine_dir(destination)
        moved = 0
        for path in sorted(folder.glob(f"*{SUFFIX}")):
            os.replace(path, self.queue_dir(destination) / path.name)
            Path(str(path) + REASON_SUFFIX).unlink(missing_ok=True)
            moved += 1
        _fsync_dir(self.queue_dir(destination))
        return moved

    def purge_quarantined(self, destination: str) -> int:
        folder = self.quarantine_dir(destination)
        removed = 0
        for path in folder.glob(f"*{SUFFIX}"):
            path.unlink(missing_ok=True)
            Path(str(path) + REASON_SUFFIX).unlink(missing_ok=True)
            removed += 1
        return removed

    def quarantined(self, destination: str) -> list[Path]:
        folder = self.quarantine_dir(destination)
        if not folder.is_dir():
            return []
        return sorted(folder.glob(f"*{SUFFIX}"))

    def status(self) -> list[QueueStatus]:
        result = []
        for destination in self.destinations:
            pending = self.pending(destination) if self.queue_dir(destination).is_dir() else []
            result.append(
                QueueStatus(
                    destination,
                    len(pending),
                    sum(e.size for e in pending),
                    len(self.quarantined(destination)),
                )
            )
        return result

    # -- waiting ---------------------------------------------------------------------------
    def wait_for_work(self, timeout: float) -> None:
        """Block until something is stored or `timeout` passes."""
        with self._changed:
            self._changed.wait(timeout)

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    @property
    def held_bytes(self) -> int:
        return self._queued_bytes()


def _write_all(fd: int, parts: tuple[bytes | memoryview, ...]) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _write_small_file(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE_MODE)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
