"""Lifecycle of the node: start, readiness, SIGTERM drain, SIGHUP reload.

Start order makes promise 2 hold: the spool is recovered and forwarders run before the port
listens, so nothing is acknowledged that could not be queued.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING

from pydicom import config as pydicom_config

from dicom_proxy import audit, preflight, sdnotify, tls, workers
from dicom_proxy.admission import AdmittingServer
from dicom_proxy.config import Config, ConfigError, load_config
from dicom_proxy.deidentify.engine import EngineObserver
from dicom_proxy.forward import WorkSignal, run_forwarders
from dicom_proxy.profiles import Profiles
from dicom_proxy.receive import StorePipeline, start_servers
from dicom_proxy.spool import Spool

if TYPE_CHECKING:
    from dicom_proxy.atna import AuditMessageSink
    from dicom_proxy.metrics import Metrics
    from dicom_proxy.web.activity import RecentActivity
    from dicom_proxy.web.server import StatusServer

log = logging.getLogger(__name__)

# How long SIGTERM waits for associations in progress before aborting them.
DRAIN_SECONDS = 30.0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # pynetdicom's INFO/DEBUG output includes original UIDs from C-STORE requests (PHI):
    # keep it at WARNING whatever our own level is.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    quiet_pydicom()
    # Library warnings (pydicom, pynetdicom) may quote values too: none is printed.
    warnings.simplefilter("ignore")


def quiet_pydicom() -> None:
    """pydicom as the node uses it. Its value warnings quote the value ("Invalid value for VR
    DA: '19561103X'"), which may be PHI: values are not validated on read (we re-check the
    structure ourselves and fail closed on errors) nor on write (pydicom only warns there,
    never refuses: the checks cost a regex per value set and their findings were discarded),
    and pydicom never logs."""
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


def build_profiles(
    config: Config, node_key: preflight.NodeKey | None = None, observer: EngineObserver | None = None
) -> Profiles:
    """One Engine per profile, all with the node's one key (promise 3): `node_key`, or the
    configured key (read, never created); `observer` gets stage timings and mask sources."""
    return Profiles(config, (node_key or preflight.read_key(config)).key, observer)


class Observability:
    """The metrics of both processes and the receiver's recent activity ([metrics] on)."""

    def __init__(self, destinations: list[str]) -> None:
        from dicom_proxy import metrics
        from dicom_proxy.web.activity import RecentActivity

        self.directory = metrics.use_multiprocess_directory()
        self.metrics: Metrics = metrics.Metrics()
        self.metrics.declare_destinations(destinations)
        self.activity: RecentActivity = RecentActivity()
        self.server: StatusServer | None = None
        # Registered before the forwarder process is forked: it counts into its own files.
        self.sinks: tuple[audit.Sink, ...] = (metrics.MetricsSink(self.metrics), self.activity)
        for sink in self.sinks:
            audit.add_sink(sink)

    def start_server(self, config: Config, spool: Spool, dicom_address: str, key_fingerprint: str) -> None:
        from dicom_proxy.web.server import start_status_server

        self.server = start_status_server(config, spool, self.directory, self.activity, dicom_address, key_fingerprint)
        host, port = self.server.server_address[:2]
        log.info("metrics and status page on http://%s:%d/", host, port)

    def stop(self) -> None:
        from dicom_proxy.metrics import remove_multiprocess_directory

        if self.server is not None:  # stop() may run twice (a start abandoned half-way)
            self.server.stop()
            self.server = None
        for sink in self.sinks:
            audit.remove_sink(sink)
        remove_multiprocess_directory(self.directory)


def _audit_message_sink(config: Config) -> AuditMessageSink | None:
    """DICOM audit messages ([logging.audit_messages]); registered before the forwarder forks."""
    if config.logging.audit_messages is None:
        return None
    from dicom_proxy.atna import AuditMessageSink

    bind = config.node.bind
    address = "" if bind in ("0.0.0.0", "::", "") else bind
    sink = AuditMessageSink(config.logging.audit_messages, config.node.ae_title, address)
    audit.add_sink(sink)
    return sink


