"""De-identification in worker processes (dicom_proxy.workers): the same bytes as in process,
refusals and failures come back as they would in process, a dead worker fails one object closed
and the next object gets new workers."""

from __future__ import annotations

import dataclasses
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
from dicom_proxy.models import DeidentifiedObject, ReceivedObject, Refused
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


class _Crashing(Engine):
    """Dies (as a worker hit by a codec crash would) on objects from the AE title CRASH."""

    def deidentify_received(self, received: ReceivedObject) -> DeidentifiedObject:
        if received.calling_ae_title == "CRASH":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().deidentify_received(received)


def _reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_worker_that_dies_on_its_object_fails_it_and_is_replaced() -> None:
    pool = workers.PooledEngine(_Crashing(header_config(), KEY), 1, alone_in_process=False)
    try:
        [before] = pool.worker_pids()
        with pytest.raises(workers.WorkerFailed):
            pool.deidentify_received(dataclasses.replace(_received(), calling_ae_title="CRASH"))
        [after] = pool.worker_pids()
        assert after != before and _reaped(before)  # no zombie left behind
        assert pool.deidentify_received(_received()).encoded == engine().deidentify_received(_received()).encoded
    finally:
        pool.close()
    assert _reaped(after)


def test_workers_killed_between_objects_are_replaced_before_use(pooled: workers.PooledEngine) -> None:
    """Workers ignore SIGTERM, so only a kill ends one; an object must not pay for a worker
    that was already dead when it came."""
    old = pooled.worker_pids()
    assert len(old) == 2 and os.getpid() not in old
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    expected = engine().deidentify_received(_received()).encoded
    for _ in range(4):
        assert pooled.deidentify_received(_received()).encoded == expected
    assert not set(pooled.worker_pids()) & set(old)
    assert all(_reaped(pid) for pid in old)


def test_objects_in_flight_are_bounded_by_the_workers_and_all_get_their_own_answer(
    pooled: workers.PooledEngine,
) -> None:
    """Eight associations at once on two workers: each gets the bytes of its own object."""
    objects = [_received(32 + 8 * i, 32) for i in range(8)]
    expected = [engine().deidentify_received(o).encoded for o in objects]
    results: dict[int, bytes] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, pooled.deidentify_received(objects[i]).encoded))
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [results[i] for i in range(8)] == expected


def test_changed_pixel_data_comes_back_out_of_band_intact(pooled: workers.PooledEngine) -> None:
    """Pixel Data the engine rewrites (here: bits above Bits Stored cleared) is a new buffer
    over the out-of-band size: it must come back whole and equal to the in-process result."""
    rows = columns = 256
    ds = ct_dataset(rows, columns)
    ds.PixelData = b"".join((0xF000 | (i % 4096)).to_bytes(2, "little") for i in range(rows * columns))
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    received = ReceivedObject(buffer.getvalue(), "1.2.840.10008.1.2.1", str(ds.SOPClassUID), "MODALITY")
    in_process = engine().deidentify_received(received)
    in_workers = pooled.deidentify_received(received)
    assert len(rows * columns * b"..") >= workers._OUT_OF_BAND_BYTES
    assert dcmread(BytesIO(in_process.encoded)).PixelData != ds.PixelData  # it was rewritten
    assert in_workers.encoded == in_process.encoded


def test_large_objects_stay_in_the_receiving_process(
    pooled: workers.PooledEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "IN_PROCESS_BYTES", 1024)
    monkeypatch.setattr(workers._Worker, "ask", None)  # any use of a worker would now raise
    received = _received()
    assert pooled.deidentify_received(received).encoded == engine().deidentify_received(received).encoded


def test_close_waits_for_the_object_in_progress_then_native_objects_stay_in_process_and_compressed_ones_fail() -> None:
    pool = workers.PooledEngine(engine(), 1, alone_in_process=False)
    holding = _Holding(pool._engine)
    pool._engine = holding  # type: ignore[assignment]
    pool._alone_in_process = True
    expected = engine().deidentify_received(_received()).encoded
    results: list[bytes] = []
    first = threading.Thread(target=lambda: results.append(pool.deidentify_received(_received()).encoded))
    first.start()
    assert holding.entered.wait(30)
    closing = threading.Thread(target=pool.close)
    closing.start()
    closing.join(0.5)
    assert closing.is_alive()  # waits for the object in progress
    holding.go_on.set()
    first.join(30)
    closing.join(30)
    assert not closing.is_alive() and results == [expected]
    assert pool.worker_pids() == []
    assert pool.deidentify_received(_received()).encoded == expected  # in this process
    plain = _received()
    compressed = ReceivedObject(plain.dataset_bytes, "1.2.840.10008.1.2.4.50", plain.affected_sop_class_uid, "M")
    calls = holding.calls
    with pytest.raises(workers.WorkerFailed):  # never through a codec in the receiving process
        pool.deidentify_received(compressed)
    assert holding.calls == calls


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
