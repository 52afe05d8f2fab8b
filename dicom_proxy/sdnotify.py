"""The systemd notification protocol (sd_notify(3)): one datagram per state change.

Written out rather than depending on libsystemd: the protocol is a single AF_UNIX datagram to
$NOTIFY_SOCKET ("@" prefix: abstract namespace). Outside systemd this does nothing.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable


def notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1") to systemd; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of WatchdogSec (systemd sets WATCHDOG_USEC for our PID), or None when unset."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


def start_watchdog(stopped: threading.Event, healthy: Callable[[], bool]) -> threading.Thread | None:
    """Ping WATCHDOG=1 while `healthy()` holds, until `stopped` is set."""
    interval = watchdog_interval()
    if interval is None:
        return None

    def run() -> None:
        while not stopped.wait(interval):
            if healthy():
                notify("WATCHDOG=1")

    thread = threading.Thread(target=run, name="sd-watchdog", daemon=True)
    thread.start()
    return thread
