"""Admission before DICOM: the peer's address (node.allowed_networks) and the TLS handshake
(PS3.15 B.9), for the node's listening sockets. AE titles are checked after, by pynetdicom
(A-ASSOCIATE-RJ, audited by receive.AssociationAudit).

pynetdicom's server wraps accepted sockets in TLS inside its single accepting thread, so one
client that connects and says nothing would stall every other connection. Here the handshake
runs in the connection's own thread, bounded by node.acse_timeout, and every refusal (address
not allowed, handshake failed, client certificate missing or not verified) is audited with why.
"""

from __future__ import annotations

import socket
import ssl
from ipaddress import IPv4Network, IPv6Network, ip_address

from dicom_proxy import audit
from dicom_proxy.reception import EventDrivenServer

# OpenSSL reasons a peer causes, in words an operator can act on (the rest are shown as they are).
_HANDSHAKE_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client sent no certificate (mutual TLS)",
    "CERTIFICATE_VERIFY_FAILED": "client certificate not verified",
    "WRONG_VERSION_NUMBER": "not TLS (clear text on the TLS port?)",
    "HTTP_REQUEST": "not TLS (an HTTP request)",
    "UNSUPPORTED_PROTOCOL": "TLS version below the minimum",
    "NO_SHARED_CIPHER": "no cipher suite in common (BCP 195 policy)",
}


class AdmittingServer(EventDrivenServer):
    """The node's association server (event-driven, reception.py) that admits by address and
    speaks TLS when given a context. `tls_context` may be replaced at any time (certificate reload): each handshake
    uses the context current when it starts."""

    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()
    tls_context: ssl.SSLContext | None = None
    handshake_timeout: float = 30.0

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def verify_request(self, request: object, client_address: object) -> bool:
        """Runs in the accepting thread: a cheap address check only."""
        host = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        if not self.allowed_networks or _in_networks(str(host), self.allowed_networks):
            return True
        self._reject(client_address, "peer address not in node.allowed_networks")
        return False

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        context = self.tls_context
        if context is not None:
            wrapped = self._handshake(context, request, client_address)
            if wrapped is None:
                self.shutdown_request(request)
                return
            request = wrapped
        super().process_request_thread(request, client_address)

    def _handshake(
        self, context: ssl.SSLContext, sock: socket.socket, client_address: tuple[str, int]
    ) -> ssl.SSLSocket | None:
        wrapped: ssl.SSLSocket | None = None
        try:
            sock.settimeout(self.handshake_timeout)
            wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            wrapped.do_handshake()
            wrapped.settimeout(None)  # as pynetdicom expects of an accepted socket
            return wrapped
        except ssl.SSLCertVerificationError as exc:
            reason = f"TLS handshake failed: client certificate not verified ({exc.verify_message})"
        except ssl.SSLError as exc:
            why = str(exc.reason or type(exc).__name__)
            reason = f"TLS handshake failed: {_HANDSHAKE_REASONS.get(why, why)}"
        except TimeoutError:
            reason = "TLS handshake timed out"
        except OSError as exc:
            reason = f"connection lost during the TLS handshake ({exc.strerror or type(exc).__name__})"
        if wrapped is not None:
            wrapped.close()  # wrap_socket detached `sock`: the TLS socket owns the descriptor now
        self._reject(client_address, reason)
        return None

    def _reject(self, client_address: object, reason: str) -> None:
        peer = f"{client_address[0]}:{client_address[1]}" if isinstance(client_address, tuple) else str(client_address)
        audit.emit(audit.ConnectionRejected(peer=peer, port=self.port, tls=self.tls_context is not None, reason=reason))


def _in_networks(host: str, networks: tuple[IPv4Network | IPv6Network, ...]) -> bool:
    try:
        address = ip_address(host)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:  # ::ffff:10.1.2.3 on a dual-stack socket
        address = address.ipv4_mapped
    return any(address in network for network in networks if network.version == address.version)
