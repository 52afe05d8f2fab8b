"""De-identification in worker processes, so that one node uses every core (issue 14).

The receiving process keeps everything with state: the SCP and its associations, the audit, the
spool. Only the engine's pure work (decode, plan, pixels, tags, verify, encode; no I/O) runs in
`node.worker_processes` forked children. Each association hands over one object at a time and
waits for its answer, so at most `max_associations` objects are in flight: memory stays bounded
per association. Objects larger than `IN_PROCESS_BYTES` are de-identified in the receiving
process: shipping them to a worker would hold them twice.

An object that is the only one in flight is de-identified in the receiving process: no copy
to a worker and back, no hop through the executor's threads (scripts/bench, one sender, 2
cores: 86.9 -> 123.6 images/s). As soon as two objects are in flight, all of them go to the
workers: the receiving process then has the associations' reception and replies to do, and an
engine holding its GIL slowed four senders down (60.9 -> 58.0 images/s with detection).
Compressed objects always go to a worker: their pixels pass through C codecs, and a hostile
codestream that crashes one must take a worker down, not the node.

Workers are forked with the engine already built (an Engine is not picklable: compiled policy,
codecs). A reload (SIGHUP) forks a new pool with the new engine and retires the old one once its
objects are done. A worker that dies fails its object closed (the sender gets a failure status)
and the next object gets a fresh pool.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
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

# The engine a worker forked from this process uses (set just before the fork).
_worker_engine: Engine | None = None


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
    """The result with views of `received` replaced by their place in it (see _Slice)."""
    base = _address(received)
    parts: list[_Slice | bytes] = []
    for part in result.parts:
        if isinstance(part, memoryview) and part.obj is received and part.nbytes:
            start = _address(part) - base
            parts.append(_Slice(start, start + part.nbytes))
        else:
            parts.append(bytes(part))
    return dataclasses.replace(result, parts=tuple(parts))  # type: ignore[arg-type]


def _restored(result: DeidentifiedObject, received: bytes) -> DeidentifiedObject:
    view = memoryview(received)
    parts = tuple(view[p.start : p.stop] if isinstance(p, _Slice) else p for p in result.parts)
    return dataclasses.replace(result, parts=parts)


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


def _noop() -> int:
    return os.getpid()


class PooledEngine(Engine):
    """An Engine whose `deidentify_received` runs in worker processes; everything else (and
    objects over IN_PROCESS_BYTES) is the wrapped engine's, in this process."""

    def __init__(self, engine: Engine, processes: int, alone_in_process: bool = True) -> None:
        self.__dict__.update(engine.__dict__)  # the wrapped engine's state, not a second engine
        self.processes = processes
        self._lock = threading.Lock()
        self._alone_in_process = alone_in_process
        self._in_flight = 0
        self._executor = self._start(engine)
        self._engine = engine

    def _start(self, engine: Engine) -> ProcessPoolExecutor:
        global _worker_engine
        _worker_engine = engine
        executor = ProcessPoolExecutor(
            self.processes, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init
        )
        # The fork context forks every worker at the first submit: do it now, engine in place.
        for future in [executor.submit(_noop) for _ in range(self.processes)]:
            future.result()
        return executor

    def deidentify_received(self, received: ReceivedObject) -> DeidentifiedObject:
        if len(received.dataset_bytes) > IN_PROCESS_BYTES:
            return self._engine.deidentify_received(received)
        native = not UID(received.transfer_syntax_uid).is_encapsulated
        with self._lock:
            alone = self._alone_in_process and native and self._in_flight == 0
            self._in_flight += 1
            executor = self._executor
        try:
            if alone:
                return self._engine.deidentify_received(received)
            return self._in_worker(executor, received)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _in_worker(self, executor: ProcessPoolExecutor, received: ReceivedObject) -> DeidentifiedObject:
        try:
            future: Future[_Answer] = executor.submit(_work, received)
            answer = future.result()
        except BrokenProcessPool:
            self._replace(executor)
            raise WorkerFailed("worker process died") from None
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

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:
                log.error("a de-identification worker process died; starting new workers")
                self._executor = self._start(self._engine)
        # The survivors of a broken pool can wait forever on a queue lock the dead worker held,
        # and they ignore SIGTERM (the executor's own way to end them): kill them, or joining
        # them hangs the executor's thread and the interpreter's exit.
        survivors = list((getattr(broken, "_processes", None) or {}).values())
        broken.shutdown(wait=False)
        for process in survivors:
            if process.is_alive():
                process.kill()

    def close(self) -> None:
        """Let objects in progress finish, then stop the workers."""
        with self._lock:
            executor = self._executor
        executor.shutdown(wait=True)


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
