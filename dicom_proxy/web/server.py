"""The HTTP server of `[metrics]`: ``/metrics`` (Prometheus text or OpenMetrics, as the scraper
asks) and ``/`` (the status page). Threads per request, so a slow browser never delays a scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from dicom_proxy.config import Config
from dicom_proxy.metrics import NodeInfoCollector, scrape_registry
from dicom_proxy.spool import Spool
from dicom_proxy.web.activity import RecentActivity
from dicom_proxy.web.page import render, snapshot

log = logging.getLogger(__name__)

DEFAULT_REFRESH_SECONDS = 5


class StatusServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        page: Callable[[int], str],
    ) -> None:
        self.registry = registry
        self.page = page
        super().__init__(address, _Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = "dicom-proxy"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            if url.path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encoder(self.server.registry))
            elif url.path == "/":
                self._send(200, "text/html; charset=utf-8", self.server.page(_refresh(url.query)).encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
        except Exception as exc:
            # Type only: a message could quote something read from the spool.
            log.error("status page: %s", type(exc).__name__)
            self._send(500, "text/plain; charset=utf-8", b"internal error\n")

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: scrapes every few seconds would drown the node's own log."""


def _refresh(query: str) -> int:
    """``?refresh=N`` (1-3600 s) overrides the page's reload interval."""
    values = parse_qs(query).get("refresh", [])
    try:
        seconds = int(values[0]) if values else DEFAULT_REFRESH_SECONDS
    except ValueError:
        return DEFAULT_REFRESH_SECONDS
    return min(max(seconds, 1), 3600)


def start_status_server(
    config: Config,
    spool: Spool,
    multiprocess_directory: Path | None,
    activity: RecentActivity,
    dicom_address: str,
    key_fingerprint: str,
) -> StatusServer:
    """Listen on `[metrics] bind:port` (port 0: any free port) in a background thread."""
    info = NodeInfoCollector(config, key_fingerprint, started=time.time())
    registry = scrape_registry(multiprocess_directory, spool, info)

    def page(refresh_seconds: int) -> str:
        return render(snapshot(config, dicom_address, registry, activity), refresh_seconds)

    server = StatusServer((config.metrics.bind, config.metrics.port), registry, page)
    server.start()
    return server
