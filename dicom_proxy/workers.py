"""De-identification in worker processes, so that one node uses every core (issue 14).

The receiving process keeps everything with state: the SCP and its associations, the audit, the
spool. Only the engine's pure work (decode, plan, pixels, tags, verify, encode; no I/O) runs in
`node.worker_processes` forked children. Each association hands over one object at a time and
waits for its answer, so at most `max_associations` objects are in flight: memory stays bounded
per association. Objects larger than `IN_PROCESS_BYTES` are de-identified in the receiving
process: shipping them to a worker would hold them twice.

An object that is the only one in flight is de-identified in the receiving process: no copy
to a worker and back (scripts/bench, one sender, 2 cores: 86.9 -> 123.6 images/s). As soon as
two objects are in flight, all of them go to the workers: the receiving process then has the
associations' reception and replies to do, and an engine holding its GIL slowed four senders
down (60.9 -> 58.0 images/s with detection). Compressed objects always go to a worker: their
pixels pass through C codecs, and a hostile codestream that crashes one must take a worker
down, not the node.

Each worker has its own pipe, and the association's thread that took a worker talks to it
directly: the object's bytes go out of band (pickle protocol 5), so they are written to the pipe
once and never pickled. A ProcessPoolExecutor did this through a manager thread, two queues and
a pickled copy each way; in the receiving process that thread held the GIL for 43% of the time
the process held it (py-spy, four senders, detection on).

Workers are forked with the engine already built (an Engine is not picklable: compiled policy,
codecs). A reload (SIGHUP) forks new workers with the new engine and retires the old ones once
their objects are done. A worker that dies fails its object closed (the sender gets a failure
status) and is replaced; a worker found dead between objects is replaced before it is used.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import pickle
import select
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
from queue import SimpleQueue
from typing import Any

import numpy as np
from pydicom.uid import UID

from dicom_proxy.deidentify import Engine
from dicom_proxy.models import DeidentifiedObject, Dropped, ObjectIdentity, ReceivedObject, Refused
from dicom_proxy.part10 import CODEC_LOCK
from dicom_proxy.status import StoreStatus

log = logging.getLogger(__name__)

IN_PROCESS_BYTES = 64 * 1024 * 1024
_PR_SET_PDEATHSIG = 1
# Parts of a result at least this long cross the pipe out of band (no pickled copy).
_OUT_OF_BAND_BYTES = 64 * 1024
# How long a retiring worker gets to exit after it is asked to.
_STOP_SECONDS = 5.0

# The engine a worker forked from this process uses (set just before the fork).
_worker_engine: Engine | None = None
# Workers are forked one at a time: one forked while another's pipe was half set up would hold
# that pipe's child end open, and `_worker_engine` is set for exactly one fork.
_FORK_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Slice:
    """Stands for a part of the result that is a view of the received bytes (Pixel Data passed
    through untouched): the receiving process has those bytes, so only their place travels."""

    start: int
    stop: int


@dataclass(frozen=True)
class _Refusal:
    reason: str
    status: StoreStatus
    identity: ObjectIdentity | None


@dataclass(frozen=True)
class _Drop:
    filter_name: str
    identity: ObjectIdentity | None


@dataclass(frozen=True)
class _Failure:
    exception_type: str


class WorkerFailed(Exception):
    """An unexpected error in a worker; carries the exception's type name only (no values)."""


def _address(buffer: bytes | memoryview) -> int:
    return int(np.frombuffer(buffer, dtype=np.uint8).__array_interface__["data"][0])


def _portable(result: DeidentifiedObject, received: bytes) -> DeidentifiedObject:
    """The result with views of `received` replaced by their place in it (see _Slice), and
    large parts marked to cross the pipe out of band."""
    base = _address(received)
    parts: list[_Slice | bytes | pickle.PickleBuffer] = []
    for part in result.parts:
        if isinstance(part, memoryview) and part.obj is received and part.nbytes:
            start = _address(part) - base
            parts.append(_Slice(start, start + part.nbytes))
        elif len(part) >= _OUT_OF_BAND_BYTES:
            parts.append(pickle.PickleBuffer(part))
        else:
            parts.append(bytes(part))
    return dataclasses.replace(result, parts=tuple(parts))  # type: ignore[arg-type]


