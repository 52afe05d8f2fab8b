"""Faults with real processes, real signals and real peers: promise 2 (nothing acknowledged is
lost) and fail-closed admission under pressure."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ImplicitVRLittleEndian

from tests.corpus import write_corpus
from tests.netpeers import (
    Proxy,
    StoreSCP,
    base_config,
    dicom_destination,
    free_port,
    pynetdicom_send_files,
    run_in_thread,
    storescu,
    wait_until,
    write_config,
)
from tests.scripted_scp import ScriptedSCP

pytestmark = pytest.mark.network


def _proxy(tmp_path: Path, destinations: list[dict[str, object]], env: dict[str, str] | None = None,
           **overrides: object) -> Proxy:
    config = write_config(tmp_path / "proxy.toml", base_config(tmp_path, destinations, **overrides))
    return Proxy(config, tmp_path, env=env)


def _queue(tmp_path: Path, name: str) -> list[Path]:
    folder = tmp_path / "spool" / "queues" / name
    return sorted(folder.glob("*.dcm")) if folder.is_dir() else []


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dicom_proxy", *args, "--config", str(tmp_path / "proxy.toml")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )


def test_kill_9_after_success_then_restart_delivers_everything(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=2, series_per_study=2, images_per_series=3)
    archive_port = free_port()
    proxy = _proxy(tmp_path, [dicom_destination("research", archive_port)])
    with proxy:
        sent = storescu(proxy.port, corpus)
        assert sent.statuses == ["Success"] * len(corpus), sent.output
        proxy.kill()
    # The forwarder process dies with the receiver: no orphan keeps working on the queue.
    assert wait_until(lambda: not _processes_using(tmp_path / "proxy.toml"), 10)
    # What a crash in the middle of the next write would leave behind.
    (tmp_path / "spool" / "incoming" / "00000000000000000001-000000-2.25.1.dcm.tmp").write_bytes(b"partial")
    assert len(_queue(tmp_path, "research")) == len(corpus)
    with StoreSCP(tmp_path / "archive", archive_port) as scp, proxy:
        assert wait_until(lambda: len(scp.files()) == len(corpus), 60), len(scp.files())
        assert wait_until(lambda: not _queue(tmp_path, "research"), 30)
        assert not list((tmp_path / "spool" / "incoming").iterdir())
        assert "recovered for delivery" in proxy.log()
        assert proxy.terminate() == 0


def _processes_using(config: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(config).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_forwarder_process_is_restarted_if_it_dies(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=3)
    archive_port = free_port()
    # No de-identification workers: the forwarder is then the node's only child process.
    with _proxy(tmp_path, [dicom_destination("research", archive_port)], node={"worker_processes": 0}) as proxy:
        assert proxy.process is not None
        children = [pid for pid in _processes_using(tmp_path / "proxy.toml") if pid != proxy.process.pid]
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)
        assert wait_until(lambda: "restarting it" in proxy.log(), 10)
        assert storescu(proxy.port, corpus).statuses == ["Success"] * 3
        with StoreSCP(tmp_path / "archive", archive_port) as scp:
            assert wait_until(lambda: len(scp.files()) == 3, 30)
        assert proxy.terminate() == 0


def test_out_of_resources_is_retried_until_delivered(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=3)
    archive_port = free_port()
    with ScriptedSCP(archive_port, statuses=[0xA700, 0xA702, 0x0000]) as archive, _proxy(
        tmp_path, [dicom_destination("research", archive_port)]
    ) as proxy:
        assert storescu(proxy.port, corpus).statuses == ["Success"] * 3
        assert wait_until(lambda: len(archive.stored) == 3, 30)
        assert archive.answered[:2] == [0xA700, 0xA702]
        assert wait_until(lambda: not _queue(tmp_path, "research"), 10)
        assert "out of resources (0xA700)" in proxy.log()


def test_permanent_refusal_is_quarantined_and_spool_retry_resends(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=2)
    archive_port = free_port()
    with _proxy(tmp_path, [dicom_destination("research", archive_port)]) as proxy:
        with ScriptedSCP(archive_port, statuses=[0xC000]) as broken:
            assert storescu(proxy.port, corpus).statuses == ["Success"] * 2
            quarantine = tmp_path / "spool" / "quarantine" / "research"
            assert wait_until(lambda: len(list(quarantine.glob("*.dcm"))) == 2, 30)
            assert broken.stored == []
        reasons = [p.read_text() for p in quarantine.glob("*.reason.json")]
        assert len(reasons) == 2 and all("0xC000" in r for r in reasons)
        status = _cli(tmp_path, "spool", "status", "--json")
        assert status.returncode == 0
        [research] = json.loads(status.stdout)
        assert (research["destination"], research["queued"], research["quarantined"]) == ("research", 0, 2)
        with ScriptedSCP(archive_port, statuses=[0x0000]) as fixed:
            retried = _cli(tmp_path, "spool", "retry")
            assert retried.returncode == 0 and "2 quarantined entries queued again" in retried.stdout
            assert wait_until(lambda: len(fixed.stored) == 2, 30)
        assert not list(quarantine.glob("*"))


def test_one_dead_destination_does_not_delay_the_live_one(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=2, series_per_study=1, images_per_series=5)
    live_port, dead_port = free_port(), free_port()
    destinations = [
        dicom_destination("dead", dead_port, retry_initial_delay=5.0, retry_max_delay=30.0),
        dicom_destination("live", live_port),
    ]
    with StoreSCP(tmp_path / "live", live_port) as live, _proxy(tmp_path, destinations) as proxy:
        started = time.monotonic()
        assert storescu(proxy.port, corpus).statuses == ["Success"] * len(corpus)
        assert wait_until(lambda: len(live.files()) == len(corpus), 20)
        elapsed = time.monotonic() - started
        assert len(_queue(tmp_path, "dead")) == len(corpus)
    # Informational: the live destination is never held back by the dead one's 5 s backoff.
    print(f"live destination complete after {elapsed:.2f}s")


def test_spool_limit_answers_out_of_resources_then_recovers_after_drain(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=6)
    size = corpus[0].stat().st_size
    archive_port = free_port()
    spool = {"max_bytes": int(size * 3.5)}
    with _proxy(tmp_path, [dicom_destination("research", archive_port)], spool=spool) as proxy:
        statuses = pynetdicom_send_files(proxy.port, corpus)
        assert statuses[:3] == [0x0000] * 3
        assert statuses[3:] == [0xA700] * 3
        assert len(_queue(tmp_path, "research")) == 3
        with StoreSCP(tmp_path / "archive", archive_port) as scp:
            assert wait_until(lambda: len(scp.files()) == 3, 30)
            assert wait_until(lambda: not _queue(tmp_path, "research"), 10)
            assert pynetdicom_send_files(proxy.port, corpus[3:]) == [0x0000] * 3
            assert wait_until(lambda: len(scp.files()) == 6, 30)


def test_sigterm_during_transfer_exits_0_and_loses_nothing(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=3, series_per_study=2, images_per_series=20, size=256)
    archive_port = free_port()
    proxy = _proxy(tmp_path, [dicom_destination("research", archive_port)])
    results = []
    with proxy:
        sender = run_in_thread(lambda: results.append(storescu(proxy.port, corpus)))
        assert wait_until(lambda: len(_queue(tmp_path, "research")) >= 5, 30)
        assert proxy.terminate() == 0
        sender.join(60)
    acknowledged = results[0].statuses.count("Success")
    assert 5 <= acknowledged
    queued = _queue(tmp_path, "research")
    # Every acknowledged object is queued, complete and parseable; no temporary files remain.
    assert len(queued) >= acknowledged
    assert not list((tmp_path / "spool" / "incoming").iterdir())
    for path in queued:
        assert dcmread(path).PatientIdentityRemoved == "YES"
    with StoreSCP(tmp_path / "archive", archive_port) as scp, proxy:
        assert wait_until(lambda: len(scp.files()) == len(queued), 60)


def test_destination_accepting_only_implicit_vr_gets_converted_objects(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=2)
    archive_port = free_port()
    with ScriptedSCP(archive_port, transfer_syntaxes=[ImplicitVRLittleEndian]) as archive, _proxy(
        tmp_path, [dicom_destination("research", archive_port)]
    ) as proxy:
        assert storescu(proxy.port, corpus).statuses == ["Success"] * 2
        assert wait_until(lambda: len(archive.stored) == 2, 30), proxy.log()
        assert all(ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian for ds in archive.stored)
        assert {ds.PixelData for ds in archive.stored} == {dcmread(p).PixelData for p in corpus}


def test_systemd_notify_ready_and_stopping(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(30)
        folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "out")}
        proxy = _proxy(tmp_path, [folder], env={"NOTIFY_SOCKET": address})
        with proxy:
            assert listener.recv(4096) == b"READY=1"
            # READY=1 is sent only once the port accepts connections.
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5):
                pass
            proxy.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            assert listener.recv(4096) == b"STOPPING=1"
            assert proxy.process.wait(30) == 0  # type: ignore[union-attr]


def test_refuses_to_start_when_secret_key_is_readable_by_others(tmp_path: Path) -> None:
    key = tmp_path / "secret.key"
    key.write_text("00" * 32 + "\n")
    os.chmod(key, 0o644)
    folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "out")}
    write_config(tmp_path / "proxy.toml", base_config(tmp_path, [folder]))
    result = _cli(tmp_path, "serve")
    assert result.returncode == 2
    assert "accessible by group or others" in result.stderr
    assert "00" * 32 not in result.stderr


def test_sighup_reloads_policy_and_rejects_a_bad_one(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=1)
    original_uid = str(dcmread(corpus[0]).SOPInstanceUID)
    out = tmp_path / "out"
    folder = {"name": "archive", "type": "folder", "path": str(out)}
    config_path = tmp_path / "proxy.toml"

    def delivered_uids() -> set[str]:
        return {p.stem for p in out.rglob("*.dcm")}

    with _proxy(tmp_path, [folder]) as proxy:
        assert storescu(proxy.port, corpus).statuses == ["Success"]
        assert wait_until(lambda: len(delivered_uids()) == 1, 30)
        assert original_uid not in delivered_uids()

        write_config(config_path, base_config(tmp_path, [folder], deidentify={"options": ["retain_uids"]}))
        proxy.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        assert wait_until(lambda: "policy and pixel rules reloaded" in proxy.log(), 30)
        assert storescu(proxy.port, corpus).statuses == ["Success"]
        assert wait_until(lambda: original_uid in delivered_uids(), 30)

        # A bad policy is rejected and the one in force stays.
        write_config(config_path, base_config(tmp_path, [folder], deidentify={"options": ["retain_everything"]}))
        proxy.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        assert wait_until(lambda: "reload rejected" in proxy.log(), 30)
        for path in out.rglob("*.dcm"):
            path.unlink()
        assert storescu(proxy.port, corpus).statuses == ["Success"]
        assert wait_until(lambda: delivered_uids() == {original_uid}, 30)
        assert proxy.terminate() == 0


def test_big_endian_object_converted_for_a_little_endian_only_destination(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    big_endian = get_testdata_file("MR_small_bigendian.dcm")
    assert big_endian is not None
    archive_port = free_port()
    with ScriptedSCP(archive_port, transfer_syntaxes=[ImplicitVRLittleEndian]) as archive, _proxy(
        tmp_path, [dicom_destination("research", archive_port)]
    ) as proxy:
        assert pynetdicom_send_files(proxy.port, [Path(big_endian)]) == [0x0000]
        assert wait_until(lambda: len(archive.stored) == 1, 30), proxy.log()
    received = archive.stored[0]
    assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert (received.pixel_array == dcmread(big_endian).pixel_array).all()


def test_a_failing_entry_does_not_stop_its_forwarder(tmp_path: Path) -> None:
    import threading

    from dicom_proxy.config import FolderDestination, NodeConfig, SpoolConfig
    from dicom_proxy.forward import Delivery, Forwarder, Outcome
    from dicom_proxy.models import DeidentifiedObject
    from dicom_proxy.spool import Spool

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        def send(self, entry):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == 1:
                raise OSError("disk trouble while quarantining")
            return Outcome(Delivery.DELIVERED)

        def expect(self, entries):  # type: ignore[no-untyped-def]
            pass

        def close(self) -> None:
            pass

    spool = Spool(SpoolConfig(directory=tmp_path / "spool", min_free_bytes=0), ["d"])
    spool.open()
    uid = "2.25.1"
    spool.store(DeidentifiedObject(uid, uid, uid, uid, "1.2.840.10008.1.2.1", (b"x" * 10,)))
    destination = FolderDestination(name="d", path=tmp_path / "out", retry_initial_delay=0.05, retry_max_delay=0.1)
    forwarder = Forwarder(destination, NodeConfig(), spool)
    forwarder.sender = Flaky()
    forwarder.start()
    try:
        assert wait_until(lambda: not spool.pending("d"), 10)
        assert forwarder.is_alive() and isinstance(forwarder, threading.Thread)
    finally:
        forwarder.stop()
        forwarder.join(5)
