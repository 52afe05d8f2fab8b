"""The event-driven reactors (dicom_proxy.reception) with real associations over loopback:
pynetdicom and dcmtk peers store, echo, release, abort, vanish and idle against them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_proxy import reception
from dicom_proxy.config import NodeConfig
from dicom_proxy.models import ReceivedObject
from dicom_proxy.receive import AssociationAudit, Caller, StoreOutcome, build_ae, handle_store
from dicom_proxy.status import StoreStatus
from tests.corpus import write_corpus
from tests.netpeers import echo, storescu, wait_until

pytestmark = pytest.mark.network


class _Recorder:
    """Pipeline stand-in: keeps what arrived, answers Success."""

    def __init__(self) -> None:
        self.received: list[ReceivedObject] = []

    def store(self, received: ReceivedObject, caller: Caller) -> StoreOutcome:
        self.received.append(received)
        return StoreOutcome(StoreStatus.SUCCESS)


@contextmanager
def _server(network_timeout: float = 60.0) -> Iterator[tuple[ThreadedAssociationServer, _Recorder, list[str]]]:
    recorder = _Recorder()
    events: list[str] = []
    node = NodeConfig(bind="127.0.0.1", port=0, network_timeout=network_timeout)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store(recorder, AssociationAudit())),  # type: ignore[arg-type]
        (evt.EVT_C_ECHO, lambda event: 0x0000),
        (evt.EVT_RELEASED, lambda event: events.append("released")),
        (evt.EVT_ABORTED, lambda event: events.append("aborted")),
    ]
    server = reception.start_server(build_ae(node), ("127.0.0.1", 0), evt_handlers=handlers)
    try:
        yield server, recorder, events
    finally:
        server.shutdown()


def _port(server: ThreadedAssociationServer) -> int:
    return int(server.server_address[1])


def _requestor() -> AE:
    ae = AE(ae_title="REQUESTOR")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    return ae


def test_associations_use_the_event_driven_reactors(tmp_path: Path) -> None:
    with _server() as (server, _, _):
        assoc = _requestor().associate("127.0.0.1", _port(server), ae_title="DEID_PROXY")
        assert assoc.is_established
        assert wait_until(lambda: len(server.active_associations) == 1, 10)
        (acceptor,) = server.active_associations
        assert isinstance(acceptor, reception.EventDrivenAssociation)
        assert isinstance(acceptor.dul, reception.EventDrivenDUL)
        assoc.release()


def test_each_association_negotiates_on_its_own_copy_of_the_supported_contexts(tmp_path: Path) -> None:
    """What pynetdicom's per-association deep copy guaranteed, from the cheap copy: the same
    contexts, none of them the server's objects, and changing one leaves the server's alone."""
    with _server() as (server, _, _):
        assoc = _requestor().associate("127.0.0.1", _port(server), ae_title="DEID_PROXY")
        assert assoc.is_established
        assert wait_until(lambda: len(server.active_associations) == 1, 10)
        (acceptor,) = server.active_associations
        mine, theirs = acceptor.acceptor.supported_contexts, server.contexts
        assert len(mine) == len(theirs) > 170
        for copy, original in zip(mine, theirs, strict=True):
            assert copy is not original and copy._transfer_syntax is not original._transfer_syntax
            assert (copy.abstract_syntax, copy.transfer_syntax, copy.scu_role, copy.scp_role) == (
                original.abstract_syntax,
                original.transfer_syntax,
                original.scu_role,
                original.scp_role,
            )
        syntaxes = list(theirs[0].transfer_syntax)
        mine[0].transfer_syntax.clear()
        mine[0].context_id = 99
        assert theirs[0].transfer_syntax == syntaxes and theirs[0].context_id != 99
        assoc.release()
        # and a second association still negotiates every context
        assoc = _requestor().associate("127.0.0.1", _port(server), ae_title="DEID_PROXY")
        assert assoc.is_established and len(assoc.accepted_contexts) == 2
        assoc.release()


def test_dcmtk_stores_a_series_and_echoes_through_one_node(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=2, images_per_series=5)
    with _server() as (server, recorder, events):
        sent = storescu(_port(server), corpus)
        assert sent.statuses == ["Success"] * len(corpus), sent.output
        assert echo(_port(server), "DEID_PROXY")
        assert wait_until(lambda: not server.active_associations, 10)
    assert len(recorder.received) == len(corpus)
    expected = sorted(p.read_bytes()[-64:] for p in corpus)  # the pixel data ends every file
    assert sorted(r.dataset_bytes[-64:] for r in recorder.received) == expected
    assert events.count("released") == 2  # storescu and echoscu both released


def test_peer_abort_ends_the_association(tmp_path: Path) -> None:
    with _server() as (server, _, events):
        assoc = _requestor().associate("127.0.0.1", _port(server), ae_title="DEID_PROXY")
        assert assoc.is_established
        assoc.abort()
        assert wait_until(lambda: "aborted" in events and not server.active_associations, 10)


def test_peer_that_vanishes_frees_its_association(tmp_path: Path) -> None:
    with _server() as (server, _, _):
        assoc = _requestor().associate("127.0.0.1", _port(server), ae_title="DEID_PROXY")
        assert assoc.is_established
        assert wait_until(lambda: len(server.active_associations) == 1, 10)
        # Close the TCP connection under the requestor's feet: no A-RELEASE, no A-ABORT.
        transport = assoc.dul.socket.socket
        assert transport is not None
        transport.shutdown(socket.SHUT_RDWR)
        assert wait_until(lambda: not server.active_associations, 10)
        assoc.kill()


def test_idle_association_is_aborted_after_the_network_timeout(tmp_path: Path) -> None:
    with _server(network_timeout=0.5) as (server, _, _):
        aborted = threading.Event()
        assoc = _requestor().associate(
            "127.0.0.1", _port(server), ae_title="DEID_PROXY", evt_handlers=[(evt.EVT_ABORTED, lambda e: aborted.set())]
        )
        assert assoc.is_established
        assert aborted.wait(10), "the node did not end the idle association"
        assert wait_until(lambda: not server.active_associations, 10)


def test_requestor_adopted_on_connection_gets_every_store_response(tmp_path: Path) -> None:
    """The forwarders' associations: switched to the race-free reactor when the connection
    opens; every C-STORE gets its own response (none swallowed by the reactor)."""
    from pydicom import dcmread

    from tests.netpeers import StoreSCP, free_port

    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=30)
    port = free_port()
    with StoreSCP(tmp_path / "archive", port) as archive:
        ae = AE(ae_title="FORWARDER")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate(
            "127.0.0.1", port, ae_title="ARCHIVE", evt_handlers=[(evt.EVT_CONN_OPEN, reception.adopt_requestor)]
        )
        assert assoc.is_established
        assert isinstance(assoc, reception.EventDrivenAssociation)
        statuses = [int(assoc.send_c_store(dcmread(p)).Status) for p in corpus]
        assoc.release()
        assert assoc.is_released
        assert statuses == [0x0000] * len(corpus)
        assert len(archive.complete_files(len(corpus))) == len(corpus)
