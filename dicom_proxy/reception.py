"""Event-driven reactors for pynetdicom's acceptor associations (a small, version-pinned adapter).

pynetdicom runs two polling loops per association: the DICOM Upper Layer reactor (PS3.8 9.2)
checks the socket and its queue, sleeping 1 ms whenever nothing was there, and the association
reactor sleeps 1 ms before each look for a complete DIMSE message. With a synchronous sender
every object waits on both loops, and again for its C-STORE response to be picked up: up to
~3 ms per object spent sleeping, which caps one sender well below what the engine could do.

This module keeps pynetdicom for the protocol (state machine, PDUs, DIMSE, events) and replaces
only the waiting: the DUL blocks in poll() on its socket and a wake-up socket that every
primitive queued for it signals; the association blocks on an event set whenever the DUL hands
it a DIMSE message or an A-RELEASE/A-ABORT. Nothing sleeps on a fixed interval; idle loops
still wake at least every `IDLE_WAKE` seconds to check timers.

It reaches into pynetdicom internals (`DULServiceProvider.run_reactor`'s loop body,
`Association._run_reactor`, the queue attributes), hence the pin in pyproject.toml
(pynetdicom >=3.0,<3.1) and tests/test_reception.py, which drives real associations through it.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

log = logging.getLogger(__name__)

# Longest a reactor blocks without a reason to wake (timers are checked at least this often).
IDLE_WAKE = 0.05


class _SignallingQueue(queue.Queue[Any]):
    """A queue that calls `signal()` after every put."""

    def __init__(self, signal: Any) -> None:
        super().__init__()
        self._signal = signal

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._signal()


class _Waker:
    """A socket pair: `wake()` from any thread makes the read end readable."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def wake(self) -> None:
        try:
            self.writer.send(b"\0")
        except OSError:  # buffer full (already awake) or closed (reactor finished)
            pass

    def drain(self) -> None:
        try:
            while self.reader.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


class EventDrivenDUL(DULServiceProvider):
    """The DUL reactor of pynetdicom 3.0 with its 1 ms sleep replaced by poll() (PS3.8 9.2)."""

    _waker: _Waker

    def adopt(self) -> None:
        """Switch a freshly created (not started) DUL to event-driven waiting."""
        self._waker = _Waker()
        self.to_provider_queue = _SignallingQueue(self._waker.wake)

    def run(self) -> None:
        # Thread.run would call the target bound at construction (the polling reactor).
        self.run_reactor()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._waker.wake()

    def stop_dul(self) -> bool:
        """Stop the reactor if the connection is closed (Sta1), as pynetdicom does, but wake
        it rather than wait for its next pass."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self._waker.wake()
        if threading.current_thread() is not self and self.is_alive():
            self.join()
        return True

    def run_reactor(self) -> None:
        try:
            self._react()
        finally:
            self._waker.close()

    def _react(self) -> None:
        self._idle_timer.start()
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                return
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # Either hand a primitive to the state machine or read one PDU per pass,
                # exactly as pynetdicom's reactor does.
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                self._abort_on_error()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                self._wait()
                continue
            self.state_machine.do_action(event)

    def _wait(self) -> None:
        """Block until the socket is readable, a primitive is queued, or a timer may expire."""
        timeout = IDLE_WAKE
        artim = self.artim_timer
        if artim._start_time is not None and artim._end_time is None:
            timeout = max(0.0, min(timeout, artim.remaining))
        transport = self.socket.socket if self.socket is not None else None
        if isinstance(transport, ssl.SSLSocket) and transport.pending():
            return  # decrypted bytes already buffered: poll() would not see them
        poller = select.poll()
        poller.register(self._waker.reader, select.POLLIN)
        if transport is not None and transport.fileno() >= 0:
            poller.register(transport, select.POLLIN)
        if self.to_provider_queue.qsize():
            return
        if poller.poll(timeout * 1000):
            self._waker.drain()

    def _abort_on_error(self) -> None:
        # As pynetdicom does: bypass the state machine, send an A-ABORT and stop both reactors.
        log.error("exception in the DICOM upper layer, aborting the association")
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        try:
            if self.socket is not None:
                self.socket.send(abort.encode())
        except Exception:
            pass
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class EventDrivenAssociation(Association):
    """pynetdicom's acceptor reactor, waiting on an event instead of sleeping 1 ms per pass."""

    _activity: threading.Event

    def adopt(self) -> None:
        """Switch a freshly created (not started) acceptor association and its DUL."""
        self._activity = threading.Event()
        self.dul.__class__ = EventDrivenDUL
        dul = cast(EventDrivenDUL, self.dul)
        dul.adopt()
        # Whatever the association reactor reacts to arrives through these two queues.
        dul.to_user_queue = _SignallingQueue(self._activity.set)
        self.dimse.msg_queue = _SignallingQueue(self._activity.set)

    def kill(self) -> None:
        super().kill()
        self._activity.set()

    def _run_reactor(self) -> None:
        """Serve DIMSE messages until released, aborted, the DUL stops or the idle timer expires
        (the checks and their order are pynetdicom's, PS3.7 and PS3.8 9.2).

        pynetdicom's send_* methods pause this loop (clear the checkpoint, then wait until
        `_is_paused`) so that it does not take their responses off the queue. pynetdicom's own
        loop has a window where a send sees `_is_paused` true although the loop has already
        passed the checkpoint; it then swallows the response ("Received unexpected C-STORE
        service message") and the send waits for the DIMSE timeout. Here the loop counts as
        paused only while it cannot reach the queue, and looks at the checkpoint again after
        leaving that state.
        """
        while not self._kill:
            self._is_paused = True
            self._activity.wait(IDLE_WAKE)
            self._activity.clear()
            self._reactor_checkpoint.wait()
            self._is_paused = False
            if not self._reactor_checkpoint.is_set():
                continue  # a send paused us between the two lines above: go back to paused
            context_id, message = self.dimse.get_msg(block=False)
            if message:
                self._serve_request(message, cast(int, context_id))
                self._activity.set()  # look again at once: another message may be queued
            if self.is_established and self.acse.is_release_requested():
                self.is_released = True
                self.is_established = False
                # Before the A-RELEASE-RP goes out (pynetdicom triggers it after): the woken DUL
                # sends the reply at once and the peer's close (EVT_CONN_CLOSE) could overtake it.
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.acse.send_release(is_response=True)
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so EVT_ACSE_RECV fires for the abort
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                log.warning("network timeout reached (node.network_timeout)")
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


