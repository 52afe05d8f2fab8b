"""A pynetdicom storage SCP whose answers a test scripts: statuses in order, accepted syntaxes."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Received:
    """One C-STORE as it came off the wire: the data set bytes and the transfer syntax of the
    presentation context it was sent on (what the sender claims its encoding is)."""

    transfer_syntax_uid: str
    dataset_bytes: bytes
    association: int  # which association (0, 1, ...) carried it


@dataclass
class ScriptedSCP:
    """Answers each C-STORE with the next status of `statuses` (the last one repeats).

    Every data set answered with Success (or warning) is kept in `stored`; every request, as
    received, in `received`.
    """

    port: int
    statuses: Sequence[int] = (0x0000,)
    ae_title: str = "ARCHIVE"
    transfer_syntaxes: Sequence[str] = tuple(ALL_TRANSFER_SYNTAXES)
    stored: list[Dataset] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    associations: list[Any] = field(default_factory=list)
    _server: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _handle(self, event: evt.Event) -> int:
        with self._lock:
            status = self.statuses[min(len(self.answered), len(self.statuses) - 1)]
            self.answered.append(status)
            if event.assoc not in self.associations:
                self.associations.append(event.assoc)
            syntax = str(event.file_meta.TransferSyntaxUID)
            raw = event.request.DataSet.getvalue()
            self.received.append(Received(syntax, raw, self.associations.index(event.assoc)))
            if status == 0 or 0xB000 <= status <= 0xBFFF:
                buffer = BytesIO()
                buffer.write(b"\x00" * 128 + b"DICM")
                write_file_meta_info(buffer, event.file_meta)
                buffer.write(raw)
                buffer.seek(0)
                self.stored.append(dcmread(buffer))
        return status

    def start(self) -> ScriptedSCP:
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, list(self.transfer_syntaxes))
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._handle)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            # Like a real archive going down: open associations die with it.
            for assoc in self._server.active_associations:
                assoc.abort()
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> ScriptedSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
