"""The DICOM destination: a storage SCU (PS3.4 Annex B) that negotiates per object.

Every object goes out on a presentation context accepted for the transfer syntax it is encoded
in (PS3.8 9.3.2.2, PS3.7 9.1.1: the data set of a C-STORE is encoded in the transfer syntax of
its presentation context). For each object the sender considers, best first, the syntaxes it
may be sent in (`part10.sendable_syntaxes`: its own, then uncompressed little endian):

1. the first one accepted on the open association is used: its own syntax goes out as stored,
   streamed from disk; another one is a conversion (`part10.transcode`);
2. if a better one was never proposed on the open association, a new association is opened
   that proposes it, so a compressed object is never decompressed while its own syntax may be
   acceptable;
3. if all were proposed and none accepted, the destination refuses the object.

The worker tells the sender which entries come next (`expect`), so the first association of a
batch already proposes every syntax the batch needs and a mixed stream usually travels on one
association.

Each (SOP Class, transfer syntax) pair is proposed in a presentation context of its own, so the
answer tells exactly which syntaxes the destination takes. Pairs seen recently are proposed
again on every new association (at most 128 contexts, PS3.8 9.3.2.2), so a mixed stream settles
on one association.
"""

from __future__ import annotations

import logging
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.presentation import build_context

from dicom_proxy import part10, reception
from dicom_proxy.config import DicomDestination, NodeConfig
from dicom_proxy.forward.outcome import Delivery, Outcome
from dicom_proxy.models import SpoolEntry
from dicom_proxy.status import is_success, is_transient_failure
from dicom_proxy.tcp import set_tcp_nodelay
from dicom_proxy.tls import ClientTLS

log = logging.getLogger(__name__)

# Send stored files straight from disk in chunks: no decode, no re-encode, bounded memory.
# pynetdicom then requires a context accepted for exactly the file's transfer syntax.
_config.STORE_SEND_CHUNKED_DATASET = True

# PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255, so at most 128 per request.
MAX_CONTEXTS = 128

Pair = tuple[str, UID]  # (SOP Class UID, Transfer Syntax UID)


class ContextBook:
    """The (SOP Class, transfer syntax) pairs to propose, most recently needed last."""

    def __init__(self, limit: int = MAX_CONTEXTS) -> None:
        self.limit = limit
        self._pairs: OrderedDict[Pair, None] = OrderedDict()

    def need(self, pairs: list[Pair]) -> None:
        for pair in pairs:
            self._pairs[pair] = None
            self._pairs.move_to_end(pair)
        while len(self._pairs) > self.limit:
            self._pairs.popitem(last=False)

    def pairs(self) -> list[Pair]:
        return list(self._pairs)


