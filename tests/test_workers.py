"""De-identification in worker processes (dicom_proxy.workers): the same bytes as in process,
refusals and failures come back as they would in process, a dead worker fails one object closed
and the next object gets new workers."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from dicom_proxy import workers
from dicom_proxy.config import parse_config
from dicom_proxy.deidentify import Engine
from dicom_proxy.deidentify.engine import Stage
from dicom_proxy.models import ReceivedObject, Refused
from tests.dicomfactory import KEY, ct_dataset, engine, header_config


def _received(rows: int = 64, columns: int = 64) -> ReceivedObject:
    ds = ct_dataset(rows, columns)
    # 12 bits stored: values below 4096, so nothing in the unused high bits needs cleaning
    ds.PixelData = b"".join(((i * 37) % 4096).to_bytes(2, "little") for i in range(rows * columns))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)  # the data set as a C-STORE carries it, Explicit VR Little Endian
    return ReceivedObject(buffer.getvalue(), "1.2.840.10008.1.2.1", str(ds.SOPClassUID), "MODALITY")


@pytest.fixture
def pooled() -> Iterator[workers.PooledEngine]:
    pool = workers.PooledEngine(engine(), 2, alone_in_process=False)  # every object to a worker
    yield pool
    pool.close()


def test_workers_produce_the_bytes_the_engine_produces_in_process(pooled: workers.PooledEngine) -> None:
    received = _received()
    in_process = engine().deidentify_received(received)
    in_workers = pooled.deidentify_received(received)
    assert in_workers.encoded == in_process.encoded
    assert in_workers.relative_path == in_process.relative_path
    assert in_workers.identity == in_process.identity
    # Pixel Data passed through comes back as a view of the received bytes, not a copy.
    assert any(isinstance(p, memoryview) and p.obj is received.dataset_bytes for p in in_workers.parts)
    assert dcmread(BytesIO(in_workers.encoded)).PixelData == dcmread(BytesIO(in_process.encoded)).PixelData


def test_refusal_comes_back_with_its_status_and_identity(pooled: workers.PooledEngine) -> None:
    received = _received()
    broken = ReceivedObject(
        received.dataset_bytes[:-1000], received.transfer_syntax_uid, received.affected_sop_class_uid, "MODALITY"
    )
    with pytest.raises(Refused) as in_process:
        engine().deidentify_received(broken)
    with pytest.raises(Refused) as in_workers:
        pooled.deidentify_received(broken)
    assert (in_workers.value.reason, in_workers.value.status) == (in_process.value.reason, in_process.value.status)
    assert in_workers.value.identity == in_process.value.identity


def test_dead_worker_fails_its_object_and_the_next_object_gets_new_workers(pooled: workers.PooledEngine) -> None:
    pids = {pooled._executor.submit(os.getpid).result() for _ in range(20)}
    assert pids and os.getpid() not in pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(workers.WorkerFailed):
        pooled.deidentify_received(_received())
    result = pooled.deidentify_received(_received())
    assert result.encoded == engine().deidentify_received(_received()).encoded


def test_no_worker_of_a_broken_pool_survives(pooled: workers.PooledEngine) -> None:
    """Workers ignore SIGTERM; the survivors of a broken pool must still go (a survivor stuck on
    a queue lock once kept the test run from exiting)."""
    import time

    old = list(pooled._executor._processes.values())  # type: ignore[union-attr]
    assert len(old) == 2
    os.kill(old[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
    with pytest.raises(workers.WorkerFailed):
        pooled.deidentify_received(_received())
    deadline = time.monotonic() + 10
    while any(p.is_alive() for p in old) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.is_alive() for p in old)
    assert pooled.deidentify_received(_received()).encoded == engine().deidentify_received(_received()).encoded


def test_large_objects_stay_in_the_receiving_process(
    pooled: workers.PooledEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "IN_PROCESS_BYTES", 1024)
    pooled._executor.shutdown(wait=True)  # any use of the workers would now raise
    received = _received()
    assert pooled.deidentify_received(received).encoded == engine().deidentify_received(received).encoded


def test_worker_processes_config() -> None:
    base = {"destinations": [{"name": "x", "type": "folder", "path": "out"}]}
    assert parse_config(base).node.worker_processes is None  # one per core
    assert parse_config({**base, "node": {"worker_processes": 0}}).node.worker_processes == 0
    with pytest.raises(Exception, match=r"node\.worker_processes: must be 0-256"):
        parse_config({**base, "node": {"worker_processes": -1}})
    assert workers.with_workers(engine(), 0).__class__ is not workers.PooledEngine


class _Observer:
    def __init__(self) -> None:
        self.stages: list[str] = []

    def stage_finished(self, stage: Stage, seconds: float) -> None:
        self.stages.append(stage.value)

    def pixels_masked(self, sources: tuple[str, ...]) -> None:
        pass


def test_stage_timings_measured_in_a_worker_reach_the_nodes_observer() -> None:
    observer = _Observer()
    pool = workers.PooledEngine(Engine(header_config(), KEY, observer), 1, alone_in_process=False)
    try:
        pool.deidentify_received(_received())
    finally:
        pool.close()
    assert observer.stages == [stage.value for stage in Stage]


class _Holding:
    """Stands in for the in-process engine: counts its objects and holds the first one until
    told to go on."""

    def __init__(self, wrapped: Engine) -> None:
        self.wrapped = wrapped
        self._observer = None
        self.calls = 0
        self.entered = threading.Event()
        self.go_on = threading.Event()

    def deidentify_received(self, received: ReceivedObject) -> object:
        self.calls += 1
        self.entered.set()
        assert self.go_on.wait(30)
        return self.wrapped.deidentify_received(received)


def test_a_lone_object_stays_in_the_receiving_process_and_a_concurrent_one_goes_to_a_worker() -> None:
    pool = workers.PooledEngine(engine(), 1)
    holding = _Holding(pool._engine)
    pool._engine = holding  # type: ignore[assignment]
    expected = engine().deidentify_received(_received()).encoded
    results: list[bytes] = []
    try:
        first = threading.Thread(target=lambda: results.append(pool.deidentify_received(_received()).encoded))
        first.start()
        assert holding.entered.wait(30)
        # The first object is in flight in this process: the second goes to the worker.
        assert pool.deidentify_received(_received()).encoded == expected
        assert holding.calls == 1
        holding.go_on.set()
        first.join(30)
        assert results == [expected]
        # Alone again: in this process.
        assert pool.deidentify_received(_received()).encoded == expected
        assert holding.calls == 2
    finally:
        holding.go_on.set()
        pool.close()


def test_a_lone_compressed_object_still_goes_to_a_worker() -> None:
    """Its pixels pass through C codecs: a codestream that crashes one takes a worker down,
    never the node."""
    pool = workers.PooledEngine(engine(), 1)
    holding = _Holding(pool._engine)
    holding.go_on.set()
    pool._engine = holding  # type: ignore[assignment]
    plain = _received()
    claimed_jpeg = ReceivedObject(plain.dataset_bytes, "1.2.840.10008.1.2.4.50", plain.affected_sop_class_uid, "M")
    try:
        with pytest.raises(Refused):  # native bytes said to be JPEG: the worker refuses them
            pool.deidentify_received(claimed_jpeg)
        assert holding.calls == 0
        pool.deidentify_received(plain)
        assert holding.calls == 1
    finally:
        pool.close()