def adopt_requestor(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler for associations we request (the forwarders): from now on their
    association reactor is the one above, without pynetdicom's pause race. Their DUL keeps
    polling: it is already running when the connection opens."""
    assoc = event.assoc
    if assoc.is_acceptor or isinstance(assoc, EventDrivenAssociation):
        return
    activity = threading.Event()
    assoc._activity = activity  # type: ignore[attr-defined]  # before the class switch
    # DIMSE messages only flow once the association is established, after this event; the
    # DUL's to_user_queue is in use for the negotiation and stays (a poll every IDLE_WAKE).
    assoc.dimse.msg_queue = _SignallingQueue(activity.set)
    assoc.__class__ = EventDrivenAssociation


class _EventDrivenRequestHandler(RequestHandler):
    def _create_association(self) -> Association:
        assoc = super()._create_association()
        assoc.__class__ = EventDrivenAssociation
        cast(EventDrivenAssociation, assoc).adopt()
        return assoc


class _SupportedContexts(list[PresentationContext]):
    """The server's supported presentation contexts. pynetdicom deep-copies them for every
    association it accepts, so that negotiation cannot change the server's: for the node's 171
    SOP classes x 45 transfer syntaxes that is 39 ms of CPU per association (every UID made and
    validated again), a ceiling of ~25 images/s for a sender that opens one association per
    image. A context holds only immutable UIDs and flags: a new object with its own list of
    syntaxes is just as independent, in 0.1 ms."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        return [_copied(context) for context in self]


def _copied(context: PresentationContext) -> PresentationContext:
    copy = object.__new__(PresentationContext)
    copy.__dict__.update(context.__dict__)
    copy._transfer_syntax = list(context._transfer_syntax)
    return copy


class EventDrivenServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server whose associations use the reactors above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = _EventDrivenRequestHandler
        super().__init__(*args, **kwargs)
        self.contexts = _SupportedContexts(self.contexts)


def start_server(
    ae: Any, address: tuple[str, int], server_class: type[EventDrivenServer] = EventDrivenServer, **kwargs: Any
) -> ThreadedAssociationServer:
    """`AE.start_server(address, block=False, **kwargs)` with event-driven associations
    (`server_class`: EventDrivenServer or a subclass, e.g. admission.AdmittingServer)."""
    server = ae.make_server(address, server_class=server_class, **kwargs)
    thread = threading.Thread(
        target=server.serve_forever,
        name=f"AcceptorServer@{datetime.now():%Y%m%d%H%M%S}",
        daemon=True,
    )
    thread.start()
    ae._servers.append(server)
    return cast(ThreadedAssociationServer, server)