def _restored(result: DeidentifiedObject, received: bytes) -> DeidentifiedObject:
    view = memoryview(received)
    parts = tuple(view[p.start : p.stop] if isinstance(p, _Slice) else p for p in result.parts)
    return dataclasses.replace(result, parts=parts)


def _send(connection: Connection, message: object) -> None:
    """Pickle `message`; every PickleBuffer in it goes to the pipe as it is (no pickled copy)."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    connection.send_bytes(len(buffers).to_bytes(4, "little") + header)
    for buffer in buffers:
        connection.send_bytes(buffer.raw())


def _receive(connection: Connection) -> Any:
    """The message `_send` wrote; its out-of-band buffers come back as bytes."""
    header = connection.recv_bytes()
    buffers = [connection.recv_bytes() for _ in range(int.from_bytes(header[:4], "little"))]
    return pickle.loads(memoryview(header)[4:], buffers=buffers)


class _Recording:
    """Stands in for the engine's observer (the metrics) in a worker: records each call, which
    the receiving process replays on the real observer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


@dataclass(frozen=True)
class _Answer:
    outcome: DeidentifiedObject | _Refusal | _Drop | _Failure
    observed: list[tuple[str, tuple[Any, ...]]]


def _work(received: ReceivedObject) -> _Answer:
    """Runs in a worker: never raises (exceptions with custom fields do not cross processes)."""
    assert _worker_engine is not None
    recording = _Recording()
    if _worker_engine._observer is not None:
        _worker_engine._observer = recording
    outcome: DeidentifiedObject | _Refusal | _Drop | _Failure
    try:
        outcome = _portable(_worker_engine.deidentify_received(received), received.dataset_bytes)
    except Refused as exc:
        outcome = _Refusal(exc.reason, exc.status, exc.identity)
    except Dropped as exc:  # a profile filter dropped it (Success, nothing stored)
        outcome = _Drop(exc.filter_name, exc.identity)
    except Exception as exc:
        outcome = _Failure(type(exc).__name__)
    return _Answer(outcome, recording.calls)


def _worker_init() -> None:
    # Die with the receiving process (even after kill -9); its signals are not ours: the node
    # stops workers itself after the associations in progress are done.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    # Forked while a receiving thread may have held the codec lock: that thread is not here.
    if CODEC_LOCK.locked():
        CODEC_LOCK.release()


def _serve(connection: Connection) -> None:
    """A worker's life: objects in, answers out, until asked to stop (None) or orphaned."""
    _worker_init()
    while True:
        try:
            received = _receive(connection)
        except (EOFError, OSError):
            return
        if received is None:
            return
        _send(connection, _work(received))


class _Worker:
    """One forked worker process and the receiving process's end of its pipe. Used by one
    association thread at a time (the pool hands it out)."""

    def __init__(self, engine: Engine) -> None:
        global _worker_engine
        with _FORK_LOCK:
            _worker_engine = engine  # under the lock: two pools may fork at once
            self.connection, child = Pipe(duplex=True)
            self.pid = os.fork()
            if self.pid == 0:  # the worker
                status = 0
                try:
                    self.connection.close()
                    _serve(child)
                except BaseException:
                    status = 1
                finally:
                    os._exit(status)
            child.close()
        # Readable once the process has exited: how a death is told from a slow object.
        self._exited = os.pidfd_open(self.pid)
        self._poll = select.poll()
        self._poll.register(self.connection.fileno(), select.POLLIN)
        self._poll.register(self._exited, select.POLLIN)

    def alive(self) -> bool:
        return not select.select([self._exited], [], [], 0)[0]

    def ask(self, received: ReceivedObject) -> _Answer:
        """The worker's answer for `received`; WorkerFailed when it died on the way."""
        outgoing = dataclasses.replace(received, dataset_bytes=pickle.PickleBuffer(received.dataset_bytes))  # type: ignore[arg-type]
        try:
            _send(self.connection, outgoing)
            ready = {fd for fd, _ in self._poll.poll()}
            if self.connection.fileno() not in ready:
                raise EOFError  # exited without a word
            answer: _Answer = _receive(self.connection)
            return answer
        except (EOFError, OSError):
            raise WorkerFailed("worker process died") from None

    def stop(self) -> None:
        """Ask the worker to exit; kill it if it does not (stuck); reap it either way."""
        try:
            _send(self.connection, None)
        except OSError:
            pass  # dead already
        if not select.select([self._exited], [], [], _STOP_SECONDS)[0]:
            os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.connection.close()
        os.close(self._exited)


