"""`spool status` and `spool list` with a real node (issue 15, item 5): per destination state
(backing off with down-since and last error, then delivering), queue depth and oldest entry
age, quarantine with its reason on one line, `--json`; `retry` and `purge` are audited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.corpus import write_corpus
from tests.netpeers import Proxy, base_config, dicom_destination, free_port, storescu, wait_until, write_config
from tests.scripted_scp import ScriptedSCP

pytestmark = pytest.mark.network


def _spool(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dicom_proxy", "spool", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=120, cwd=config.parent,
    )
    assert result.returncode == 0, result.stderr
    return result


def _status(config: Path) -> dict[str, dict[str, object]]:
    return {d["destination"]: d for d in json.loads(_spool(config, "status", "--json").stdout)}


def test_status_and_list_follow_an_outage_a_refusal_and_recovery(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=1, series_per_study=1, images_per_series=3)
    port = free_port()
    folder = {"name": "archive", "type": "folder", "path": str(tmp_path / "archive")}
    destinations = [dicom_destination("research", port, retry_initial_delay=0.5, retry_max_delay=1.0), folder]
    audit_file = tmp_path / "audit.jsonl"
    config = write_config(
        tmp_path / "proxy.toml",
        base_config(tmp_path, destinations, logging={"level": "INFO", "audit_file": str(audit_file)}),
    )
    with Proxy(config, tmp_path) as proxy:
        assert storescu(proxy.port, corpus).statuses == ["Success"] * 3
        assert wait_until(lambda: _status(config)["research"]["failures"] >= 2, 60, interval=0.5)  # type: ignore[operator]
        down = _status(config)
        research = down["research"]
        assert research["state"] == "backing off" and research["queued"] == 3
        assert research["down_since"] is not None and "association" in str(research["last_error"])
        assert research["oldest_age_seconds"] is not None and research["queued_bytes"] > 0  # type: ignore[operator]
        assert wait_until(lambda: _status(config)["archive"]["state"] in ("idle", "delivering"), 30, interval=0.5)
        assert _status(config)["archive"]["queued"] == 0
        text = _spool(config, "status").stdout.splitlines()
        assert text[0].split()[:3] == ["destination", "state", "queued"]
        assert any(line.startswith("research") and "backing off" in line and "association" in line for line in text)

        # The archive comes back and refuses the first object for good: quarantined.
        with ScriptedSCP(port, statuses=(0xC000, 0x0000)) as scp:
            assert wait_until(lambda: len(scp.answered) >= 3 and _status(config)["research"]["queued"] == 0, 60, interval=0.5)
            assert wait_until(lambda: _status(config)["research"]["quarantined"] == 1, 10, interval=0.5)
            up = _status(config)["research"]
            assert up["state"] in ("delivering", "idle") and up["down_since"] is None
            assert "0xC000" in str(up["last_error"])

            lines = _spool(config, "list").stdout.splitlines()
            assert len(lines) == 1  # one quarantined entry, nothing queued
            fields = lines[0].split("\t")
            assert len(fields) == 7 and fields[:2] == ["research", "quarantined"]
            assert fields[5] == "0xC000" and "refused" in fields[6]
            [listed] = json.loads(_spool(config, "list", "--json").stdout)
            assert listed["status"] == 0xC000 and listed["entry"] == fields[2]

            assert "1 quarantined entries queued again" in _spool(config, "retry", "--destination", "research").stdout
            assert wait_until(lambda: len(scp.answered) == 4 and _status(config)["research"]["quarantined"] == 0, 30, interval=0.5)
        assert proxy.terminate() == 0
    assert _status(config)["research"]["state"] == "not running"
    assert "0 quarantined entries deleted" in _spool(config, "purge").stdout.splitlines()[0]
    records = [json.loads(line) for line in audit_file.read_text().splitlines()]
    retried = [r for r in records if r["event"] == "quarantine_retried"]
    purged = [r for r in records if r["event"] == "quarantine_purged"]
    assert retried[0]["entries"] == 1 and retried[0]["destination"] == "research" and retried[0]["user"]
    assert {r["destination"] for r in purged} == {"research", "archive"}
    assert any(r["event"] == "delivery_deferred" for r in records)