class DicomSender:
    """Keeps one association to the destination open across objects."""

    def __init__(self, destination: DicomDestination, node: NodeConfig, client_tls: ClientTLS | None = None) -> None:
        self.destination = destination
        # DICOM TLS (PS3.15 B.9) when the destination has [destinations.tls]; tls.py built it.
        self.tls = client_tls
        self.ae = AE(ae_title=destination.calling_ae_title or node.ae_title)
        self.ae.acse_timeout = destination.acse_timeout
        self.ae.dimse_timeout = destination.dimse_timeout
        self.ae.network_timeout = destination.network_timeout
        self.ae.connection_timeout = destination.network_timeout
        self.ae.maximum_pdu_size = destination.maximum_pdu_size
        self.assoc: Association | None = None
        self.book = ContextBook()
        # Pairs proposed on the open association (accepted or not).
        self._proposed: set[Pair] = set()
        # Associations opened so far (tests and logs: renegotiation is visible).
        self.associations_opened = 0

    # -- one object ------------------------------------------------------------------------
    def expect(self, entries: Sequence[SpoolEntry]) -> None:
        """Add the pairs of the coming entries to the book (read from their File Meta only)."""
        for entry in entries:
            try:
                meta = part10.read_file_meta(entry.path)
            except OSError:
                continue  # gone already (purged, delivered by a previous process): send() decides
            if meta is not None:
                syntaxes = part10.sendable_syntaxes(meta.transfer_syntax_uid)
                self.book.need([(meta.sop_class_uid, syntax) for syntax in syntaxes])

    def send(self, entry: SpoolEntry) -> Outcome:
        meta = part10.read_file_meta(entry.path)
        if meta is None:
            return Outcome(Delivery.CANNOT_CONVERT, "stored file is not a readable Part 10 file")
        candidates = part10.sendable_syntaxes(meta.transfer_syntax_uid)
        pairs = [(meta.sop_class_uid, syntax) for syntax in candidates]
        if self._must_negotiate(pairs):
            self.book.need(pairs)
            failure = self._associate()
            if failure is not None:
                return failure
        choice = self._accepted_syntax(pairs)
        if choice is None:
            names = ", ".join(s.name for s in candidates)
            return Outcome(
                Delivery.REFUSED,
                f"destination accepts none of the transfer syntaxes this object can be sent in ({names})",
            )
        if choice == meta.transfer_syntax_uid:
            return self._store(entry.path, choice)
        try:
            converted = part10.transcode(entry.path, choice)
        except part10.ConversionError as exc:
            return Outcome(Delivery.CANNOT_CONVERT, f"cannot convert to {choice.name}: {exc}")
        log.info(
            "destination %s: %s converted to %s (its own syntax %s is not accepted)",
            self.destination.name,
            meta.sop_instance_uid,
            choice.name,
            meta.transfer_syntax_uid.name,
        )
        with tempfile.TemporaryDirectory(prefix="dicom-proxy-convert-") as scratch:
            path = Path(scratch, "object.dcm")
            with open(path, "wb") as handle:
                handle.writelines(converted.parts)
            return self._store(path, choice)

    def _accepted(self) -> set[Pair]:
        assert self.assoc is not None
        return {(str(c.abstract_syntax), UID(c.transfer_syntax[0])) for c in self.assoc.accepted_contexts if c.as_scu}

    def _must_negotiate(self, pairs: list[Pair]) -> bool:
        """No open association, or a syntax better than every accepted one was never proposed
        on it: ask before converting."""
        if self.assoc is None or not self.assoc.is_established:
            return True
        accepted = self._accepted()
        for pair in pairs:
            if pair in accepted:
                return False
            if pair not in self._proposed:
                return True
        return False

    def _accepted_syntax(self, pairs: list[Pair]) -> UID | None:
        """The best syntax this object may be sent in that the open association accepts."""
        accepted = self._accepted()
        return next((syntax for sop_class, syntax in pairs if (sop_class, syntax) in accepted), None)

    def _store(self, path: Path, syntax: UID) -> Outcome:
        assert self.assoc is not None
        try:
            # The file's transfer syntax is `syntax`; pynetdicom sends it on the context
            # accepted for exactly that syntax (no conversion when streaming from a file).
            response: Dataset = self.assoc.send_c_store(path)
        except RuntimeError:
            if self.assoc.is_established:
                raise
            # The peer released or aborted between our check and the request.
            self.close()
            return Outcome(Delivery.TRANSIENT, "association lost before the C-STORE request")
        if "Status" not in response:
            # Timeout, abort or invalid response: the association is gone; try again later.
            self.close()
            return Outcome(Delivery.TRANSIENT, "no C-STORE response (timeout or abort)")
        status = int(response.Status)
        if is_success(status):
            return Outcome(Delivery.DELIVERED, status=status, transfer_syntax_uid=str(syntax))
        if is_transient_failure(status):
            return Outcome(Delivery.TRANSIENT, f"destination out of resources (0x{status:04X})", status)
        return Outcome(Delivery.REFUSED, f"destination refused the object (0x{status:04X})", status)

    # -- the association -------------------------------------------------------------------
    def _associate(self) -> Outcome | None:
        """Release the open association and request one proposing every pair in the book."""
        self.close()
        pairs = self.book.pairs()
        contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
        d = self.destination
        assoc = self.ae.associate(
            d.host,
            d.port,
            contexts=contexts,
            ae_title=d.ae_title,
            max_pdu=d.maximum_pdu_size,
            tls_args=self.tls.tls_args if self.tls is not None else None,
            # The event-driven association reactor (reception.py): pynetdicom's own could swallow
            # a C-STORE response and stall the send for the DIMSE timeout.
            evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_CONN_OPEN, reception.adopt_requestor)],
        )
        self.associations_opened += 1
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            if self.tls is not None and not assoc.is_rejected:
                why += " (connection or TLS handshake failed; pynetdicom logs which)"
            return Outcome(Delivery.TRANSIENT, f"association {why}")
        self.assoc = assoc
        self._proposed = set(pairs)
        return None

    def close(self) -> None:
        if self.assoc is not None:
            try:
                if self.assoc.is_established:
                    self.assoc.release()
            except Exception:
                self.assoc.abort()  # a release that fails still must not leave the socket open
            self.assoc = None
            self._proposed = set()
