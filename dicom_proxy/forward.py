"""Delivery: one worker per destination drains that destination's spool queue.

Each result is DELIVERED (delete the entry), RETRY (keep it, back off, try again) or REFUSED
(permanent: quarantine with a PHI-free reason), as in RSNA CTP's OK / RETRY / FAIL.
A dead destination only ever delays its own queue.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association

from dicom_proxy import audit, reception
from dicom_proxy.config import Config, DestinationConfig, DicomDestination, FolderDestination, NodeConfig
from dicom_proxy.deidentify.pixels import CODEC_LOCK
from dicom_proxy.deidentify.pixels.bigendian import to_little_endian
from dicom_proxy.models import SpoolEntry, is_valid_uid
from dicom_proxy.spool import Spool, _fsync_dir, entry_uids
from dicom_proxy.spool_state import DestinationHealth
from dicom_proxy.status import is_success, is_transient_failure
from dicom_proxy.tcp import set_tcp_nodelay

log = logging.getLogger(__name__)

# Send spooled files straight from disk in chunks: no decode, no re-encode, bounded memory.
_config.STORE_SEND_CHUNKED_DATASET = True

# PS3.8 9.3.2.2: at most 128 presentation contexts per association request.
_MAX_CONTEXTS = 120
_UNCOMPRESSED = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))


class Result(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


@dataclass(frozen=True)
class Outcome:
    result: Result
    reason: str = ""
    status: int | None = None


class Sender:
    """Delivers one spooled file to one destination."""

    def send(self, entry: SpoolEntry) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever is held open (association, files)."""


class FolderSender(Sender):
    """Writes `<path>/<Study>/<Series>/<SOP>.dcm` (temp file, fsync, rename)."""

    def __init__(self, destination: FolderDestination) -> None:
        self.root = destination.path

    def send(self, entry: SpoolEntry) -> Outcome:
        try:
            header = dcmread(
                entry.path,
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
            )
            uids = [str(header.StudyInstanceUID), str(header.SeriesInstanceUID), str(header.SOPInstanceUID)]
            if not all(is_valid_uid(uid) for uid in uids):
                return Outcome(Result.REFUSED, "spooled file has an invalid UID")
            folder = self.root / uids[0] / uids[1]
            _make_dirs_durable(folder)
            target = folder / f"{uids[2]}.dcm"
            temporary = folder / f".{target.name}.tmp"
            shutil.copyfile(entry.path, temporary)
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, target)
            _fsync_dir(folder)
        except OSError as exc:
            # Disk full or permissions: the folder may recover, so keep the entry.
            return Outcome(Result.RETRY, f"cannot write to folder ({exc.strerror})")
        except Exception as exc:
            return Outcome(Result.REFUSED, f"spooled file unreadable ({type(exc).__name__})")
        return Outcome(Result.DELIVERED)


