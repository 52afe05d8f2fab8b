"""Socket tuning shared by the SCP and the SCUs."""

from __future__ import annotations

import socket

from pynetdicom import evt


def set_tcp_nodelay(event: evt.Event) -> None:
    """Disable Nagle on every DICOM socket: dcmtk and many PACS stall on Nagle + delayed ACK.

    Bound to EVT_CONN_OPEN, which fires on both the accepting and the requesting side.
    """
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (never in practice); nothing to tune
