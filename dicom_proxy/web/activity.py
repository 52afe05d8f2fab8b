"""Recent activity in the receiver process, for the status page: the last refusals and the
number of objects received per time bucket (the throughput sparkline)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from dicom_proxy import audit


@dataclass(frozen=True)
class RecentRefusal:
    """One refused object: PHI-free reason and status, pseudonymous UID when one is known."""

    time: float
    status: int
    reason: str
    sop_instance_uid: str | None = None


class RecentActivity:
    """Thread-safe: associations run in their own threads."""

    def __init__(self, bucket_seconds: float = 10.0, buckets: int = 60, refusals: int = 20) -> None:
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self._lock = threading.Lock()
        self._refusals: deque[RecentRefusal] = deque(maxlen=refusals)
        self._counts: dict[int, int] = {}

    def _bucket(self, now: float) -> int:
        return int(now // self.bucket_seconds)

    def received(self, now: float | None = None) -> None:
        bucket = self._bucket(time.time() if now is None else now)
        with self._lock:
            self._counts[bucket] = self._counts.get(bucket, 0) + 1
            for old in [b for b in self._counts if b <= bucket - self.buckets]:
                del self._counts[old]

    def refused(self, refusal: RecentRefusal) -> None:
        with self._lock:
            self._refusals.appendleft(refusal)

    def last_refusals(self) -> tuple[RecentRefusal, ...]:
        """Newest first."""
        with self._lock:
            return tuple(self._refusals)

    def throughput(self, now: float | None = None) -> tuple[int, ...]:
        """Objects received per bucket, oldest first, ending with the current bucket."""
        current = self._bucket(time.time() if now is None else now)
        with self._lock:
            return tuple(self._counts.get(b, 0) for b in range(current - self.buckets + 1, current + 1))

    def emit(self, event: audit.AuditEvent) -> None:
        """The audit sink (`dicom_proxy.audit.Sink`) feeding the page (receiver process)."""
        if isinstance(event, audit.ObjectStored):
            self.received(event.time)
        elif isinstance(event, audit.ObjectRefused):
            self.received(event.time)
            self.refused(RecentRefusal(event.time, event.status, event.reason, event.sop_instance_uid or None))