def _make_dirs_durable(folder: Path) -> None:
    """mkdir -p, fsync'ing the parent of every folder created, so a delivered file survives a
    power loss even on file systems that do not order directory updates."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
        _fsync_dir(path.parent)


class DicomSender(Sender):
    """A storage SCU that keeps its association open across objects (PS3.4 Annex B)."""

    def __init__(self, destination: DicomDestination, node: NodeConfig) -> None:
        self.destination = destination
        self.ae = AE(ae_title=destination.calling_ae_title or node.ae_title)
        self.ae.acse_timeout = destination.acse_timeout
        self.ae.dimse_timeout = destination.dimse_timeout
        self.ae.network_timeout = destination.network_timeout
        self.ae.connection_timeout = destination.network_timeout
        self.ae.maximum_pdu_size = destination.maximum_pdu_size
        self.assoc: Association | None = None
        # (SOP Class, Transfer Syntax) pairs this destination has been asked for, newest last.
        self._contexts: dict[tuple[str, str], None] = {}

    def send(self, entry: SpoolEntry) -> Outcome:
        try:
            meta = read_file_meta_info(entry.path)
            context = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
        except Exception as exc:
            return Outcome(Result.REFUSED, f"spooled file unreadable ({type(exc).__name__})")
        outcome = self._ensure_association(context)
        if outcome is not None:
            return outcome
        assert self.assoc is not None
        try:
            if self._accepted(context[0], context[1]):
                # The usual case: the stored bytes go out as they are, streamed from disk.
                response = self.assoc.send_c_store(entry.path)
            else:
                response = self.assoc.send_c_store(self._converted(entry, context[0]))
        except (ValueError, AttributeError, NotImplementedError, RuntimeError) as exc:
            if self.assoc is not None and self.assoc.is_established:
                # Established but the object cannot be sent in any accepted syntax: permanent.
                return Outcome(Result.REFUSED, f"cannot send in an accepted transfer syntax ({type(exc).__name__})")
            self.close()
            return Outcome(Result.RETRY, f"C-STORE failed ({type(exc).__name__})")
        except Exception as exc:
            self.close()
            return Outcome(Result.RETRY, f"C-STORE failed ({type(exc).__name__})")
        return self._outcome(response)

    def _outcome(self, response: Dataset) -> Outcome:
        if "Status" not in response:
            # Timeout, abort or invalid response: the association is gone; try again later.
            self.close()
            return Outcome(Result.RETRY, "no C-STORE response (timeout or abort)")
        status = int(response.Status)
        if is_success(status):
            return Outcome(Result.DELIVERED, status=status)
        if is_transient_failure(status):
            return Outcome(Result.RETRY, f"destination out of resources (0x{status:04X})", status)
        return Outcome(Result.REFUSED, f"destination refused the object (0x{status:04X})", status)

    def _converted(self, entry: SpoolEntry, sop_class: str) -> Dataset:
        """Re-encode for a destination that did not accept the stored syntax (PS3.5 10)."""
        accepted = next(
            c.transfer_syntax[0] for c in self.assoc.accepted_contexts if c.abstract_syntax == sop_class  # type: ignore[union-attr]
        )
        dataset = dcmread(entry.path)
        source = UID(dataset.file_meta.TransferSyntaxUID)
        if source.is_compressed:
            # Never make a new SOP Instance UID here: the pseudonym mapping must stay stable.
            with CODEC_LOCK:
                dataset.decompress(generate_instance_uid=False)
        elif not source.is_little_endian:
            # pydicom re-encodes numbers, but word values (OW...) are bytes: swap them.
            to_little_endian(dataset, pixel_data=True)
        syntax = UID(accepted)
        dataset.file_meta.TransferSyntaxUID = syntax
        dataset.set_original_encoding(syntax.is_implicit_VR, syntax.is_little_endian, dataset.original_character_set)
        return dataset

    def _ensure_association(self, context: tuple[str, str]) -> Outcome | None:
        established = self.assoc is not None and self.assoc.is_established
        if established and self._accepted(context[0]):
            return None
        if established and context in self._contexts:
            # Asked for on this association, neither syntax accepted: permanent.
            return Outcome(Result.REFUSED, "SOP class or transfer syntax rejected by destination")
        self.close()
        self._contexts[context] = None
        while len(self._contexts) * 2 > _MAX_CONTEXTS:
            del self._contexts[next(iter(self._contexts))]
        self.ae.requested_contexts = []
        for sop_class, syntax in self._contexts:
            # The stored syntax first; uncompressed little endian as a fallback we can convert to.
            self.ae.add_requested_context(sop_class, syntax)
            fallback = [s for s in _UNCOMPRESSED if s != syntax]
            self.ae.add_requested_context(sop_class, fallback)
        d = self.destination
        assoc = self.ae.associate(
            d.host,
            d.port,
            ae_title=d.ae_title,
            max_pdu=d.maximum_pdu_size,
            evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_CONN_OPEN, reception.adopt_requestor)],
        )
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            return Outcome(Result.RETRY, f"association {why}")
        self.assoc = assoc
        if not self._accepted(context[0]):
            return Outcome(Result.REFUSED, "SOP class or transfer syntax rejected by destination")
        return None

    def _accepted(self, sop_class: str, syntax: str | None = None) -> bool:
        """Is there an accepted context for `sop_class` (in `syntax`, when given)?"""
        assert self.assoc is not None
        return any(
            c.abstract_syntax == sop_class and (syntax is None or c.transfer_syntax[0] == syntax)
            for c in self.assoc.accepted_contexts
        )

    def close(self) -> None:
        if self.assoc is not None:
            try:
                if self.assoc.is_established:
                    self.assoc.release()
            except Exception:
                self.assoc.abort()
            self.assoc = None


def make_sender(destination: DestinationConfig, node: NodeConfig) -> Sender:
    if isinstance(destination, FolderDestination):
        return FolderSender(destination)
    return DicomSender(destination, node)


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


# Release an idle association after this long so destinations are not held needlessly.
_IDLE_RELEASE_SECONDS = 5.0


class Forwarder(threading.Thread):
    """Drains one destination's queue until stopped."""

    def __init__(self, destination: DestinationConfig, node: NodeConfig, spool: Spool) -> None:
        super().__init__(name=f"forward-{destination.name}", daemon=True)
        self.destination = destination
        self.spool = spool
        self.sender = make_sender(destination, node)
        self.backoff = Backoff(destination.retry_initial_delay, destination.retry_max_delay)
        # What `spool status` shows: written to the spool by this worker (spool_state.py).
        self.health = DestinationHealth(spool.root, destination.name)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.spool.wake()

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
                    # A worker that dies leaves its queue undrained while everything looks
                    # healthy: log (type only: messages may quote values), back off, go on.
                    delay = self.backoff.next_delay()
                    log.error(
                        "destination %s: unexpected %s; retrying in %.1fs",
                        self.destination.name,
                        type(exc).__name__,
                        delay,
                    )
                    self.health.deferred(f"unexpected {type(exc).__name__}", delay)
                    self.sender.close()
                    self._stop_event.wait(delay)
        finally:
            self.sender.close()

    def _idle(self, idle_since: float | None) -> float:
        now = time.monotonic()
        if idle_since is None:
            idle_since = now
        elif now - idle_since > _IDLE_RELEASE_SECONDS:
            self.sender.close()
        self.health.idle()
        self.spool.wait_for_work(0.5)
        return idle_since

    def _drain(self, entries: list[SpoolEntry]) -> None:
        for entry in entries:
            if self._stop_event.is_set():
                return
            if not entry.path.exists():
                continue
            outcome = self.sender.send(entry)
            study, sop = entry_uids(entry.path.name)
            name = self.destination.name
            if outcome.result is Result.DELIVERED:
                self.spool.complete(entry)
                self.backoff.reset()
                self.health.delivered()
                audit.emit(
                    audit.ObjectForwarded(
                        destination=name, entry=entry.path.name, sop_instance_uid=sop, study_instance_uid=study,
                        status=outcome.status or 0,
                    )
                )
            elif outcome.result is Result.REFUSED:
                self.spool.quarantine(entry, {"destination": name, "reason": outcome.reason, "status": outcome.status})
                self.health.refused(outcome.reason)
                audit.emit(
                    audit.ObjectQuarantined(
                        destination=name, entry=entry.path.name, reason=outcome.reason, status=outcome.status,
                        sop_instance_uid=sop, study_instance_uid=study,
                    )
                )
            else:
                delay = self.backoff.next_delay()
                self.health.deferred(outcome.reason, delay)
                audit.emit(
                    audit.DeliveryDeferred(
                        destination=name, reason=outcome.reason, retry_in=round(delay, 1), entry=entry.path.name,
                        sop_instance_uid=sop, study_instance_uid=study,
                    )
                )
                self._stop_event.wait(delay)
                return


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
        import select

        while not stopped.is_set():
            ready, _, _ = select.select([self._read], [], [], 0.5)
            if ready:
                os.read(self._read, 65536)
                spool.wake()


def run_forwarders(config: Config, spool: Spool, signal_: WorkSignal, stopped: threading.Event) -> None:
    """Run one Forwarder per destination until `stopped` is set; then let each finish its
    current object (bounded by its DIMSE timeout) and release its association."""
    forwarders = [Forwarder(d, config.node, spool) for d in config.destinations]
    for forwarder in forwarders:
        forwarder.start()
    relay = threading.Thread(target=signal_.relay, args=(spool, stopped), name="forward-wake", daemon=True)
    relay.start()
    while not stopped.wait(1.0):
        if not all(f.is_alive() for f in forwarders):
            # Never expected (workers catch everything): exit so the receiver restarts us.
            log.error("a forwarder thread exited; restarting the forwarder process")
            os._exit(1)
    for forwarder in forwarders:
        forwarder.stop()
    for forwarder in forwarders:
        destination = forwarder.destination
        forwarder.join(timeout=(destination.dimse_timeout if isinstance(destination, DicomDestination) else 0) + 5)
