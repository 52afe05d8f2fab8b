"""One worker thread per destination, all in the forwarder process.

The worker acts on each sender `Outcome`: DELIVERED deletes the spool entry, REFUSED and
CANNOT_CONVERT move it to quarantine with a PHI-free reason, TRANSIENT keeps it and backs off.

An exception escaping a sender is not an outcome: it is a bug or an I/O fault on our side, so
the object's fate is unknown. It is never quarantined (that would hide the bug behind a
plausible reason): the worker logs it at ERROR with its type and code location (no message:
messages may quote values), keeps the entry, backs off and tries again, so the queue stays
visibly stuck until someone looks.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import traceback
from pathlib import Path

from dicom_proxy import audit, tls
from dicom_proxy.config import (
    Config,
    ConfigError,
    DestinationConfig,
    DicomDestination,
    FolderDestination,
    NodeConfig,
    load_config,
)
from dicom_proxy.forward.backoff import Backoff
from dicom_proxy.forward.dicom import DicomSender
from dicom_proxy.forward.folder import FolderSender
from dicom_proxy.forward.outcome import Delivery, Outcome, Sender
from dicom_proxy.models import SpoolEntry
from dicom_proxy.spool import Spool, entry_uids
from dicom_proxy.spool_state import DestinationHealth
from dicom_proxy.tls import ClientTLS

log = logging.getLogger(__name__)

# Release an idle association after this long so destinations are not held needlessly.
IDLE_RELEASE_SECONDS = 5.0
# The queue must stay empty this long before `spool status` says idle: between the objects of a
# busy sender it empties after every one, and each flip rewrote the state file twice (a sixth of
# the forwarder's time with four senders, py-spy).
IDLE_REPORT_SECONDS = 0.5
# Entries announced to the sender at a time: each needs at most 3 presentation contexts, and an
# association request holds at most 128 (PS3.8 9.3.2.2).
LOOKAHEAD = 32


def make_sender(destination: DestinationConfig, node: NodeConfig, client_tls: ClientTLS | None = None) -> Sender:
    if isinstance(destination, FolderDestination):
        return FolderSender(destination)
    return DicomSender(destination, node, client_tls)


def where(exc: BaseException) -> str:
    """`file.py:line in function` of the innermost frame: locates a bug without its message."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown location"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


class Forwarder(threading.Thread):
    """Drains one destination's queue, oldest first, until stopped."""

    def __init__(
        self, destination: DestinationConfig, node: NodeConfig, spool: Spool, client_tls: ClientTLS | None = None
    ) -> None:
        super().__init__(name=f"forward-{destination.name}", daemon=True)
        self.destination = destination
        self.spool = spool
        self.sender = make_sender(destination, node, client_tls)
        self.backoff = Backoff(destination.retry_initial_delay, destination.retry_max_delay)
        # What `spool status` shows: written to the spool by this worker (spool_state.py).
        self.health = DestinationHealth(spool.root, destination.name)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.spool.wake()

    def use_tls(self, client_tls: ClientTLS | None) -> None:
        """New certificates for the next association (the open one keeps its session)."""
        if isinstance(self.sender, DicomSender):
            self.sender.tls = client_tls

    def run(self) -> None:
        idle_since: float | None = None
        try:
            while not self._stop_event.is_set():
                try:
                    entries = self.spool.pending(self.destination.name)
                    if not entries:
                        idle_since = self._idle(idle_since)
                        continue
                    idle_since = None
                    self._drain(entries)
                except Exception as exc:
                    # Listing the queue failed (the spool's disk): a worker that dies leaves its
                    # queue undrained while everything looks healthy, so log, back off, go on.
                    self._retry_later(f"unexpected {type(exc).__name__} at {where(exc)}")
        finally:
            self.sender.close()

    def _idle(self, idle_since: float | None) -> float:
        now = time.monotonic()
        if idle_since is None:
            idle_since = now
        elif now - idle_since > IDLE_RELEASE_SECONDS:
            self.sender.close()
        if now - idle_since >= IDLE_REPORT_SECONDS or not self.health.delivering:
            self.health.idle()
        self.spool.wait_for_work(IDLE_REPORT_SECONDS)
        return idle_since

    def _drain(self, entries: list[SpoolEntry]) -> None:
        for index, entry in enumerate(entries):
            if self._stop_event.is_set():
                return
            if not entry.path.exists():
                continue  # `spool purge` or a second worker took it
            try:
                if index % LOOKAHEAD == 0:
                    self.sender.expect(entries[index : index + LOOKAHEAD])
                outcome = self.sender.send(entry)
            except Exception as exc:
                self.sender.close()
                self._retry_later(
                    f"unexpected {type(exc).__name__} at {where(exc)} while sending {entry.path.name}; "
                    "the entry stays queued (a bug or an I/O fault, not a verdict on the object)"
                )
                return
            if not self._act(entry, outcome):
                return

    def _act(self, entry: SpoolEntry, outcome: Outcome) -> bool:
        """Apply `outcome` to `entry`; False when the queue should pause (back off)."""
        name = self.destination.name
        study, sop = entry_uids(entry.path.name)
        if outcome.delivery is Delivery.DELIVERED:
            self.spool.complete(entry)
            self.backoff.reset()
            self.health.delivered()
            audit.emit(
                audit.ObjectForwarded(
                    destination=name,
                    entry=entry.path.name,
                    sop_instance_uid=sop,
                    study_instance_uid=study,
                    status=outcome.status or 0,
                    transfer_syntax_uid=outcome.transfer_syntax_uid,
                )
            )
            return True
        if outcome.permanent:
            self.spool.quarantine(
                entry,
                {
                    "destination": name,
                    "outcome": outcome.delivery.value,
                    "reason": outcome.reason,
                    "status": outcome.status,
                },
            )
            self.health.refused(outcome.reason)
            audit.emit(
                audit.ObjectQuarantined(
                    destination=name,
                    entry=entry.path.name,
                    reason=outcome.reason,
                    outcome=outcome.delivery.value,
                    status=outcome.status,
                    sop_instance_uid=sop,
                    study_instance_uid=study,
                )
            )
            return True
        delay = self.backoff.next_delay()
        self.health.deferred(outcome.reason, delay)
        audit.emit(
            audit.DeliveryDeferred(
                destination=name,
                reason=outcome.reason,
                retry_in=round(delay, 1),
                entry=entry.path.name,
                sop_instance_uid=sop,
                study_instance_uid=study,
            )
        )
        self._stop_event.wait(delay)
        return False

    def _retry_later(self, reason: str) -> None:
        """Not an outcome (a bug or an I/O fault on our side): logged at ERROR, never audited
        as a verdict on any object."""
        delay = self.backoff.next_delay()
        self.health.deferred(reason.split(";")[0], delay)
        log.error("destination %s: %s; retrying in %.1fs", self.destination.name, reason, delay)
        self._stop_event.wait(delay)


