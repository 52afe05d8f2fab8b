"""Prometheus metrics (prometheus-client), shared by the receiver and the forwarder process.

Counters and histograms live in prometheus-client's multiprocess mode: each process writes its
own memory-mapped files under ``PROMETHEUS_MULTIPROC_DIR`` and a scrape merges them. The
variable must be set before prometheus-client is first imported (it picks its value class at
import), so ``service.serve`` calls `use_multiprocess_directory` first and imports this module
afterwards. Queue depths are not counted at all: `SpoolCollector` reads them from the spool on
every scrape, so they are right whichever process changed the spool.

Labels hold only destination names, status codes, reason classes, stage names and rule or
detector names: never a value from an object.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from dicom_proxy import __version__, audit
from dicom_proxy.config import Config
from dicom_proxy.deidentify.engine import Stage
from dicom_proxy.spool import Spool, queued_at
from dicom_proxy.status import StoreStatus

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# De-identification stages take milliseconds; big multi-frame objects take seconds.
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# From spooled to delivered: milliseconds when the archive is up, hours when it was down.
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


def use_multiprocess_directory() -> Path:
    """Create a private, empty directory for this run's metric files and point
    prometheus-client at it (before it is imported: see the module docstring).

    A fresh directory per run makes counters start at zero after a restart, as Prometheus
    expects of a restarted process.
    """
    directory = Path(tempfile.mkdtemp(prefix="dicom-proxy-metrics-"))
    os.environ[MULTIPROCESS_ENV] = str(directory)
    # prometheus-client chose its value class when it was imported; choose again now that the
    # variable is set (its own selector), so the import order of modules does not matter.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def remove_multiprocess_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def reason_class(status: int) -> str:
    """The refusal's class for a label: the StoreStatus name (a fixed, small vocabulary)."""
    try:
        return StoreStatus(status).name.lower()
    except ValueError:
        return "other"


