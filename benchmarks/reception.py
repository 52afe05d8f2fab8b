"""Reception alone: storescu -> the node's SCP whose pipeline answers Success at once.

Runs the same SCP (build_ae, handlers, bounded reader) twice in one process, once with
pynetdicom's own polling reactors and once with dicom_proxy.reception's event-driven ones,
alternating, so both see the same machine load. Shows what the reactor costs per object.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.netpeers import DCMTK_ENV, storescu_command


@dataclass(frozen=True)
class ReceptionResult:
    """Objects/s of the best and the median round per mode (best: least disturbed by other load)."""

    polling_best: float
    event_driven_best: float
    polling_median: float
    event_driven_median: float
    objects: int
    rounds: int


class _Answer:
    """A pipeline stand-in: reads nothing, stores nothing, answers Success."""

    def store(self, received: Any, caller: Any) -> Any:
        from dicom_proxy.receive import StoreOutcome
        from dicom_proxy.status import StoreStatus

        return StoreOutcome(StoreStatus.SUCCESS)


def _serve(event_driven: bool) -> Any:
    from pynetdicom import evt

    from dicom_proxy import reception
    from dicom_proxy.config import NodeConfig
    from dicom_proxy.limits import ReceiveLimits
    from dicom_proxy.receive import AssociationAudit, build_ae, handle_store
    from dicom_proxy.tcp import set_tcp_nodelay

    node = NodeConfig(bind="127.0.0.1", port=0)
    ae = build_ae(node)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, handle_store(_Answer(), AssociationAudit())),  # type: ignore[arg-type]
        (evt.EVT_CONN_OPEN, set_tcp_nodelay),
        (evt.EVT_CONN_OPEN, ReceiveLimits(node.max_object_bytes).on_connection_open),
    ]
    if event_driven:
        return reception.start_server(ae, ("127.0.0.1", 0), evt_handlers=handlers)
    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)


def _send(port: int, files: list[Path]) -> float:
    started = time.perf_counter()
    subprocess.run(
        storescu_command(port, files, calling="BENCH", options=("-to", "60")),
        check=True,
        capture_output=True,
        env=DCMTK_ENV,
    )
    return time.perf_counter() - started


def reception_only(files: list[Path], rounds: int = 6) -> ReceptionResult:
    servers = {mode: _serve(mode) for mode in (False, True)}
    seconds: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(rounds):
            for mode, server in servers.items():
                seconds[mode].append(_send(server.server_address[1], files))
    finally:
        for server in servers.values():
            server.shutdown()
    n = len(files)
    return ReceptionResult(
        n / min(seconds[False]),
        n / min(seconds[True]),
        n / statistics.median(seconds[False]),
        n / statistics.median(seconds[True]),
        n,
        rounds,
    )