class PooledEngine(Engine):
    """An Engine whose `deidentify_received` runs in worker processes; everything else (and
    objects over IN_PROCESS_BYTES) is the wrapped engine's, in this process."""

    def __init__(self, engine: Engine, processes: int, alone_in_process: bool = True) -> None:
        self.__dict__.update(engine.__dict__)  # the wrapped engine's state, not a second engine
        self.processes = processes
        self._engine = engine
        self._alone_in_process = alone_in_process
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._in_flight = 0
        self._closed = False
        self._idle: SimpleQueue[_Worker] = SimpleQueue()
        self._workers = [self._fork() for _ in range(processes)]
        for worker in self._workers:
            self._idle.put(worker)

    def _fork(self) -> _Worker:
        return _Worker(self._engine)

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [worker.pid for worker in self._workers]

    def deidentify_received(self, received: ReceivedObject) -> DeidentifiedObject:
        if len(received.dataset_bytes) > IN_PROCESS_BYTES:
            return self._engine.deidentify_received(received)
        native = not UID(received.transfer_syntax_uid).is_encapsulated
        with self._lock:
            if self._closed and not native:
                # A reload retired this pool while the object was on its way, and its pixels
                # must not pass through a codec in this process: fail it (the sender retries).
                raise WorkerFailed("workers retired by a reload")
            # Closed: a native object is done here, with the engine it was received for.
            in_process = native and (self._closed or (self._alone_in_process and self._in_flight == 0))
            self._in_flight += 1
        try:
            if in_process:
                return self._engine.deidentify_received(received)
            return self._in_worker(received)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._settled.notify_all()

    def _in_worker(self, received: ReceivedObject) -> DeidentifiedObject:
        worker = self._idle.get()
        try:
            if not worker.alive():  # killed between objects (the OOM killer, an operator)
                worker = self._replaced(worker)
            answer = worker.ask(received)
        except WorkerFailed:
            worker = self._replaced(worker)
            raise
        finally:
            self._idle.put(worker)
        observer = self._engine._observer
        if observer is not None:
            for name, args in answer.observed:
                getattr(observer, name)(*args)
        outcome = answer.outcome
        if isinstance(outcome, _Refusal):
            refused = Refused(outcome.reason, outcome.status)
            refused.identity = outcome.identity
            raise refused
        if isinstance(outcome, _Drop):
            dropped = Dropped(outcome.filter_name)
            dropped.identity = outcome.identity
            raise dropped
        if isinstance(outcome, _Failure):
            raise WorkerFailed(outcome.exception_type)
        return _restored(outcome, received.dataset_bytes)

    def _replaced(self, dead: _Worker) -> _Worker:
        log.error("a de-identification worker process died; starting a new one")
        dead.stop()  # reaps it
        fresh = self._fork()
        with self._lock:
            self._workers = [fresh if worker is dead else worker for worker in self._workers]
        return fresh

    def close(self) -> None:
        """Let objects in progress finish, then stop the workers."""
        with self._lock:
            self._closed = True
            self._settled.wait_for(lambda: self._in_flight == 0)
            retiring, self._workers = self._workers, []
        for worker in retiring:
            worker.stop()


def with_workers(engine: Engine, processes: int) -> Engine:
    """`engine` itself (processes 0) or a PooledEngine over `processes` workers."""
    if processes <= 0:
        return engine
    return PooledEngine(engine, processes)


def close(engine: Engine) -> None:
    """Stop the workers of a PooledEngine (others have none)."""
    if isinstance(engine, PooledEngine):
        engine.close()


def default_processes() -> int:
    """One worker per core; none on a single core (the receiving process does the work)."""
    cores = os.cpu_count() or 1
    return cores if cores > 1 else 0