class Metrics:
    """Every metric the node exports. `registry=None`: the metrics are not registered in any
    registry (multiprocess mode: a scrape reads the files, see `scrape_registry`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry
        self.received = Counter("dicom_proxy_objects_received", "C-STORE data sets received", registry=r)
        self.received_bytes = Counter("dicom_proxy_received_bytes", "Bytes of C-STORE data sets received", registry=r)
        self.refused = Counter(
            "dicom_proxy_objects_refused",
            "Objects refused with a failure status, by status code and reason class",
            ["status", "reason_class"],
            registry=r,
        )
        self.spooled = Counter("dicom_proxy_objects_spooled", "De-identified objects durably spooled", registry=r)
        self.spooled_bytes = Counter("dicom_proxy_spooled_bytes", "Bytes of de-identified objects spooled", registry=r)
        self.forwarded = Counter(
            "dicom_proxy_objects_forwarded", "Objects a destination confirmed", ["destination"], registry=r
        )
        self.quarantined = Counter(
            "dicom_proxy_objects_quarantined", "Objects a destination refused permanently", ["destination"], registry=r
        )
        self.delivery_retries = Counter(
            "dicom_proxy_delivery_retries", "Transient delivery failures (retried later)", ["destination"], registry=r
        )
        self.associations = Counter(
            "dicom_proxy_associations",
            "Inbound associations, accepted or rejected, by cause",
            ["result", "cause"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "dicom_proxy_deidentify_stage_seconds",
            "Time spent per de-identification stage",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.pixel_masks = Counter(
            "dicom_proxy_pixel_masks",
            "Objects whose pixels were masked, by mask source (rule or detector name)",
            ["source"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "dicom_proxy_delivery_latency_seconds",
            "Time from spooling to the destination's confirmation",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Set by the forwarder process; the most recent write wins across processes.
        self.destination_up = Gauge(
            "dicom_proxy_destination_up",
            "1 when the last delivery attempt reached the destination, 0 while it fails",
            ["destination"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.destination_failures = Gauge(
            "dicom_proxy_destination_consecutive_failures",
            "Transient delivery failures since the last success",
            ["destination"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.destination_changed = Gauge(
            "dicom_proxy_destination_state_since_seconds",
            "When the destination entered its current state (up or down), seconds since the epoch",
            ["destination"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self._failures: dict[str, int] = {}

    def declare_destinations(self, names: Iterable[str]) -> None:
        """Start each destination's counters at 0, so rates exist before the first delivery."""
        for name in names:
            for counter in (self.forwarded, self.quarantined, self.delivery_retries):
                counter.labels(name)

    # -- engine observer (dicom_proxy.deidentify.engine.EngineObserver) -------------------
    def stage_finished(self, stage: Stage, seconds: float) -> None:
        self.stage_seconds.labels(stage.value).observe(seconds)

    def pixels_masked(self, sources: tuple[str, ...]) -> None:
        for source in dict.fromkeys(sources):
            self.pixel_masks.labels(source).inc()

    # -- destination state (forwarder process) ----------------------------------------------
    def delivery_succeeded(self, destination: str, entry_name: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.forwarded.labels(destination).inc()
        spooled = queued_at(entry_name)
        if spooled is not None:
            self.delivery_latency.labels(destination).observe(max(0.0, now - spooled))
        self._reached(destination, now)

    def delivery_refused(self, destination: str, now: float | None = None) -> None:
        """A permanent refusal still means the destination answered."""
        self.quarantined.labels(destination).inc()
        self._reached(destination, time.time() if now is None else now)

    def delivery_failed(self, destination: str, now: float | None = None) -> None:
        failures = self._failures.get(destination, 0) + 1
        self._failures[destination] = failures
        self.delivery_retries.labels(destination).inc()
        if failures == 1:
            self.destination_changed.labels(destination).set(time.time() if now is None else now)
        self.destination_up.labels(destination).set(0)
        self.destination_failures.labels(destination).set(failures)

    def _reached(self, destination: str, now: float) -> None:
        if self._failures.get(destination, 0) or destination not in self._failures:
            self.destination_changed.labels(destination).set(now)
        self._failures[destination] = 0
        self.destination_up.labels(destination).set(1)
        self.destination_failures.labels(destination).set(0)


class SpoolCollector:
    """Queue depth, bytes, oldest-entry age and quarantine size per destination, read from the
    spool directory on every scrape (a custom collector: no process keeps these counts)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "dicom_proxy_spool_queue_depth", "Objects waiting for delivery", labels=["destination"]
        )
        size = GaugeMetricFamily("dicom_proxy_spool_queue_bytes", "Bytes waiting for delivery", labels=["destination"])
        age = GaugeMetricFamily(
            "dicom_proxy_spool_oldest_entry_age_seconds",
            "Age of the oldest waiting object (0 when the queue is empty)",
            labels=["destination"],
        )
        quarantine = GaugeMetricFamily(
            "dicom_proxy_quarantine_depth", "Objects held in quarantine", labels=["destination"]
        )
        now = time.time()
        for status in queue_snapshots(self.spool, now):
            depth.add_metric([status.destination], status.queued)
            size.add_metric([status.destination], status.queued_bytes)
            age.add_metric([status.destination], status.oldest_age)
            quarantine.add_metric([status.destination], status.quarantined)
        yield from (depth, size, age, quarantine)


@dataclass(frozen=True)
class QueueSnapshot:
    """One destination's queue as read from disk."""

    destination: str
    queued: int
    queued_bytes: int
    oldest_age: float
    quarantined: int


def queue_snapshots(spool: Spool, now: float) -> Iterable[QueueSnapshot]:
    for destination in spool.destinations:
        pending = spool.pending(destination) if spool.queue_dir(destination).is_dir() else []
        oldest = queued_at(pending[0].path.name) if pending else None
        yield QueueSnapshot(
            destination,
            len(pending),
            sum(e.size for e in pending),
            max(0.0, now - oldest) if oldest is not None else 0.0,
            len(spool.quarantined(destination)),
        )


class NodeInfoCollector:
    """Static facts of this node: version, AE title, start time, key fingerprint."""

    def __init__(self, config: Config, key_fingerprint: str, started: float) -> None:
        self.config = config
        self.key_fingerprint = key_fingerprint
        self.started = started

    def collect(self) -> Iterator[Metric]:
        node = InfoMetricFamily("dicom_proxy_node", "This node")
        node.add_metric(
            [],
            {
                "version": __version__,
                "ae_title": self.config.node.ae_title,
                "hostname": socket.gethostname(),
            },
        )
        key = InfoMetricFamily("dicom_proxy_key", "Fingerprint of the pseudonymisation key (not the key)")
        key.add_metric([], {"fingerprint": self.key_fingerprint})
        start = GaugeMetricFamily("dicom_proxy_start_time_seconds", "When the node started, seconds since the epoch")
        start.add_metric([], self.started)
        yield from (node, key, start)


def scrape_registry(directory: Path | None, spool: Spool, info: NodeInfoCollector) -> CollectorRegistry:
    """The registry a scrape reads: both processes' files (multiprocess mode), the spool, the node."""
    registry = CollectorRegistry()
    if directory is not None:
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    registry.register(SpoolCollector(spool))
    registry.register(info)
    return registry


# PS3.8 9.3.4 A-ASSOCIATE-RJ (source, diagnostic) -> a short label value.
_REJECT_CAUSES = {
    (1, 3): "calling_ae_title_not_recognized",
    (1, 7): "called_ae_title_not_recognized",
    (1, 2): "application_context_not_supported",
    (2, 2): "protocol_version_not_supported",
    (3, 1): "temporary_congestion",
    (3, 2): "local_limit_exceeded",
}


def reject_cause(source: int, diagnostic: int) -> str:
    return _REJECT_CAUSES.get((source, diagnostic), "other")


class MetricsSink:
    """The audit sink (`dicom_proxy.audit.Sink`) that counts events: registered before the
    forwarder process is forked, so both processes count into their own metric files."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def emit(self, event: audit.AuditEvent) -> None:
        m = self.metrics
        if isinstance(event, audit.ObjectStored):
            m.received.inc()
            m.received_bytes.inc(event.received_bytes)
            m.spooled.inc()
            m.spooled_bytes.inc(event.bytes)
        elif isinstance(event, audit.ObjectRefused):
            m.received.inc()
            m.received_bytes.inc(event.received_bytes)
            m.refused.labels(f"0x{event.status:04X}", reason_class(event.status)).inc()
        elif isinstance(event, audit.ObjectForwarded):
            m.delivery_succeeded(event.destination, event.entry, event.time)
        elif isinstance(event, audit.ObjectQuarantined):
            m.delivery_refused(event.destination, event.time)
        elif isinstance(event, audit.DeliveryDeferred):
            m.delivery_failed(event.destination, event.time)
        elif isinstance(event, audit.AssociationAccepted):
            m.associations.labels("accepted", "").inc()
        elif isinstance(event, audit.AssociationRejected):
            m.associations.labels("rejected", reject_cause(event.source, event.diagnostic)).inc()
