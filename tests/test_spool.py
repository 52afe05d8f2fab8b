"""Spool: durable write, per-destination queues, recovery after a crash, limits."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dicom_proxy.config import SpoolConfig
from dicom_proxy.models import DeidentifiedObject
from dicom_proxy.spool import Spool, SpoolFull


def _object(n: int, size: int = 100) -> DeidentifiedObject:
    return DeidentifiedObject(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=f"2.25.{n}",
        study_instance_uid="2.25.1",
        series_instance_uid="2.25.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        parts=(bytes([n % 256]) * size,),
    )


def _spool(tmp_path: Path, destinations: tuple[str, ...] = ("a", "b"), **limits: int) -> Spool:
    config = SpoolConfig(directory=tmp_path / "spool", max_bytes=limits.get("max_bytes", 10**9), min_free_bytes=0)
    spool = Spool(config, destinations)
    spool.open()
    return spool


def test_store_enqueues_for_every_destination_in_order(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    for n in range(5):
        spool.store(_object(n))
    for destination in ("a", "b"):
        pending = spool.pending(destination)
        assert [e.path.read_bytes()[0] for e in pending] == [0, 1, 2, 3, 4]
        assert all(e.path.name.endswith(f"2.25.{i}.dcm") for i, e in enumerate(pending))
    assert not list(spool.incoming.iterdir())
    assert spool.held_bytes == 5 * 100 * 2


def test_files_and_directories_are_private(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    entry = spool.store(_object(1))[0]
    assert stat.S_IMODE(entry.path.stat().st_mode) == 0o600
    for folder in (spool.root, spool.incoming, spool.queue_dir("a"), spool.quarantine_dir("a")):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_complete_removes_only_that_destinations_entry(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.store(_object(1))
    spool.complete(spool.pending("a")[0])
    assert spool.pending("a") == []
    assert len(spool.pending("b")) == 1
    assert spool.held_bytes == 100


def test_recover_removes_partial_files_and_keeps_queued_entries(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.store(_object(1))
    spool.store(_object(2))
    # A crash in the middle of a write leaves a temporary file in incoming/.
    (spool.incoming / "00000000000000000001-000000-2.25.9.dcm.tmp").write_bytes(b"half")
    reopened = Spool(spool.config, ("a", "b"))
    assert reopened.open() == 4
    assert not list(reopened.incoming.iterdir())
    assert [e.path.read_bytes()[0] for e in reopened.pending("a")] == [1, 2]
    assert reopened.held_bytes == 400


def test_byte_limit_raises_spool_full_and_frees_up_after_drain(tmp_path: Path) -> None:
    spool = _spool(tmp_path, destinations=("a",), max_bytes=250)
    spool.store(_object(1))
    spool.store(_object(2))
    with pytest.raises(SpoolFull):
        spool.store(_object(3))
    assert len(spool.pending("a")) == 2
    spool.complete(spool.pending("a")[0])
    spool.store(_object(3))
    assert len(spool.pending("a")) == 2


def test_quarantine_retry_and_purge(tmp_path: Path) -> None:
    spool = _spool(tmp_path, destinations=("a",))
    spool.store(_object(1))
    spool.store(_object(2))
    first, second = spool.pending("a")
    spool.quarantine(first, {"reason": "destination refused the object (0xC000)", "status": 0xC000})
    assert spool.pending("a") == [second]
    quarantined = spool.quarantined("a")
    assert [p.name for p in quarantined] == [first.path.name]
    assert "0xC000" in Path(str(quarantined[0]) + ".reason.json").read_text()
    assert spool.retry_quarantined("a") == 1
    assert [e.path.name for e in spool.pending("a")] == [first.path.name, second.path.name]
    spool.quarantine(spool.pending("a")[0], {"reason": "x"})
    assert spool.purge_quarantined("a") == 1
    assert spool.quarantined("a") == []
    assert not any(p.name.endswith(".json") for p in spool.quarantine_dir("a").iterdir())


def test_failed_link_leaves_no_partial_entries(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    os.chmod(spool.queue_dir("b"), 0o500)
    try:
        if os.geteuid() == 0:
            # root ignores directory permissions: remove the queue instead to make link fail
            os.chmod(spool.queue_dir("b"), 0o700)
            os.rmdir(spool.queue_dir("b"))
        with pytest.raises(OSError):
            spool.store(_object(1))
    finally:
        if spool.queue_dir("b").exists():
            os.chmod(spool.queue_dir("b"), 0o700)
    assert spool.pending("a") == []
    assert not list(spool.incoming.iterdir())
