"""The plain pynetdicom relay, a baseline: decode, edit a few attributes, send_c_store, answer.

python -m benchmarks.relay ARCHIVE_PORT
"""

from __future__ import annotations

import hashlib
import signal
import sys
import threading
from typing import Any

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def relay_serve(archive_port: int) -> None:
    """Decode, replace or remove a few identifying attributes, send_c_store, then answer."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

    from dicom_proxy.tcp import set_tcp_nodelay

    downstream: dict[int, Any] = {}
    lock = threading.Lock()
    out = AE(ae_title="RELAY")
    out.add_requested_context(CTImageStorage, [EXPLICIT_LE, "1.2.840.10008.1.2"])
    out.maximum_pdu_size = 0

    def upstream_ended(event: Any) -> None:
        with lock:
            assoc = downstream.pop(id(event.assoc), None)
        if assoc is not None and assoc.is_established:
            assoc.release()

    def handle_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        token = hashlib.sha256(str(ds.PatientID).encode()).hexdigest()[:10]
        ds.PatientName = f"ANON^{token}"
        ds.PatientID = token
        for keyword in (
            "PatientBirthDate",
            "AccessionNumber",
            "InstitutionName",
            "InstitutionAddress",
            "ReferringPhysicianName",
            "OperatorsName",
            "OtherPatientIDs",
            "AdditionalPatientHistory",
        ):
            if keyword in ds:
                delattr(ds, keyword)
        ds.PatientIdentityRemoved = "YES"
        key = id(event.assoc)
        with lock:
            assoc = downstream.get(key)
        if assoc is None or not assoc.is_established:
            assoc = out.associate(
                "127.0.0.1", archive_port, ae_title="ARCHIVE", evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)]
            )
            if not assoc.is_established:
                return 0xA700
            with lock:
                downstream[key] = assoc
        status = assoc.send_c_store(ds)
        return int(status.Status) if "Status" in status else 0xA700

    ae = AE(ae_title="RELAY")
    ae.maximum_pdu_size = 0
    ae.add_supported_context(CTImageStorage, [EXPLICIT_LE, "1.2.840.10008.1.2"])
    ae.add_supported_context(Verification)
    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[
            (evt.EVT_C_STORE, handle_store),
            (evt.EVT_C_ECHO, lambda e: 0),
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_RELEASED, upstream_ended),
            (evt.EVT_ABORTED, upstream_ended),
        ],
    )
    print(f"relay listening on 127.0.0.1:{server.server_address[1]}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    relay_serve(int(sys.argv[1]))
