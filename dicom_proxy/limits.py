"""Bounded memory on the receiving side, whatever a peer declares or sends.

pynetdicom reads each PDU whole (its declared length may be up to 4 GiB) and assembles each
DIMSE message in memory. Two bounds keep a hostile or broken sender from exhausting RAM:

- a PDU longer than `max_object_bytes` closes the connection before it is read;
- a data set whose P-DATA fragments add up to more than `max_object_bytes` closes the
  connection as soon as the limit is crossed (the sender sees an aborted association, never
  Success).

The same socket wrapper reads in 256 KiB chunks instead of pynetdicom's 4 KiB ones: fewer
system calls and copies per object.
"""

from __future__ import annotations

import logging
import socket
import struct

from pynetdicom import evt

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
_P_DATA_TF = 0x04
_MAX_COMMAND_BYTES = 64 * 1024


class ReceiveLimits:
    """Installs a bounded reader on each new connection of one SCP."""

    def __init__(self, max_object_bytes: int) -> None:
        self.max_object_bytes = max_object_bytes

    def on_connection_open(self, event: evt.Event) -> None:
        transport = getattr(event.assoc.dul, "socket", None)
        if transport is None or transport.socket is None:
            return
        transport.recv = _BoundedReader(transport.socket, self.max_object_bytes).recv


class _BoundedReader:
    """pynetdicom reads a PDU as recv(6) for its header, then recv(length) for its body
    (PS3.8 9.3.1). Knowing that, the body of each P-DATA-TF PDU is walked here: its PDV items
    (PS3.8 9.3.5.1) say which bytes are data set fragments and where a data set ends."""

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.limit = limit
        self.expect_header = True
        self.pdu_type = 0
        self.data_set_bytes = 0  # of the data set being received
        self.command_bytes = 0  # of the command being received

    def recv(self, nr_bytes: int) -> bytearray:
        if nr_bytes > self.limit + _CHUNK:
            return self._abort("PDU longer than node.max_object_bytes")
        buffer = bytearray()
        while len(buffer) < nr_bytes:
            chunk = self.sock.recv(min(_CHUNK, nr_bytes - len(buffer)))
            if not chunk:
                return buffer  # connection closed: pynetdicom sees the short read and aborts
            buffer += chunk
        if self.expect_header:
            self.pdu_type = buffer[0]
            # pynetdicom reads the body next, unless the type is unknown (it then aborts).
            self.expect_header = not 0x01 <= self.pdu_type <= 0x07
            if not self.expect_header and struct.unpack_from(">I", buffer, 2)[0] > self.limit + _CHUNK:
                # Declared longer than anything we would accept: do not start reading it.
                return self._abort("PDU longer than node.max_object_bytes")
            return buffer
        self.expect_header = True
        if self.pdu_type == _P_DATA_TF and not self._count(buffer):
            return self._abort("data set or command larger than allowed")
        return buffer

    def _count(self, body: bytearray) -> bool:
        """Add the body's data set fragments; False once the data set exceeds the limit."""
        position = 0
        while position + 6 <= len(body):
            (length,) = struct.unpack_from(">I", body, position)
            control = body[position + 5]
            fragment = max(0, length - 2)
            if control & 0x01:  # command: a few hundred bytes in any real message
                self.command_bytes += fragment
                if self.command_bytes > _MAX_COMMAND_BYTES:
                    return False
                if control & 0x02:
                    self.command_bytes = 0
            else:
                self.data_set_bytes += fragment
                if self.data_set_bytes > self.limit:
                    return False
                if control & 0x02:  # last fragment: the next data set starts from zero
                    self.data_set_bytes = 0
            position += 4 + length
        return True

    def _abort(self, why: str) -> bytearray:
        log.warning("association aborted: %s", why)
        try:
            self.sock.close()
        except OSError:
            pass
        self.data_set_bytes = self.command_bytes = 0
        return bytearray()