class Node:
    """One running proxy: the SCP and pipeline in this process, the forwarders (one thread per
    destination) in a child process so that receiving and sending use both cores."""

    def __init__(self, config: Config) -> None:
        self.config = config
        problems = preflight.path_problems(config)
        if problems:
            raise ConfigError(problems)
        # Before the spool is opened: a spool without history is what makes a first start.
        self.node_key = preflight.key_for_start(config)
        self.work_signal = WorkSignal()
        names = [d.name for d in config.destinations]
        self.spool = Spool(config.spool, names, on_store=self.work_signal.notify)
        self.observability = Observability(names) if config.metrics.enabled else None
        self.audit_messages = _audit_message_sink(config)
        self.pipeline = StorePipeline(build_profiles(config, self.node_key, self._observer), self.spool)
        self.forward_process: BaseProcess | None = None
        # The listening sockets: node.port first, then [node.tls].port when it has one.
        self.servers: list[AdmittingServer] = []
        self.tls_contexts = tls.build(config)
        self.stopped = threading.Event()

    @property
    def _observer(self) -> EngineObserver | None:
        return self.observability.metrics if self.observability is not None else None

    @property
    def worker_processes(self) -> int:
        configured = self.config.node.worker_processes
        return workers.default_processes() if configured is None else configured

    @property
    def server(self) -> AdmittingServer | None:
        return self.servers[0] if self.servers else None

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Open the spool, start the forwarders, listen. A startup failure raises ConfigError
        (one line per problem) with no child process left behind."""
        try:
            recovered = self.spool.open()
        except OSError as exc:
            raise preflight.as_config_error("spool.directory", self.config.spool.directory, exc) from None
        preflight.record_key(self.config, self.node_key)
        if recovered:
            log.info("spool: %d queued entries recovered for delivery", recovered)
        # Most listening problems show before the forwarder exists (port in use, bad address).
        problems = [preflight.listen_problem(self.config.node)]
        metrics = self.config.metrics
        if self.observability is not None:
            problems.append(preflight.listen_problem_at("metrics", metrics.bind, metrics.port))
        if any(problems):
            raise ConfigError([p for p in problems if p is not None])
        # Fork before any thread exists in this process.
        self.start_forwarders()
        self.pipeline.profiles = self.pipeline.profiles.with_workers(self.worker_processes)
        try:
            self.servers = start_servers(self.config.node, self.pipeline, self.tls_contexts.server)
        except OSError as exc:  # lost a race for the port since the probe
            self._abandon_start()
            raise ConfigError([preflight.listen_error(self.config.node, exc)]) from None
        host, port = self.address
        if self.observability is not None:
            address = f"{self.config.node.ae_title}@{host}:{port}"
            try:
                self.observability.start_server(self.config, self.spool, address, self.node_key.fingerprint)
            except OSError as exc:
                self._abandon_start()
                raise ConfigError([preflight.listen_error_at("metrics", metrics.bind, metrics.port, exc)]) from None
        kind = "DICOM TLS" if self.server is not None and self.server.tls_context is not None else "DICOM"
        log.info(
            "dicom-proxy ready: AE %s listening on %s:%d (%s; secret key fingerprint %s)",
            self.config.node.ae_title,
            host,
            port,
            kind,
            self.node_key.fingerprint,
        )
        for server in self.servers[1:]:
            log.info("dicom-proxy ready: DICOM TLS also on %s:%d", host, server.port)
        audit.emit(
            audit.NodeStarted(
                ae_title=self.config.node.ae_title,
                address=host,
                port=port,
                destinations=tuple(d.name for d in self.config.destinations),
                key_fingerprint=self.node_key.fingerprint,
            )
        )
        sdnotify.notify("READY=1")
        sdnotify.start_watchdog(self.stopped, self.forwarders_alive)

    def _abandon_start(self) -> None:
        """A start that failed half-way leaves no process or thread behind (exit status 2)."""
        for server in self.servers:
            server.shutdown()
        self.servers = []
        self.pipeline.profiles.close()
        self.stop_forwarders(0.0)
        if self.observability is not None:
            self.observability.stop()

    def start_forwarders(self) -> None:
        context = multiprocessing.get_context("fork")
        # A restarted forwarder is forked while the SCP listens: it must not keep the port.
        inherited = [server.socket.fileno() for server in self.servers if server.socket]
        if self.observability is not None and self.observability.server is not None:
            inherited.append(self.observability.server.socket.fileno())
        process = context.Process(
            target=_forward_main,
            args=(self.config, self.work_signal, os.getpid(), inherited),
            name="dicom-proxy-forward",
        )
        process.start()
        self.forward_process = process

    def forwarders_alive(self) -> bool:
        return self.forward_process is not None and self.forward_process.is_alive()

    def check_forwarders(self) -> None:
        """Restart the forwarder process if it died (it never should): queues must drain."""
        if not self.stopped.is_set() and self.forward_process is not None and not self.forwarders_alive():
            log.error("forwarder process exited (code %s); restarting it", self.forward_process.exitcode)
            self.start_forwarders()

    def reload(self) -> None:
        """Re-read the configuration (policy, rules, subject tables) and swap in new profiles
        with new engines; keep the current ones on any error. An object in progress finishes
        with the profile it started with."""
        if self.config.source is None:
            return
        try:
            config = load_config(self.config.source)
            node_key = preflight.read_key(config)
            if node_key.fingerprint != self.node_key.fingerprint:
                # Pseudonyms would change in the middle of a run: only a restart may do that.
                raise ConfigError(
                    [(f"{preflight.KEY_PATH}: the key changed (fingerprint {node_key.fingerprint}, running with "
                     f"{self.node_key.fingerprint}); restart the node to use another key")]
                )
            running = {d.name for d in self.config.destinations}
            for i, profile in enumerate(config.profiles):
                missing = sorted(set(profile.destinations) - running)
                if missing:
                    raise ConfigError([f"profiles[{i}].destinations: {', '.join(missing)} not running; restart to add"])
            profiles = build_profiles(config, node_key, self._observer)
        except ConfigError as exc:
            for problem in exc.problems:
                audit.emit(audit.ReloadRejected(reason=f"reload rejected, keeping the current policy: {problem}"))
            return
        except Exception as exc:
            audit.emit(audit.ReloadRejected(reason=f"reload rejected, keeping the current policy: {exc}"))
            return
        if (config.node, config.destinations, config.spool, config.metrics) != (
            self.config.node,
            self.config.destinations,
            self.config.spool,
            self.config.metrics,
        ):
            log.warning("reload: [node], [[destinations]], [spool] and [metrics] changes take effect on restart")
        previous, self.pipeline.profiles = self.pipeline.profiles, profiles.with_workers(self.worker_processes)
        previous.close()  # after its objects in progress
        self.reload_certificates(config)
        log.info("reload: profiles, subject tables, policy and pixel rules reloaded")
        audit.emit(audit.ConfigReloaded(key_fingerprint=node_key.fingerprint))

    def reload_certificates(self, config: Config) -> None:
        """Re-read the TLS certificates and keys (same configured paths; load_config checked
        them): new handshakes use them, and the forwarder process reloads its own."""
        try:
            contexts = tls.build(config)
        except tls.TLSConfigError as exc:  # changed since load_config read them a moment ago
            for problem in exc.problems:
                audit.emit(audit.ReloadRejected(reason=f"reload rejected, keeping the current certificates: {problem}"))
            return
        self.tls_contexts = contexts
        for server in self.servers:
            if server.tls_context is not None and contexts.server is not None:
                server.tls_context = contexts.server
        process = self.forward_process
        if process is not None and process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGHUP)

    def stop(self, drain_seconds: float = DRAIN_SECONDS) -> None:
        """Stop accepting, let associations in progress finish (bounded), stop forwarders."""
        sdnotify.notify("STOPPING=1")
        if self.servers:
            associations = list(self.servers[0].active_associations)  # one AE behind every port
            for server in self.servers:
                server.shutdown()
            deadline = time.monotonic() + drain_seconds
            while any(a.is_alive() for a in associations) and time.monotonic() < deadline:
                time.sleep(0.05)
            for assoc in associations:
                if assoc.is_alive():
                    assoc.abort()
        self.pipeline.profiles.close()
        for (profile, outcome), count in sorted(self.pipeline.counts.items()):
            log.info("profile %s: %d %s", profile, count, outcome)
        dimse_timeout = max((d.dimse_timeout for d in self.config.destinations if d.type == "dicom"), default=0.0)
        self.stop_forwarders(drain_seconds + dimse_timeout)
        if self.observability is not None:
            self.observability.stop()
        audit.emit(audit.NodeStopped())
        if self.audit_messages is not None:
            self.audit_messages.sender.flush()
            audit.remove_sink(self.audit_messages)

    def stop_forwarders(self, timeout: float) -> None:
        """SIGTERM the forwarder process, wait up to `timeout`, then kill it."""
        self.stopped.set()
        process = self.forward_process
        if process is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)  # type: ignore[arg-type]
            process.join(timeout=timeout)
            if process.is_alive():
                process.kill()
                process.join()


def serve(config: Config) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the policy. Returns the exit status."""
    configure_logging(config.logging.level)
    audit_file = config.logging.audit_file
    try:
        audit.configure(audit_file)
    except OSError as exc:
        assert audit_file is not None  # only opening a file can fail
        raise preflight.as_config_error("logging.audit_file", audit_file, exc) from None
    node = Node(config)
    stop_requested = threading.Event()
    reload_requested = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        reload_requested.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    try:
        node.start()
    except BaseException:
        if node.observability is not None:
            node.observability.stop()  # no metrics folder left behind by a failed start
        raise
    while not stop_requested.wait(0.2):
        if reload_requested.is_set():
            reload_requested.clear()
            node.reload()
        node.check_forwarders()
    log.info("stopping: draining associations in progress")
    node.stop()
    log.info("stopped")
    return 0


_PR_SET_PDEATHSIG = 1


def _forward_main(config: Config, work_signal: WorkSignal, parent_pid: int, inherited: list[int]) -> None:
    """Entry point of the forwarder process."""
    for fd in inherited:
        try:
            os.close(fd)
        except OSError:
            pass
    # Die at once with the receiver (even after kill -9), so a restarted node never has two
    # senders working on the same queue. An object cut off mid-send is simply sent again.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        return
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    # Ctrl-C reaches the whole process group; the receiver decides when forwarders stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The receiver forwards SIGHUP after a successful reload: re-read the certificates.
    reload = threading.Event()
    signal.signal(signal.SIGHUP, lambda signum, frame: reload.set())
    spool = Spool(config.spool, [d.name for d in config.destinations])
    run_forwarders(config, spool, work_signal, stopped, reload)
