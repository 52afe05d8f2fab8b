"""Running several nodes behind a TCP load balancer: a DICOM health check for HAProxy.

Nodes that share the secret key map every UID and patient to the same pseudonyms (keyed HMAC,
no shared state), so a balancer may spread the associations of one study over any number of
nodes. The balancer needs to know which nodes can take an association; a TCP connect only
proves that a port listens. `haproxy_echo_check` returns `tcp-check` lines that run a real
Verification (C-ECHO, PS3.7 9.1.5) against a node: A-ASSOCIATE-RQ, C-ECHO-RQ, A-RELEASE-RQ,
each with the answer it must get. The PDUs are encoded here from PS3.8 9.3, so the lines are
plain hexadecimal and need nothing but HAProxy.

    python -m dicom_proxy.balancer DEID_PROXY     # print the lines for that called AE title
"""

from __future__ import annotations

import struct
import sys

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
# Identifies the prober in the A-ASSOCIATE-RQ (PS3.7 D.3.3.2); the 2.25 root needs no registration.
PROBE_IMPLEMENTATION_CLASS_UID = "2.25.208317613213412925381326405466343012021"
C_ECHO_RQ = 0x0030
_PRESENTATION_CONTEXT_ID = 1


def _item(item_type: int, value: bytes) -> bytes:
    """A variable item: type, reserved, 2-byte length (PS3.8 9.3.2.1-9.3.2.3)."""
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _ae_title(title: str) -> bytes:
    return title.encode("ascii").ljust(16, b" ")


def associate_rq(called_ae_title: str, calling_ae_title: str) -> bytes:
    """A-ASSOCIATE-RQ PDU proposing Verification with Implicit VR Little Endian (PS3.8 9.3.2)."""
    context = _item(
        0x20,
        struct.pack(">B3x", _PRESENTATION_CONTEXT_ID)
        + _item(0x30, VERIFICATION_SOP_CLASS.encode())
        + _item(0x40, IMPLICIT_VR_LITTLE_ENDIAN.encode()),
    )
    user_information = _item(
        0x50,
        _item(0x51, struct.pack(">I", 16384)) + _item(0x52, PROBE_IMPLEMENTATION_CLASS_UID.encode()),
    )
    body = (
        struct.pack(">H2x", 1)
        + _ae_title(called_ae_title)
        + _ae_title(calling_ae_title)
        + bytes(32)
        + _item(0x10, APPLICATION_CONTEXT.encode())
        + context
        + user_information
    )
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _element(group: int, element: int, value: bytes) -> bytes:
    """Implicit VR Little Endian element (PS3.5 7.1.3), as command sets are encoded (PS3.7 6.3.1)."""
    return struct.pack("<HHI", group, element, len(value)) + value


def c_echo_rq(message_id: int = 1) -> bytes:
    """P-DATA-TF PDU carrying one C-ECHO-RQ command set (PS3.7 9.3.5, PS3.8 9.3.5)."""
    sop_class = VERIFICATION_SOP_CLASS.encode()
    sop_class += b"\0" * (len(sop_class) % 2)  # UI padded to even length with NUL (PS3.5 6.2)
    elements = (
        _element(0x0000, 0x0002, sop_class)
        + _element(0x0000, 0x0100, struct.pack("<H", C_ECHO_RQ))
        + _element(0x0000, 0x0110, struct.pack("<H", message_id))
        + _element(0x0000, 0x0800, struct.pack("<H", 0x0101))  # no data set
    )
    command = _element(0x0000, 0x0000, struct.pack("<I", len(elements))) + elements
    pdv = struct.pack(">IBB", len(command) + 2, _PRESENTATION_CONTEXT_ID, 0x03) + command  # command, last
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


def release_rq() -> bytes:
    """A-RELEASE-RQ PDU (PS3.8 9.3.6)."""
    return struct.pack(">BBI4x", 0x05, 0, 4)


# What a healthy node answers, as regular expressions over the hexadecimal response
# (HAProxy `expect rbinary`): A-ASSOCIATE-AC, then a C-ECHO-RSP whose Status (0000,0900)
# is 0000 Success, then A-RELEASE-RP.
_ASSOCIATE_AC = "^02"
_ECHO_SUCCESS = "0000000902000000" + "0000"
_RELEASE_RP = "06000000000400000000"


def haproxy_echo_check(called_ae_title: str, calling_ae_title: str = "HAPROXY_CHECK") -> list[str]:
    """`tcp-check` lines for an HAProxy backend (`option tcp-check`): the node is up only if
    it accepts an association and answers C-ECHO with Success."""
    return [
        "option tcp-check",
        "tcp-check connect",
        f"tcp-check send-binary {associate_rq(called_ae_title, calling_ae_title).hex()}",
        f"tcp-check expect rbinary {_ASSOCIATE_AC}",
        f"tcp-check send-binary {c_echo_rq().hex()}",
        f"tcp-check expect binary {_ECHO_SUCCESS}",
        f"tcp-check send-binary {release_rq().hex()}",
        f"tcp-check expect binary {_RELEASE_RP}",
    ]


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m dicom_proxy.balancer CALLED_AE_TITLE [CALLING_AE_TITLE]", file=sys.stderr)
        return 2
    print("\n".join("    " + line for line in haproxy_echo_check(*argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