def _reload_certificates(config: Config, forwarders: list[Forwarder]) -> None:
    """Rebuild every destination context from the configuration file; keep the old ones on any
    problem (the receiver has validated the file already, so this is rare)."""
    try:
        fresh = load_config(config.source) if config.source is not None else config
        contexts = tls.build(fresh)
    except (ConfigError, tls.TLSConfigError) as exc:
        log.error("forwarder: certificate reload rejected, keeping the current ones: %s", "; ".join(exc.problems))
        return
    for forwarder in forwarders:
        forwarder.use_tls(contexts.destinations.get(forwarder.destination.name))
    log.info("forwarder: destination certificates reloaded")


class WorkSignal:
    """Wakes the forwarder process when the receiver stored something (a pipe across fork)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)

    def notify(self) -> None:
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the forwarder has plenty of wake-ups pending already

    def relay(self, spool: Spool, stopped: threading.Event) -> None:
        """In the forwarder process: turn pipe bytes into wake-ups of the local workers."""
        while not stopped.is_set():
            ready, _, _ = select.select([self._read], [], [], 0.5)
            if ready:
                os.read(self._read, 65536)
                spool.wake()


def run_forwarders(
    config: Config,
    spool: Spool,
    signal_: WorkSignal,
    stopped: threading.Event,
    reload: threading.Event | None = None,
) -> None:
    """Run one Forwarder per destination until `stopped` is set; then let each finish its
    current object (bounded by its DIMSE timeout) and release its association. When `reload`
    is set, re-read the destinations' TLS certificates (next association uses them)."""
    contexts = tls.build(config)
    forwarders = [Forwarder(d, config.node, spool, contexts.destinations.get(d.name)) for d in config.destinations]
    for forwarder in forwarders:
        forwarder.start()
    relay = threading.Thread(target=signal_.relay, args=(spool, stopped), name="forward-wake", daemon=True)
    relay.start()
    while not stopped.wait(1.0):
        if reload is not None and reload.is_set():
            reload.clear()
            _reload_certificates(config, forwarders)
        if not all(f.is_alive() for f in forwarders):
            # Never expected (workers catch everything): exit so the receiver restarts us.
            log.error("a forwarder thread exited; restarting the forwarder process")
            os._exit(1)
    for forwarder in forwarders:
        forwarder.stop()
    for forwarder in forwarders:
        destination = forwarder.destination
        forwarder.join(timeout=(destination.dimse_timeout if isinstance(destination, DicomDestination) else 0) + 5)
